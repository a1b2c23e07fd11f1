package script

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMissingBuiltins: min, max and clear (absent from Yaegi v0.16) are
// refused before anything runs, with the hint, in every position (x :=
// min(1, 2) gave "undefined name or definition loop" and no hint); a
// script's own min is used.
func TestMissingBuiltins(t *testing.T) {
	it, out, _ := newTest(t)
	ctx := context.Background()
	for _, c := range []string{"x := min(1, 2)", "y := 3\ny = max(y, 4)", "m := map[int]int{1: 1}\nclear(m)", "func f(a, b int) int { return min(a, b) }"} {
		_, err := it.Eval(ctx, c)
		if err == nil || !strings.Contains(err.Error(), "is not available in scripts") || !strings.Contains(err.Error(), "hint: yaegi (v0.16) lacks the min, max and clear builtins") {
			t.Errorf("cell %q: error %v, want the builtins hint", c, err)
		}
	}
	// Nothing of a refused cell ran.
	if _, err := it.Eval(ctx, "y"); err == nil {
		t.Error("y is defined: the refused cell ran in part")
	}
	if _, err := it.Eval(ctx, "func min(a, b int) int {\n\tif b < a {\n\t\treturn b\n\t}\n\treturn a\n}"); err != nil {
		t.Fatal(err)
	}
	if _, err := it.Eval(ctx, "fmt.Println(min(3, 2))"); err != nil || out.String() != "2\n" {
		t.Errorf("own min: err %v, out %q", err, out.String())
	}

	p := filepath.Join(t.TempDir(), "min.go")
	if err := os.WriteFile(p, []byte("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"start\")\n\tx := min(1, 2)\n\tfmt.Println(x)\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var rout strings.Builder
	err := RunFile(ctx, p, nil, Options{Stdout: &rout, Stderr: &rout})
	if err == nil || !strings.Contains(err.Error(), "line 7: the builtin min is not available in scripts") || !strings.Contains(err.Error(), "hint:") || rout.String() != "" {
		t.Errorf("RunFile: err %v, output %q; want line 7 and the hint before anything runs", err, rout.String())
	}
}
