// Package gensym generates the yaegi symbol tables of the packages darkroom
// scripts may import (package script/symbols), with yaegi's extract
// package. It is used by `go generate ./script/...` and by the test that
// fails when the checked-in tables are stale.
package gensym

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/traefik/yaegi/extract"
)

// Package is one package exposed to scripts.
type Package struct {
	// Path is the import path.
	Path string
	// Include, when set, lists regular expressions of the only symbols
	// exposed; Exclude lists symbols left out.
	Include, Exclude []string
}

// Packages are the packages scripts see. Only what works end to end is
// exposed: sampling and rng contribute the few functions experiments need.
var Packages = []Package{
	{Path: "github.com/darkroom-ai/darkroom/engine", Exclude: []string{"^Load$"}},
	{Path: "github.com/darkroom-ai/darkroom/engine/grid"},
	{Path: "github.com/darkroom-ai/darkroom/engine/rng", Include: []string{"^NewTorch$", "^Torch$"}},
	{Path: "github.com/darkroom-ai/darkroom/engine/sampling", Include: []string{"^Samplers$", "^Schedulers$", "^Sigmas$", "^KarrasSigmas$", "^DefaultDiscrete$", "^Discrete$", "^Schedule$"}},
	{Path: "github.com/darkroom-ai/darkroom/script/dr"},
}

// FileName is the name of the generated file for an import path, as
// `yaegi extract` names it.
func FileName(importPath string) string {
	return strings.NewReplacer("/", "-", ".", "_", "~", "_").Replace(importPath) + ".go"
}

// Generate returns the generated source of every package, by file name. It
// must run inside the darkroom module (it type-checks the packages from
// source).
func Generate() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, p := range Packages {
		ext := extract.Extractor{Dest: "symbols", Include: p.Include, Exclude: p.Exclude}
		var buf bytes.Buffer
		ip, err := ext.Extract(p.Path, "", &buf)
		if err != nil {
			return nil, fmt.Errorf("extract %s: %w", p.Path, err)
		}
		out[FileName(ip)] = buf.Bytes()
	}
	return out, nil
}
