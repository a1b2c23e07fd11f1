// Package kernels holds darkroom's CUDA C kernels and embeds the fatbins
// built from them (SASS for sm_80, sm_86, sm_89 and sm_90 plus compute_80
// PTX), so the Go binary needs no CUDA toolkit. The fatbins are rebuilt with
// `make -C kernels` on a machine with nvcc and committed together with
// SOURCES.sha256, the sha256sum of the sources they were built from; a test
// fails when the two disagree.
package kernels

import (
	_ "embed" // SOURCES.sha256
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// SourcesSHA256 is the `sha256sum` listing of the kernel sources the
// embedded fatbins were built from.
//
//go:embed SOURCES.sha256
var SourcesSHA256 string

// Module is one compiled translation unit.
type Module struct {
	// Name is the source file's base name without extension ("norm").
	Name string
	// Image is the fatbin, ready for cuModuleLoadData.
	Image []byte
}

// Modules returns the embedded fatbins in name order. A fatbin that has not
// been built (an empty placeholder) is an error naming the rebuild command.
func Modules() ([]Module, error) {
	if fatbins == nil {
		return nil, fmt.Errorf("this binary was built with the nokernels tag: set DARKROOM_CUDA_KERNELS to a folder of *.fatbin")
	}
	return readModules(fatbins)
}

// ModulesFrom reads *.fatbin files from dir instead of the embedded ones
// (DARKROOM_CUDA_KERNELS points here during kernel development).
func ModulesFrom(fsys fs.FS) ([]Module, error) { return readModules(fsys) }

func readModules(fsys fs.FS) ([]Module, error) {
	names, err := fs.Glob(fsys, "*.fatbin")
	if err != nil {
		return nil, fmt.Errorf("list fatbins: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no *.fatbin kernels found: run make -C kernels")
	}
	sort.Strings(names)
	mods := make([]Module, 0, len(names))
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", n, err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("kernel module %s is an empty placeholder: run make -C kernels on a machine with nvcc", n)
		}
		mods = append(mods, Module{Name: strings.TrimSuffix(path.Base(n), ".fatbin"), Image: b})
	}
	return mods, nil
}
