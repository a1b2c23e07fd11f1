package script

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildRecipe(t *testing.T) {
	segs := []string{
		`import "math"`,
		`x := 1`,
		`x := 2`,
		`y, x := 3, 4`,
		`x0 := 2.0`,
		"func sq(v float64) float64 {\n\treturn math.Sqrt(v) * x0\n}",
		"func sq(v float64) float64 {\n\treturn v * v\n}",
		`type T struct{ A int }`,
		`func (t T) Twice() int { return 2 * t.A }`,
		`fmt.Println(sq(3), T{y}.Twice())`,
		`res, err := eng.Load(ctx, "m")`,
		`show(res)`,
	}
	got, err := buildRecipe(segs, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := `//go:build ignore

// test
package main

import (
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	eng := dr.Engine()
	ctx := dr.Context()
	show := dr.Show
	x := 1
	x = 2
	y, x := 3, 4
	x0 := 2.0
	var sq func(v float64) float64
	sq = func(v float64) float64 {
		return math.Sqrt(v) * x0
	}
	sq = func(v float64) float64 {
		return v * v
	}
	fmt.Println(sq(3), T{y}.Twice())
	res, err := eng.Load(ctx, "m")
	show(res)
	// Keep variables the session defined but did not use.
	_, _ = x, err
}

type T struct{ A int }

func (t T) Twice() int { return 2 * t.A }
`
	if string(got) != want {
		t.Errorf("recipe:\n%s\nwant:\n%s", got, want)
	}
}

// TestSaveRunRoundTrip records a session, writes it as a recipe, runs the
// recipe with RunFile and compares the output with the session's; the
// recipe also builds with the go tool.
func TestSaveRunRoundTrip(t *testing.T) {
	it, out, _ := newTest(t)
	cells := []string{
		`m, err := eng.Load(ctx, "` + tinyModel + `")`,
		`check(err)`,
		"func gen(seed uint64) image.Image {\n\treq := engine.DefaultRequest()\n\treq.Width, req.Height, req.Steps, req.Seed = 64, 64, 2, seed\n\tres, err := m.Generate(ctx, req, nil)\n\tcheck(err)\n\treturn res.Images[0]\n}",
		"var imgs []image.Image\nfor s := uint64(1); s <= 2; s++ {\n\timgs = append(imgs, gen(s))\n}",
		`sheet, err := grid.Sheet(imgs, []string{"seed 1", "seed 2"}, grid.Options{})`,
		`sheet.Bounds()`,
		`sheet`,
		`undefinedCall()`, // fails: not saved
		`fmt.Println("pixel", sheet.At(20, 20))`,
	}
	var transcript bytes.Buffer
	for _, c := range cells {
		out.Reset()
		v, err := it.Eval(context.Background(), c)
		if err != nil {
			continue
		}
		transcript.WriteString(out.String())
		if v != "" {
			transcript.WriteString(v + "\n")
		}
	}
	if it.Cells() != len(cells)-1 {
		t.Errorf("%d cells recorded, want %d", it.Cells(), len(cells)-1)
	}
	src, err := it.Recipe("round trip")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "session.go")
	if err := os.WriteFile(p, src, 0o644); err != nil {
		t.Fatal(err)
	}
	var rout bytes.Buffer
	if err := RunFile(context.Background(), p, nil, Options{Stdout: &rout}); err != nil {
		t.Fatalf("RunFile: %v\n%s", err, src)
	}
	if rout.String() != transcript.String() {
		t.Errorf("recipe output\n%q\nsession output\n%q\nrecipe:\n%s", rout.String(), transcript.String(), src)
	}
	if !strings.Contains(transcript.String(), "[image 140x83]") || !strings.Contains(transcript.String(), "pixel {") {
		t.Errorf("session transcript %q lacks the sheet", transcript.String())
	}
	// The recipe is valid Go for the compiler too.
	if testing.Short() {
		return
	}
	goTool := goCommand(t)
	local := filepath.Join(".", "roundtrip_recipe_test_tmp.go")
	if err := os.WriteFile(local, src, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(local)
	cmd := exec.Command(goTool, "vet", local)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("go vet on the saved recipe: %v\n%s\n%s", err, b, src)
	}
}

// goCommand returns the go command running the tests (for vetting the
// recipes), or skips.
func goCommand(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	return p
}
