package script

import (
	"bytes"
	"context"
	"errors"
	"image"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

func newTest(t *testing.T) (*Interpreter, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var out, errb bytes.Buffer
	it, err := New(Options{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	if err := it.LoadPrelude(context.Background()); err != nil {
		t.Fatal(err)
	}
	return it, &out, &errb
}

// TestTranscript evaluates cells in one session and checks each cell's
// value, output and error.
func TestTranscript(t *testing.T) {
	it, out, errb := newTest(t)
	steps := []struct {
		cell string
		// value is Eval's result, stdout what the cell printed; errHas and
		// warnHas are substrings of the error and of stderr ("" = none).
		value, stdout, errHas, warnHas string
	}{
		{cell: `x := 40`},
		{cell: `x + 2`, value: "42"},
		{cell: "func add(a, b int) int {\n\treturn a + b\n}"},
		{cell: `add(x, 1)`, value: "41"},
		{cell: `fmt.Println("hello", x)`, stdout: "hello 40\n"},
		{cell: `s := []string{"a", "b"}; strings.Join(s, "+")`, value: "a+b"},
		{cell: "var total int\nfor i := 0; i < 4; i++ {\n\ttotal += i\n}\ntotal", value: "6"},
		{cell: `type point struct{ X, Y int }`},
		{cell: `point{1, 2}`, value: "{1 2}"},
		{cell: `var e error; e`, value: "<nil>"},
		{cell: `check(nil)`},
		{cell: `check(fmt.Errorf("load model: no such file"))`, errHas: "load model: no such file"},
		{cell: `x`, value: "40"},
		{cell: `panic("boom")`, errHas: "panic: boom"},
		{cell: `var arr []int; arr[3]`, errHas: "index out of range"},
		{cell: `undefinedName + 1`, errHas: "line 1: undefined: undefinedName"},
		{cell: "y := 1\ny := z", errHas: "line 2: undefined name"},
		{cell: `for i := range 3 { _ = i }`, errHas: "range over an integer", warnHas: ""},
		{cell: `n := 3`},
		{cell: `for i := range n { _ = i }`, errHas: "range over the integer n"},
		{cell: `min(1, 2)`, value: "1"},
		{cell: `m := map[int]int{1: 1}; clear(m); len(m)`, value: "0"},
		{cell: `for k := 0; k < min(n, 2); k++ {}`, errHas: "min, max and clear"},
		{cell: `import "os/exec"`, errHas: `cannot import "os/exec"`},
		{cell: "var fs []func() int\nfor i := 0; i < 2; i++ {\n\tfs = append(fs, func() int { return i })\n}\nfs[0]()", value: "2", warnHas: "loop variable i"},
		{cell: `image.NewNRGBA(image.Rect(0, 0, 3, 2))`, stdout: "[image 3x2]\n"},
		{cell: `len(sampling.Samplers()) > 5`, value: "true"},
		{cell: `engine.DefaultRequest().Steps`, value: "20"},
		{cell: `os.Exit(2)`, errHas: "os.Exit(2)"},
		// Yaegi workarounds: multi-value := at the top level and in
		// top-level blocks, functions calling functions that use session
		// variables, repeated imports.
		{cell: "func two() (int, error) { return 3, nil }"},
		{cell: `a, e := two()`},
		{cell: "func ha() int { return a }\nfunc hb() int { return ha() }\nhb()", value: "3"},
		{cell: "got := 0\nfor i := 0; i < 2; i++ {\n\tv, err := two()\n\tcheck(err)\n\tgot += v + hb()\n}\ngot", value: "12"},
		{cell: "if v, err := two(); err == nil {\n\tgot = v\n}\ngot", value: "3"},
		{cell: `import "fmt"`},
		{cell: `import ("fmt"; "sort")`},
		{cell: `sort.Ints([]int{2, 1})`},
		{cell: `e`, value: "<nil>"},
		{cell: `x`, value: "40"},
	}
	for i, st := range steps {
		out.Reset()
		errb.Reset()
		got, err := it.Eval(context.Background(), st.cell)
		if got != st.value {
			t.Errorf("cell %d %q: value %q, want %q", i, st.cell, got, st.value)
		}
		if out.String() != st.stdout {
			t.Errorf("cell %d %q: stdout %q, want %q", i, st.cell, out.String(), st.stdout)
		}
		switch {
		case st.errHas == "" && err != nil:
			t.Errorf("cell %d %q: unexpected error %v", i, st.cell, err)
		case st.errHas != "" && (err == nil || !strings.Contains(err.Error(), st.errHas)):
			t.Errorf("cell %d %q: error %v, want one containing %q", i, st.cell, err, st.errHas)
		}
		if st.warnHas != "" && !strings.Contains(errb.String(), st.warnHas) || st.warnHas == "" && errb.Len() != 0 {
			t.Errorf("cell %d %q: stderr %q, want %q", i, st.cell, errb.String(), st.warnHas)
		}
		if err != nil && strings.Contains(err.Error(), "goroutine ") {
			t.Errorf("cell %d: error carries a stack trace: %v", i, err)
		}
	}
}

func TestEngineCells(t *testing.T) {
	it, out, _ := newTest(t)
	cells := []struct{ cell, value, stdout string }{
		{cell: `m, err := eng.Load(ctx, "` + tinyModel + `")`},
		{cell: `err`, value: "<nil>"},
		{cell: `m.LatentFormat().Channels`, value: "4"},
		{cell: `m.Tokenize("a cat")`, value: "[49406 320 2368 49407]"},
		{cell: "req := engine.DefaultRequest()\nreq.Width, req.Height, req.Steps = 64, 64, 2\nres, err := m.Generate(ctx, req, nil)\ncheck(err)"},
		{cell: `res.Images[0]`, stdout: "[image 64x64]\n"},
		{cell: `len(res.Latents)`, value: "256"},
	}
	for i, c := range cells {
		out.Reset()
		got, err := it.Eval(context.Background(), c.cell)
		if err != nil {
			t.Fatalf("cell %d %q: %v", i, c.cell, err)
		}
		if got != c.value || out.String() != c.stdout {
			t.Errorf("cell %d %q: value %q stdout %q, want %q %q", i, c.cell, got, out.String(), c.value, c.stdout)
		}
	}
}

// TestInterrupt cancels a long generation after its first step: Eval
// returns ErrInterrupted promptly, the engine stopped within a step or
// two, and the session keeps its state and can generate again.
func TestInterrupt(t *testing.T) {
	it, out, _ := newTest(t)
	setup := `m, err := eng.Load(ctx, "` + tinyModel + `")
check(err)
req := engine.DefaultRequest()
req.Width, req.Height, req.Steps = 64, 64, 1000
steps := 0
started := make(chan bool, 1)
onEvent := func(ev engine.Event) {
	if ev.Phase == engine.PhaseSample {
		steps = ev.Step
		select {
		case started <- true:
		default:
		}
	}
}`
	if _, err := it.Eval(context.Background(), setup); err != nil {
		t.Fatal(err)
	}
	started, err := it.yi.Eval("started")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var cancelled time.Time
	go func() {
		// Wait for the first step, then interrupt.
		started.Recv()
		cancelled = time.Now()
		cancel()
	}()
	_, err = it.Eval(ctx, `res, err := m.Generate(ctx, req, onEvent)`)
	stopped := time.Since(cancelled)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Eval error %v, want ErrInterrupted", err)
	}
	if stopped > 2*time.Second {
		t.Errorf("stopped %v after the interrupt", stopped)
	}
	got, err := it.Eval(context.Background(), `steps`)
	if err != nil {
		t.Fatal(err)
	}
	if got == "0" || got == "1000" || len(got) > 3 {
		t.Errorf("steps done before the interrupt = %s, want a few", got)
	}
	t.Logf("interrupted after %s of 1000 steps, %v after cancel", got, stopped)
	// The session continues: state is there and a new generation works.
	out.Reset()
	if _, err := it.Eval(context.Background(), "req.Steps = 2\nres, err := m.Generate(ctx, req, nil)\ncheck(err)\nres.Images[0]"); err != nil {
		t.Fatal(err)
	}
	if out.String() != "[image 64x64]\n" {
		t.Errorf("after the interrupt: stdout %q", out.String())
	}
}

// TestInterruptLoop stops an interpreted infinite loop.
func TestInterruptLoop(t *testing.T) {
	it, _, _ := newTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := it.Eval(ctx, "n := 0\nfor {\n\tn++\n}")
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("error %v, want ErrInterrupted", err)
	}
	// A loop that ignores ctx is aborted after the grace period.
	if d := time.Since(t0); d < interruptGrace || d > interruptGrace+time.Second {
		t.Errorf("loop stopped after %v, want about %v", d, interruptGrace)
	}
	if got, err := it.Eval(context.Background(), "n > 0"); err != nil || got != "true" {
		t.Errorf("n > 0 after the interrupt = %q, %v", got, err)
	}
}

func TestRunFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	main := `//go:build ignore

package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/darkroom-ai/darkroom/script/dr"
)

func main() {
	args := dr.Args()
	fmt.Println("args:", strings.Join(args, ","))
	switch {
	case len(args) == 0:
	case args[0] == "exit":
		os.Exit(3)
	case args[0] == "exit0":
		os.Exit(0)
	case args[0] == "check":
		dr.Check(fmt.Errorf("bad input"))
	case args[0] == "panic":
		var m map[string]int
		m["x"] = 1
	}
}
`
	p := write("r.go", main)
	cells := write("cells.go", "x := 2\nfmt.Println(\"cells\", x*21)\n")
	bad := write("bad.go", "package main\n\nfunc main() {\n\tundefined()\n}\n")
	tests := []struct {
		name   string
		path   string
		args   []string
		stdout string
		err    string
		code   int
	}{
		{"ok", p, nil, "args: \n", "", 0},
		{"args", p, []string{"a", "b"}, "args: a,b\n", "", 0},
		{"exit", p, []string{"exit"}, "args: exit\n", "exit status 3", 3},
		{"exit0", p, []string{"exit0"}, "args: exit0\n", "", 0},
		{"check", p, []string{"check"}, "args: check\n", "r.go: bad input", 0},
		{"panic", p, []string{"panic"}, "args: panic\n", "panic", 0},
		{"cells", cells, nil, "cells 42\n", "", 0},
		{"compile error", bad, nil, "", "undefined: undefined", 0},
		{"missing", filepath.Join(dir, "nope.go"), nil, "", "no such file", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := RunFile(context.Background(), tc.path, tc.args, Options{Stdout: &out, Stderr: &errb})
			if out.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", out.String(), tc.stdout)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want %q", err, tc.err)
			}
			var ee *ExitError
			if tc.code != 0 && (!errors.As(err, &ee) || ee.Code != tc.code) {
				t.Errorf("error %v, want exit code %d", err, tc.code)
			}
			if strings.Contains(errb.String(), ": panic") {
				t.Errorf("stderr carries Yaegi's panic position line: %q", errb.String())
			}
		})
	}
}

func TestRunFileInterrupt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "loop.go")
	src := "package main\n\nfunc main() {\n\tfor {\n\t}\n}\n"
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := RunFile(ctx, p, nil, Options{}); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("error %v, want ErrInterrupted", err)
	}
}

// TestGenerateHook routes dr.Generate (and the prelude's generate) through
// Options.Generate, as the TUI does to queue script jobs.
func TestGenerateHook(t *testing.T) {
	var got []engine.Request
	it, err := New(Options{Generate: func(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error) {
		got = append(got, req)
		if onEvent != nil {
			onEvent(engine.Event{Phase: engine.PhaseDone})
		}
		return &engine.Result{Request: req, Images: []*image.NRGBA{image.NewNRGBA(image.Rect(0, 0, 8, 8))}}, nil
	}, Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := it.LoadPrelude(context.Background()); err != nil {
		t.Fatal(err)
	}
	cell := "req := engine.DefaultRequest()\nreq.Prompt = \"a fox\"\ndone := 0\nres, err := generate(ctx, req, func(ev engine.Event) { done++ })\ncheck(err)\nres.Images[0].Bounds().Dx() + done"
	v, err := it.Eval(context.Background(), cell)
	if err != nil {
		t.Fatal(err)
	}
	if v != "9" {
		t.Errorf("value %q, want 9 (8 px + 1 event)", v)
	}
	if len(got) != 1 || got[0].Prompt != "a fox" || got[0].Steps != 20 {
		t.Errorf("hook got %+v", got)
	}
}

// TestServerUnset: without Options.Connect, dr.Server fails with a line
// naming it and the URL (it does not panic the session).
func TestServerUnset(t *testing.T) {
	it, _, _ := newTest(t)
	v, err := it.Eval(context.Background(), "srv, err := dr.Server(\"http://gpu-box:7860\", \"\")\nfmt.Sprint(srv == nil, err)")
	if err != nil {
		t.Fatal(err)
	}
	if v != "true dr.Server http://gpu-box:7860: this session cannot connect to servers" {
		t.Errorf("value %q", v)
	}
}
