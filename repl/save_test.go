package repl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/script"
)

// TestSaveAfterInterrupt: :save writes a recipe that runs after an
// interrupted cell (whose res and err persist) and a failed one (whose
// first statement ran): cells that use what those left are left out, with
// the cells that use theirs; a cell that defines a name anew brings it
// back. Before, the cell printing res was saved without the cell defining
// it, and darkroom run said "undefined: res".
func TestSaveAfterInterrupt(t *testing.T) {
	recipe := filepath.Join(t.TempDir(), "after.go")
	input := `m, err := eng.Load(ctx, "` + tinyModel + `")
check(err)
req := engine.DefaultRequest()
req.Width, req.Height, req.Steps = 64, 64, 1000
res, err := m.Generate(ctx, req, nil)
fmt.Println(res == nil, err != nil)
req.Steps = 2
out, err := m.Generate(ctx, req, nil)
check(err)
x := 7; panic("boom")
fmt.Println("x", x)
y := x + 1
fmt.Println("y", y)
x := 1
fmt.Println("x again", x, out.Images[0].Bounds().Dx())
:save ` + recipe + "\n"
	n := 0
	var opts Options
	// Cell 5 (the long generation) is interrupted after 300 ms.
	opts.cellContext = func(parent context.Context) (context.Context, context.CancelFunc) {
		n++
		if n == 5 {
			return context.WithTimeout(parent, 300*time.Millisecond)
		}
		return context.WithCancel(parent)
	}
	out, errs := run(t, input, opts)
	wantOut := "true true\nx 7\ny 8\nx again 1 64\nsaved 9 cells to " + recipe + "\nleft out 4 cells that use what a failed or interrupted cell defined or changed\n"
	if out != wantOut {
		t.Errorf("session stdout %q, want %q", out, wantOut)
	}
	if !strings.Contains(errs, "interrupted after") || !strings.Contains(errs, "boom") {
		t.Errorf("stderr %q lacks the interrupt and the panic", errs)
	}
	src, err := os.ReadFile(recipe)
	if err != nil {
		t.Fatal(err)
	}
	for _, left := range []string{"res", `"x", x`, "y :=", `"y", y`} {
		if strings.Contains(string(src), left) {
			t.Errorf("the recipe has %s:\n%s", left, src)
		}
	}
	var rout, rerr bytes.Buffer
	if err := script.RunFile(context.Background(), recipe, nil, script.Options{Stdout: &rout, Stderr: &rerr}); err != nil {
		t.Fatalf("RunFile: %v\n%s", err, src)
	}
	if rout.String() != "x again 1 64\n" {
		t.Errorf("darkroom run printed %q, want %q\n%s", rout.String(), "x again 1 64\n", src)
	}
}
