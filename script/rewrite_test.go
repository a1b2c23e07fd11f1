package script

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// deferProgram exercises when deferred calls evaluate their arguments:
// in a loop, after a later assignment, in a case clause, with a method
// value, a closure argument, a variadic spread and a constant.
const deferProgram = `package main

import "fmt"

type acc struct{ n int }

func (a *acc) add(s string, v int) { a.n += v; fmt.Println(s, v, a.n) }

func loop() {
	for i := 0; i < 3; i++ {
		defer fmt.Println("loop", i)
	}
}

func later() {
	x := 1
	defer fmt.Println("later", x, x*10)
	x = 2
	_ = x
}

func cases() {
	for i := 0; i < 2; i++ {
		switch {
		case i >= 0:
			defer fmt.Println("case", i)
		}
	}
}

func others() {
	a := &acc{}
	v := 5
	xs := []any{"spread", v}
	defer a.add("method", v)
	defer fmt.Println(xs...)
	defer fmt.Println("const", 1.5, "lit", func() int { return v }())
	v = 6
	xs = []any{"changed"}
	_ = xs
}

func spreadLoop() {
	for i := 0; i < 2; i++ {
		xs := []any{"spread loop", i}
		defer fmt.Println(xs...)
	}
}

func main() {
	spreadLoop()
	loop()
	later()
	cases()
	others()
}
`

// deferWant is what go run prints for deferProgram.
const deferWant = `spread loop 1
spread loop 0
loop 2
loop 1
loop 0
later 1 10
case 1
case 0
const 1.5 lit 5
spread 5
method 5 5
`

// TestDeferArgumentsLikeGo pins the evaluation time of deferred calls'
// arguments to Go's (Yaegi evaluates them when the function returns,
// printing "loop 3" three times), in a recipe and in REPL cells, and
// checks the expectation against the go tool when it is installed.
func TestDeferArgumentsLikeGo(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "defer.go")
	if err := os.WriteFile(p, []byte(deferProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if err := RunFile(context.Background(), p, nil, Options{Stdout: &out, Stderr: &errb}); err != nil {
		t.Fatalf("RunFile: %v (stderr %q)", err, errb.String())
	}
	if out.String() != deferWant {
		t.Errorf("darkroom run printed\n%s\nwant (as go run)\n%s", out.String(), deferWant)
	}

	// The same functions as REPL cells.
	it, cellOut, cellErr := newTest(t)
	cells, err := CellsFromSource(deferProgram)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cells[1:] { // the prelude has fmt
		if _, err := it.Eval(context.Background(), c); err != nil {
			t.Fatalf("cell %q: %v (stderr %q)", c, err, cellErr.String())
		}
	}
	if cellOut.String() != deferWant {
		t.Errorf("REPL cells printed\n%s\nwant\n%s", cellOut.String(), deferWant)
	}

	if goTool, err := exec.LookPath("go"); err == nil && !testing.Short() {
		cmd := exec.Command(goTool, "run", p)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GO111MODULE=off")
		got, err := cmd.Output()
		if err != nil {
			t.Logf("go run: %v (skipping the comparison)", err)
		} else if string(got) != deferWant {
			t.Errorf("go run printed\n%s\nwant\n%s", got, deferWant)
		}
	}
}

// TestRewriteKeepsLines: the rewrites keep every statement on its line.
func TestRewriteKeepsLines(t *testing.T) {
	n := uint64(0)
	next := func() uint64 { n++; return n }
	src := "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\tdefer fmt.Println(i,\n\t\t\ti)\n\t}\n\tgo work()\n\tgo func() {}()\n}\n\nfunc work() {}\n"
	got := rewriteFile(src, next)
	if strings.Count(got, "\n") != strings.Count(src, "\n") {
		t.Errorf("line count changed:\n%s", got)
	}
	for _, want := range []string{"_darkroomD1 := i; _darkroomD2 := i; defer fmt.Println(_darkroomD1,", "go func() { defer _darkroomRecover(); work() }()", "go func() { defer _darkroomRecover();}()"} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten source lacks %q:\n%s", want, got)
		}
	}
	if s, _ := rewriteText("x := 1", "", "", next); s != "x := 1" {
		t.Errorf("unparsable text changed: %q", s)
	}
}

// TestGoroutinePanicKeepsSession: a panic in a goroutine a cell starts is
// reported and the session goes on (it stopped the process), for go
// statements of function literals, of named functions with arguments (in
// a loop: each goroutine gets its own values) and in session functions;
// a recipe whose goroutine panicked fails with that panic.
func TestGoroutinePanicKeepsSession(t *testing.T) {
	if raceDetector {
		t.Skip("cells evaluated while an earlier cell's goroutines run race inside yaegi (documented); run without -race")
	}
	// The goroutines report after their own deferred sends: the buffers
	// are read under a lock, and the last report is waited for.
	var out, errb lockedBuffer
	it, err := New(Options{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := it.LoadPrelude(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{
		`done := make(chan int, 10)`,
		`go func() { defer func() { done <- 0 }(); panic("boom in a literal") }()`,
		`<-done`,
		"func work(n int) {\n\tdefer func() { done <- n }()\n\tif n == 2 {\n\t\tpanic(fmt.Sprint(\"boom \", n))\n\t}\n}",
		`for i := 0; i < 3; i++ { go work(i) }`,
		`sum := <-done + <-done + <-done`,
		`func start() { go work(2) }`,
		`start()`,
		`sum += <-done`,
		`k := 2`,
		`go work(k)`,
		`sum += <-done`,
		`go work(1)`,
		`sum += <-done`,
		`fmt.Println("alive", sum)`,
	} {
		if _, err := it.Eval(ctx, c); err != nil {
			t.Fatalf("cell %q: %v (stderr %q)", c, err, errb.String())
		}
	}
	if out.String() != "alive 8\n" {
		t.Errorf("stdout %q, want %q", out.String(), "alive 8\n")
	}
	for deadline := time.Now().Add(5 * time.Second); strings.Count(errb.String(), "boom") < 4 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	for _, want := range []string{"error: a goroutine stopped: panic: boom in a literal (the session continues)", "a goroutine stopped: panic: boom 2"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr %q lacks %q", errb.String(), want)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); strings.Count(errb.String(), "boom 2") < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := strings.Count(errb.String(), "boom 2"); n != 3 {
		t.Errorf("%d reports of boom 2, want 3: %q", n, errb.String())
	}

	p := filepath.Join(t.TempDir(), "gopanic.go")
	src := "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tdone := make(chan bool)\n\tgo func() {\n\t\tdefer close(done)\n\t\tpanic(\"recipe boom\")\n\t}()\n\t<-done\n\tfmt.Println(\"main ends\")\n}\n"
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var rout, rerr strings.Builder
	err = RunFile(ctx, p, nil, Options{Stdout: &rout, Stderr: &rerr})
	if err == nil || !strings.Contains(err.Error(), "a goroutine stopped: panic: recipe boom") || rout.String() != "main ends\n" {
		t.Errorf("RunFile: err %v, stdout %q; want the goroutine's panic after main ends", err, rout.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for the writes of a script's
// goroutines while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
