package script

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// builtinsProgram uses min, max and clear where the rewrite handles them.
const builtinsProgram = `package main

import "fmt"

type px struct{ v float64 }

func clamp(v, lo, hi float64) float64 { return max(lo, min(v, hi)) }

func main() {
	x := min(3, 1, 2)
	f := 2.5
	y := max(1, f)
	z := min(1, 2.5)
	s := min("b", "a", "c")
	n := []int{4, 7, 1}
	lo := min(n[0], n[1], n[2])
	m := map[string]int{"a": 1}
	clear(m)
	xs := []px{{1}, {2}}
	clear(xs)
	if w := max(len(n), 2); w > 2 {
		fmt.Println("w", w)
	}
	fmt.Println(x, y, z, s, lo, len(m), xs, clamp(5, 0, 1), clamp(-1, 0, 1), max(-1, -2))
	defer fmt.Println("deferred", min(lo, 0))
	lo = 9
}
`

const builtinsWant = "w 3\n1 2.5 1 a 1 0 [{0} {0}] 1 0 -1\ndeferred 0\n"

// TestBuiltins: min, max and clear (absent from Yaegi v0.16) work in
// recipes and cells as in Go (x := min(1, 2) said "undefined name or
// definition loop"); where the rewrite cannot go (a for condition) the
// cell is refused before anything runs, with the hint; a script's own min
// is used.
func TestBuiltins(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "builtins.go")
	if err := os.WriteFile(p, []byte(builtinsProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	var rout, rerr strings.Builder
	if err := RunFile(ctx, p, nil, Options{Stdout: &rout, Stderr: &rerr}); err != nil {
		t.Fatalf("RunFile: %v (stderr %q)", err, rerr.String())
	}
	if rout.String() != builtinsWant {
		t.Errorf("darkroom run printed %q, want %q", rout.String(), builtinsWant)
	}
	if goTool, err := exec.LookPath("go"); err == nil && !testing.Short() {
		cmd := exec.Command(goTool, "run", p)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GO111MODULE=off")
		if got, err := cmd.Output(); err != nil {
			t.Logf("go run: %v (skipping the comparison)", err)
		} else if string(got) != builtinsWant {
			t.Errorf("go run printed %q, want %q", got, builtinsWant)
		}
	}

	it, out, errb := newTest(t)
	cells, err := CellsFromSource(builtinsProgram)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cells[1:] {
		if _, err := it.Eval(ctx, c); err != nil {
			t.Fatalf("cell %q: %v (stderr %q)", c, err, errb.String())
		}
	}
	if out.String() != builtinsWant {
		t.Errorf("cells printed %q, want %q", out.String(), builtinsWant)
	}

	for _, c := range []string{"for i := 0; i < min(3, lo); i++ {}", "t := 1\nok := t > 0 && max(t, 2) > 1"} {
		_, err := it.Eval(ctx, c)
		if err == nil || !strings.Contains(err.Error(), "is not available in scripts here") || !strings.Contains(err.Error(), "hint: yaegi (v0.16) lacks the min, max and clear builtins") {
			t.Errorf("cell %q: error %v, want the builtins hint", c, err)
		}
	}
	if _, err := it.Eval(ctx, "t"); err == nil {
		t.Error("t is defined: the refused cell ran in part")
	}
	if _, err := it.Eval(ctx, "func min(a, b int) int {\n\treturn 42\n}"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if _, err := it.Eval(ctx, "fmt.Println(min(3, 2))"); err != nil || out.String() != "42\n" {
		t.Errorf("own min: err %v, out %q", err, out.String())
	}
}
