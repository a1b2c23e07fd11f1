package kernels

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestSourcesMatchHash fails when a kernel source changed without the
// fatbins being rebuilt (make -C kernels rewrites SOURCES.sha256).
func TestSourcesMatchHash(t *testing.T) {
	var files []string
	for _, pat := range []string{"*.cu", "*.cuh"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	var want strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		want.WriteString(hex.EncodeToString(sum[:]) + "  " + f + "\n")
	}
	if SourcesSHA256 != want.String() {
		t.Errorf("kernel sources differ from SOURCES.sha256 (rebuild with make -C kernels and commit the fatbins):\nrecorded:\n%s\ncurrent:\n%s", SourcesSHA256, want.String())
	}
}

// TestEveryKernelSourceIsBuilt checks that each .cu file has a non-empty
// embedded fatbin.
func TestEveryKernelSourceIsBuilt(t *testing.T) {
	srcs, err := filepath.Glob("*.cu")
	if err != nil {
		t.Fatal(err)
	}
	mods, err := Modules()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range mods {
		have[m.Name] = true
	}
	for _, s := range srcs {
		t.Run(s, func(t *testing.T) {
			if !have[strings.TrimSuffix(s, ".cu")] {
				t.Errorf("%s has no embedded fatbin", s)
			}
		})
	}
	if len(mods) != len(srcs) {
		t.Errorf("%d fatbins for %d sources", len(mods), len(srcs))
	}
}
