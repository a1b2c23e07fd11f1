package symbols

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/script/internal/gensym"
)

// TestSymbolsUpToDate regenerates the symbol tables and fails when the
// checked-in files differ: run `go generate ./script/symbols` after
// changing the API of an exposed package.
func TestSymbolsUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the engine from source (~20 s); skipped with -short")
	}
	want, err := gensym.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range want {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%s: %v; run go generate ./script/symbols", name, err)
			continue
		}
		if !bytes.Equal(got, src) {
			t.Errorf("%s is stale; run go generate ./script/symbols", name)
		}
	}
	// No leftover tables of packages no longer exposed.
	files, err := filepath.Glob("github_com-*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := want[f]; !ok && !strings.HasSuffix(f, "_test.go") {
			t.Errorf("%s is not generated any more; delete it", f)
		}
	}
}

// TestSymbolsCoverAPI checks that the tables hold what scripts rely on.
func TestSymbolsCoverAPI(t *testing.T) {
	tests := []struct {
		pkg  string
		syms []string
	}{
		{"github.com/darkroom-ai/darkroom/engine/engine", []string{"Open", "Options", "Engine", "Model", "Request", "DefaultRequest", "Event", "Result", "SampleParams", "Conditioning", "SavePNG", "RequestFromPNG", "LatentPreview", "PhaseSample"}},
		{"github.com/darkroom-ai/darkroom/engine/grid/grid", []string{"Sheet", "Grid", "Options", "Save", "DrawText", "TextSize"}},
		{"github.com/darkroom-ai/darkroom/engine/rng/rng", []string{"NewTorch", "Torch"}},
		{"github.com/darkroom-ai/darkroom/engine/sampling/sampling", []string{"Samplers", "Schedulers", "Sigmas", "DefaultDiscrete"}},
		{"github.com/darkroom-ai/darkroom/script/dr/dr", []string{"Engine", "Context", "Args", "Show", "Progress", "Check"}},
	}
	for _, tc := range tests {
		m, ok := Symbols[tc.pkg]
		if !ok {
			t.Errorf("no symbols for %s", tc.pkg)
			continue
		}
		for _, s := range tc.syms {
			if _, ok := m[s]; !ok {
				t.Errorf("%s lacks %s", tc.pkg, s)
			}
		}
	}
	// engine.Load needs a backend device, which scripts cannot make.
	if _, ok := Symbols["github.com/darkroom-ai/darkroom/engine/engine"]["Load"]; ok {
		t.Error("engine.Load is exposed")
	}
	if i := slices.IndexFunc(gensym.Packages, func(p gensym.Package) bool { return strings.Contains(p.Path, "unrestricted") }); i >= 0 {
		t.Error("unrestricted stdlib exposed")
	}
}
