// Package script runs darkroom scripts: Go source interpreted by Yaegi with
// the restricted standard library and darkroom's engine packages
// (engine, engine/grid, parts of engine/sampling and engine/rng, and the
// session helpers in script/dr).
//
// An Interpreter evaluates cells of a notebook session (the REPL, the TUI's
// command line); RunFile runs a recipe file non-interactively (`darkroom
// run`). Cancelling the context interrupts the running code: interpreted
// loops stop at their next branch and engine calls given dr.Context()
// stop within one sampler step.
package script

import (
	"context"
	"errors"
	"fmt"
	"go/token"
	"image"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/traefik/yaegi/interp"
	"github.com/traefik/yaegi/stdlib"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script/dr"
	"github.com/darkroom-ai/darkroom/script/symbols"
)

// Options configure an Interpreter.
type Options struct {
	// Stdout and Stderr receive the script's output (os.Stdout and
	// os.Stderr when nil). Progress lines from dr.Progress go to Stderr.
	Stdout, Stderr io.Writer
	// Engine is the engine scripts get from dr.Engine(). When nil, one is
	// opened with EngineOptions on first use.
	Engine        *engine.Engine
	EngineOptions engine.Options
	// Show displays an image for dr.Show (and the REPL's show); nil prints
	// "[image WxH]" on Stdout.
	Show func(img image.Image)
	// Args are the script's arguments, returned by dr.Args().
	Args []string
	// Generate, when set, runs the jobs scripts submit with dr.Generate
	// (the TUI routes them through its queue, with previews); nil runs
	// them on the session's engine.
	Generate func(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error)
	// Connect opens a darkroom server's client for dr.Server (cmd gives
	// server.NewClient's; this package does not import the server). With
	// none, dr.Server fails.
	Connect func(url, token string) (dr.Remote, error)
}

// Interpreter is one Yaegi session with darkroom's packages. Its state
// (variables, functions, imports) persists across Eval calls. Evaluations
// run one at a time.
type Interpreter struct {
	opts   Options
	stdout io.Writer
	stderr io.Writer
	yi     *interp.Interpreter

	run sync.Mutex // held during an evaluation
	// imported maps the import paths of the session to their names.
	imported map[string]string
	// cells are the successful cells, segment by segment, in recipe form
	// (echoed values become fmt.Println, shown images show calls).
	cells [][]string
	seq   atomic.Uint64 // numbers evaluations (goroutine labels)
	ctx   *cellContext
	engM  sync.Mutex
	eng   *engine.Engine
	// tainted are the names that cells which are not recorded defined or
	// assigned (see consistent.go); left counts those cells that ran.
	tainted map[string]bool
	left    int
	// haveRT and haveRecover report whether the session imported the
	// helpers of rewritten code and defined recoverName.
	haveRT, haveRecover bool
	// goErr is the first panic of a goroutine, recovered by the wrapper of
	// rewritten go statements.
	goErr atomic.Pointer[error]
	// goLive counts the scripts' goroutines still running.
	goLive atomic.Int64
}

// New creates an interpreter. It fails only if the symbol tables cannot be
// loaded, which is a build problem.
func New(opts Options) (*Interpreter, error) {
	it := &Interpreter{opts: opts, imported: map[string]string{}, stdout: opts.Stdout, stderr: opts.Stderr, ctx: newCellContext(), eng: opts.Engine}
	if it.stdout == nil {
		it.stdout = os.Stdout
	}
	if it.stderr == nil {
		it.stderr = os.Stderr
	}
	// Goroutines a script starts write too (their output, their panic
	// reports): one writer at a time, whatever the frontend gave.
	it.stdout, it.stderr = &syncWriter{w: it.stdout}, &syncWriter{w: it.stderr}
	args := append([]string{"darkroom-script"}, opts.Args...)
	it.yi = interp.New(interp.Options{
		Stdout: it.stdout,
		Stderr: &panicLineFilter{w: it.stderr},
		Args:   args,
		Env:    os.Environ(),
	})
	if err := it.yi.Use(stdlib.Symbols); err != nil {
		return nil, fmt.Errorf("load standard library symbols: %w", err)
	}
	if err := it.yi.Use(symbols.Symbols); err != nil {
		return nil, fmt.Errorf("load darkroom symbols: %w", err)
	}
	if err := it.yi.Use(it.sessionSymbols()); err != nil {
		return nil, fmt.Errorf("load session symbols: %w", err)
	}
	return it, nil
}

const drPath = "github.com/darkroom-ai/darkroom/script/dr"

// sessionSymbols rebinds the dr helpers to this interpreter.
func (it *Interpreter) sessionSymbols() interp.Exports {
	return interp.Exports{drPath + "/dr": {
		"Engine":  reflect.ValueOf(func() *engine.Engine { e, err := it.Engine(); dr.Check(err); return e }),
		"Context": reflect.ValueOf(func() context.Context { return it.ctx }),
		"Args":    reflect.ValueOf(func() []string { return append([]string(nil), it.opts.Args...) }),
		"Show":    reflect.ValueOf(it.show),
		"Generate": reflect.ValueOf(func(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error) {
			if it.opts.Generate != nil {
				return it.opts.Generate(ctx, req, onEvent)
			}
			e, err := it.Engine()
			if err != nil {
				return nil, err
			}
			return e.Generate(ctx, req, onEvent)
		}),
		"Server": reflect.ValueOf(func(url, token string) (dr.Remote, error) {
			if it.opts.Connect == nil {
				return nil, fmt.Errorf("dr.Server %s: this session cannot connect to servers", url)
			}
			return it.opts.Connect(url, token)
		}),
		"Progress": reflect.ValueOf(func(ev engine.Event) {
			if line := dr.ProgressLine(ev); line != "" {
				fmt.Fprintln(it.stderr, line)
			}
		}),
	}, rtPath + "/rt": {
		"GoPanic": reflect.ValueOf(it.goPanic),
		"GoStart": reflect.ValueOf(it.goStart),
		"GoEnd":   reflect.ValueOf(it.goEnd),
		"Clear":   reflect.ValueOf(clearValue),
	}}
}

// goPanic reports the panic of a goroutine started by a go statement of a
// script (see rewrite.go): the goroutine stops, the session continues.
func (it *Interpreter) goPanic(p any) {
	err := cleanError(interp.Panic{Value: p})
	fmt.Fprintf(it.stderr, "error: a goroutine stopped: %v (the session continues)\n", err)
	it.goErr.CompareAndSwap(nil, &err)
}

// goStart and goEnd count the goroutines scripts started that have not
// yet finished (their deferred recover ran).
func (it *Interpreter) goStart() { it.goLive.Add(1) }
func (it *Interpreter) goEnd()   { it.goLive.Add(-1) }

// WaitGoroutines waits until every goroutine the scripts started has
// finished, or timeout passes, and reports whether they all finished: a
// goroutine whose panic is still unwinding when main returns (its own
// deferred calls run before its recover reports) is then reported.
func (it *Interpreter) WaitGoroutines(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for it.goLive.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// GoroutinePanic returns the first panic of a goroutine the scripts
// started (reported on Stderr as it happened), or nil.
func (it *Interpreter) GoroutinePanic() error {
	if p := it.goErr.Load(); p != nil {
		return *p
	}
	return nil
}

// ensureRT imports the helpers of rewritten code as _darkroomrt, and with
// recover also defines recoverName, once.
func (it *Interpreter) ensureRT(ctx context.Context, recover bool) error {
	if !it.haveRT {
		if _, err := it.evalSegment(ctx, "import _darkroomrt "+strconv.Quote(rtPath)); err != nil {
			return fmt.Errorf("import the script helpers: %w", err)
		}
		it.haveRT = true
	}
	if recover && !it.haveRecover {
		if _, err := it.evalSegment(ctx, recoverDecl); err != nil {
			return fmt.Errorf("define %s: %w", recoverName, err)
		}
		it.haveRecover = true
	}
	return nil
}

// clearValue is the builtin clear for scripts (see builtins.go).
func clearValue(x any) {
	v := reflect.ValueOf(x)
	if v.Kind() == reflect.Map || v.Kind() == reflect.Slice {
		v.Clear()
	}
}

// Engine returns the session's engine, opening it on first use.
func (it *Interpreter) Engine() (*engine.Engine, error) {
	it.engM.Lock()
	defer it.engM.Unlock()
	if it.eng == nil {
		e, err := engine.Open(it.opts.EngineOptions)
		if err != nil {
			return nil, fmt.Errorf("open engine: %w", err)
		}
		it.eng = e
	}
	return it.eng, nil
}

func (it *Interpreter) show(img image.Image) {
	if it.opts.Show != nil {
		it.opts.Show(img)
		return
	}
	if isNil(img) {
		fmt.Fprintln(it.stdout, "[no image]")
		return
	}
	b := img.Bounds()
	fmt.Fprintf(it.stdout, "[image %dx%d]\n", b.Dx(), b.Dy())
}

// Show displays img as dr.Show does in this session.
func (it *Interpreter) Show(img image.Image) { it.show(img) }

// ErrInterrupted is returned (wrapped) by Eval and RunFile when the context
// was cancelled while the code ran.
var ErrInterrupted = errors.New("interrupted")

// Eval evaluates one cell: declarations and statements, as typed in the
// REPL. It returns the formatted value of the cell's last statement when
// that is an expression (images are shown instead and give ""), and an
// error, with a hint for Yaegi's known gaps, when the cell fails to
// compile, panics, or is interrupted by ctx. State from the successful
// statements of a failed cell persists.
func (it *Interpreter) Eval(ctx context.Context, src string) (_ string, err error) {
	segs, err := splitCell(src)
	if err != nil {
		return "", err
	}
	for _, w := range loopVarWarnings(src) {
		fmt.Fprintln(it.stderr, "warning:", w)
	}
	if err := checkGaps(src); err != nil {
		return "", err
	}
	it.run.Lock()
	defer it.run.Unlock()
	// min, max and clear are rewritten, segment by segment; the calls that
	// cannot be are refused before anything runs.
	var cellDeclared map[string]bool
	if _, n, _ := parseCell(src); n != nil {
		cellDeclared = declaredNames(n)
	}
	defined := func(name string) bool { return cellDeclared[name] || it.defined(name) }
	pre := make([]string, len(segs))
	for i, s := range segs {
		pre[i] = s.src
		if firstToken(s.src) == token.IMPORT {
			continue
		}
		var usesRT bool
		pre[i], usesRT = rewriteSegmentBuiltins(s.src, it.nextID, defined)
		if fs, n, skip := parseCell(pre[i]); n != nil {
			if err := missingBuiltins(fs, n, skip, defined); err != nil {
				return "", s.wrap(err)
			}
		}
		if usesRT {
			if err := it.ensureRT(ctx, false); err != nil {
				return "", err
			}
		}
	}
	var out string
	var rec []string
	// ran are the segments that ran, in whole or in part, and imports the
	// import declarations among them.
	var ran, imports []string
	defer func() {
		if err != nil && len(ran) > 0 {
			// What ran persists but is not recorded: later cells that use it
			// are not recorded either; its imports are.
			it.taint(ran)
			if len(imports) > 0 {
				it.cells = append(it.cells, imports)
			}
		}
	}()
	for i, s := range segs {
		if err = it.probeRange(s.src); err != nil {
			return "", s.wrap(err)
		}
		commit := func() {}
		if firstToken(s.src) == token.IMPORT {
			if s.src, commit = it.newImports(s.src); s.src == "" {
				continue
			}
		}
		ran = append(ran, s.src)
		var v reflect.Value
		src := s.src
		if firstToken(src) != token.IMPORT {
			var goStmts bool
			if src, goStmts = rewriteSegment(pre[i], it.nextID); goStmts {
				if err := it.ensureRT(ctx, true); err != nil {
					return "", err
				}
			}
		}
		if s.compound() {
			// The function starts on the segment's first line, so error
			// lines match.
			name := fmt.Sprintf("_darkroomCell%d", it.seq.Add(1))
			if _, err = it.evalSegment(ctx, "func "+name+"() { "+src+"\n}"); err == nil {
				_, err = it.evalSegment(ctx, name+"()")
			}
		} else {
			v, err = it.evalSegment(ctx, src)
			if err == nil {
				err = it.rebind(ctx, s.src)
			}
		}
		if err != nil {
			return "", s.wrap(err)
		}
		commit()
		if firstToken(s.src) == token.IMPORT {
			imports = append(imports, s.src)
		}
		text, isImage := "", false
		if s.expr && !s.print && it.isVoidCall(pre[i]) {
			s.print = true
		}
		if s.expr && !s.print {
			text, isImage = it.format(v)
			if i == len(segs)-1 {
				out = text
			}
		}
		switch {
		case isImage:
			rec = append(rec, "show("+s.src+")")
		case s.expr && !s.print && v.IsValid():
			rec = append(rec, "fmt.Println("+s.src+")")
		default:
			rec = append(rec, s.src)
		}
	}
	if it.dependsOnTainted(ran) {
		// It uses what a failed cell left: a recipe of it would not run.
		it.taint(ran)
		it.left++
		if len(imports) > 0 {
			it.cells = append(it.cells, imports)
		}
		return out, nil
	}
	it.untaint(ran)
	it.cells = append(it.cells, rec)
	return out, nil
}

// Left returns the number of cells that ran but are left out of Recipe
// because they use what a failed or interrupted cell defined or changed.
func (it *Interpreter) Left() int {
	it.run.Lock()
	defer it.run.Unlock()
	return it.left
}

// defined reports whether name is defined in the session.
func (it *Interpreter) defined(name string) bool {
	v, err := it.evalQuiet(name)
	return err == nil && v.IsValid()
}

// format renders a cell's value for display and reports whether it was an
// image (which is shown instead).
func (it *Interpreter) format(v reflect.Value) (text string, shown bool) {
	if !v.IsValid() {
		return "", false
	}
	if v.CanInterface() {
		if img, ok := asImage(v); ok {
			it.show(img)
			return "", true
		}
	}
	if v.Kind() == reflect.Interface {
		if v.IsNil() {
			return "<nil>", false
		}
		v = v.Elem()
	}
	s := fmt.Sprintf("%v", v)
	if v.CanInterface() {
		s = fmt.Sprintf("%v", v.Interface())
	}
	const limit = 2000
	if len(s) > limit {
		s = fmt.Sprintf("%s… (%d more bytes)", s[:limit], len(s)-limit)
	}
	return s, false
}

// asImage returns the value as an image to show. image.Rectangle (which
// implements image.Image) is a value to print, not to draw.
func asImage(v reflect.Value) (image.Image, bool) {
	if (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) && v.IsNil() {
		return nil, false
	}
	img, ok := v.Interface().(image.Image)
	if _, rect := img.(image.Rectangle); rect {
		return nil, false
	}
	return img, ok
}

// isNil reports whether img is nil or a nil pointer.
func isNil(img image.Image) bool {
	if img == nil {
		return true
	}
	v := reflect.ValueOf(img)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// evalSegment evaluates one top-level statement or declaration with ctx
// bound as the cell context, converting panics into errors.
func (it *Interpreter) evalSegment(ctx context.Context, src string) (v reflect.Value, err error) {
	if err := ctx.Err(); err != nil {
		return v, fmt.Errorf("%w: %w", ErrInterrupted, err)
	}
	restore := it.ctx.set(ctx)
	defer restore()
	v, err = runCell(ctx, fmt.Sprintf("%p/%d", it, it.seq.Add(1)), func(ctx context.Context) (reflect.Value, error) {
		return it.yi.EvalWithContext(ctx, src)
	})
	if err != nil {
		if ctx.Err() != nil {
			return v, fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
		}
		return v, cleanError(err)
	}
	return v, nil
}

// Stdout returns the writer the script's output goes to.
func (it *Interpreter) Stdout() io.Writer { return it.stdout }

// panicLineFilter drops the "1:28: panic: main(...)" position lines Yaegi
// prints for a panicking cell; the panic itself is reported as an error.
type panicLineFilter struct{ w io.Writer }

func (f *panicLineFilter) Write(p []byte) (int, error) {
	if isYaegiPanicLine(string(p)) {
		return len(p), nil
	}
	return f.w.Write(p)
}

func isYaegiPanicLine(s string) bool {
	s = strings.TrimSpace(s)
	i := strings.Index(s, ": panic")
	if i < 0 || strings.Contains(s, "\n") {
		return false
	}
	pos := s[:i]
	// pos is [file:]line:col.
	parts := strings.Split(pos, ":")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts[len(parts)-2:] {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// syncWriter serialises the writes of the cell and of the goroutines it
// started to one writer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
