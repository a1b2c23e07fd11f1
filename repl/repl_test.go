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

const tinyModel = "../testdata/reference/sd1-tiny-a/single.safetensors"

// run drives a session with input and returns its stdout and stderr.
func run(t *testing.T, input string, opts Options) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	opts.Stdin = strings.NewReader(input)
	opts.Stdout, opts.Stderr = &out, &errb
	if opts.HistoryFile == "" {
		opts.HistoryFile = "-"
	}
	if err := Run(context.Background(), opts); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return out.String(), errb.String()
}

// TestTranscript feeds cells and commands and compares the whole output.
func TestTranscript(t *testing.T) {
	input := `x := 40
func add(a, b int) int {
	return a +
		b
}
add(x, 2)
fmt.Println("hello")
panic("boom")
x
var a []int
a[1]
:bogus
for i := range 3 {
}
:vars
:quit
x
`
	out, errs := run(t, input, Options{})
	wantOut := `42
hello
40
a         []int = []
check     func(error) = func
ctx       *script.cellContext = dr.Context()
eng       *engine.Engine = &engine.Engine{…}
generate  func(context.Context, engine.Request, func(engine.Event)) (*engine.Result, error) = func
progress  func(engine.Event) = func
show      func(image.Image) = func
x         int = 40
`
	wantErr := `error: panic: boom
error: panic: index out of range
error: unknown command :bogus (try :help)
error: line 1: range over an integer is not supported
hint: yaegi (v0.16) cannot range over an integer or a function (Go 1.22/1.23); write for i := 0; i < n; i++ { ... }
`
	if out != wantOut {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, wantOut)
	}
	if errs != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", errs, wantErr)
	}
}

func TestHelp(t *testing.T) {
	out, _ := run(t, ":help\n", Options{})
	for _, want := range []string{":save FILE", ":load FILE", ":vars", "Ctrl-C", "range over an", "show(img)"} {
		if !strings.Contains(out, want) {
			t.Errorf(":help lacks %q", want)
		}
	}
}

// TestInterrupt cancels a running generation the way Ctrl-C does (the
// cell's context) and checks that the session goes on with its state.
func TestInterrupt(t *testing.T) {
	input := `m, err := eng.Load(ctx, "` + tinyModel + `")
req := engine.DefaultRequest()
req.Width, req.Height, req.Steps = 64, 64, 1000
last := 0
res, err := m.Generate(ctx, req, func(ev engine.Event) { last = ev.Step })
last > 0 && last < 1000
req.Steps = 2
res, err := m.Generate(ctx, req, nil)
res.Images[0]
`
	n := 0
	var opts Options
	// Cell 5 (the long generation) is cancelled after 300 ms.
	opts.cellContext = func(parent context.Context) (context.Context, context.CancelFunc) {
		n++
		if n == 5 {
			return context.WithTimeout(parent, 300*time.Millisecond)
		}
		return context.WithCancel(parent)
	}
	t0 := time.Now()
	out, errs := run(t, input, opts)
	if !strings.Contains(errs, "interrupted after ") || !strings.Contains(errs, "the session keeps its state") {
		t.Errorf("stderr %q lacks the interrupt message", errs)
	}
	if out != "true\n[image 64x64]\n" {
		t.Errorf("stdout %q, want true and the image after the interrupt", out)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("session took %v", d)
	}
}

// TestSaveLoadRun saves a session as a recipe, runs it with
// script.RunFile, and loads it back into a new session.
func TestSaveLoadRun(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "seeds.go")
	input := `m, err := eng.Load(ctx, "` + tinyModel + `")
check(err)
req := engine.DefaultRequest()
req.Width, req.Height, req.Steps = 64, 64, 2
var imgs []image.Image
for seed := uint64(1); seed <= 3; seed++ {
	req.Seed = seed
	res, err := m.Generate(ctx, req, nil)
	check(err)
	show(res.Images[0])
	imgs = append(imgs, res.Images[0])
}
broken(
)
len(imgs)
:save ` + recipe + "\n"
	out, errs := run(t, input, Options{})
	wantOut := "[image 64x64]\n[image 64x64]\n[image 64x64]\n3\nsaved 7 cells to " + recipe + "\n"
	if out != wantOut {
		t.Errorf("session stdout %q, want %q", out, wantOut)
	}
	if !strings.Contains(errs, "undefined: broken") {
		t.Errorf("stderr %q lacks the failed cell's error", errs)
	}
	src, err := os.ReadFile(recipe)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(src), "broken") {
		t.Errorf("the failed cell was saved:\n%s", src)
	}
	var rout bytes.Buffer
	if err := script.RunFile(context.Background(), recipe, nil, script.Options{Stdout: &rout}); err != nil {
		t.Fatalf("RunFile: %v\n%s", err, src)
	}
	if rout.String() != "[image 64x64]\n[image 64x64]\n[image 64x64]\n3\n" {
		t.Errorf("darkroom run output %q", rout.String())
	}
	// :load runs it in a new session, whose state then has imgs.
	out, errs = run(t, ":load "+recipe+"\nlen(imgs)\n", Options{})
	if out != "[image 64x64]\n[image 64x64]\n[image 64x64]\n3\nloaded "+recipe+" (2 cells)\n3\n" || errs != "" {
		t.Errorf(":load: stdout %q stderr %q", out, errs)
	}
}

// TestHistory keeps lines across sessions in the history file.
func TestHistory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", "history")
	run(t, "x := 1\n\nx := 1\nfmt.Println(x)\n", Options{HistoryFile: p})
	run(t, ":vars\n", Options{HistoryFile: p})
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := "x := 1\nfmt.Println(x)\n:vars\n"
	if string(b) != want {
		t.Errorf("history file %q, want %q", b, want)
	}
	h := loadHistory(p)
	if h.Len() != 3 || h.At(0) != ":vars" || h.At(2) != "x := 1" {
		t.Errorf("loaded history: len %d, At(0) %q", h.Len(), h.At(0))
	}
}

func TestHalfblocks(t *testing.T) {
	d := newDisplay(Options{Graphics: "halfblock", ImageCols: 4, ImageRows: 2}, false)
	img := solidImage(8, 8)
	got := d.render(img)
	if lines := strings.Split(got, "\n"); len(lines) != 2 || strings.Count(lines[0], "▀") != 4 {
		t.Errorf("half-block rendering %q: want 2 rows of 4 cells", got)
	}
	if !strings.Contains(got, "38;2;200;10;10") {
		t.Errorf("half-block rendering lacks the image colour: %q", got)
	}
	if d := newDisplay(Options{}, false); d.render(img) != "" {
		t.Error("auto graphics draw when the output is not a terminal")
	}
}
