package script

import (
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ExitError reports a script that called os.Exit with a non-zero code.
type ExitError struct{ Code int }

// Error returns "exit status N".
func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

var osExitPanic = regexp.MustCompile(`^panic: os\.Exit\((-?\d+)\)$`)

// goroutineGrace is how long RunFile waits for a recipe's goroutines
// after main returns (a Go program would end them; this only lets a
// panicking one report).
const goroutineGrace = 250 * time.Millisecond

// RunFile runs the script at path with args (returned by dr.Args()) and
// returns the first error. A script is either a Go main package (a recipe:
// its main function runs; a `//go:build ignore` line is allowed so the go
// tool skips it) or a sequence of REPL cells (statements and
// declarations, run after the REPL's Prelude). Cancelling ctx interrupts
// it; the error then wraps ErrInterrupted. os.Exit(n) with n ≠ 0 gives an
// *ExitError; other failures (compile errors, panics, dr.Check) give an
// error prefixed with path.
func RunFile(ctx context.Context, path string, args []string, opts Options) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("run script: %w", err)
	}
	opts.Args = args
	it, err := New(opts)
	if err != nil {
		return err
	}
	if isMainPackage(string(src)) {
		err = it.EvalFile(ctx, path, string(src))
	} else if err = it.LoadPrelude(ctx); err == nil {
		_, err = it.Eval(ctx, string(src))
	}
	if err == nil {
		// A goroutine's panic stops a Go program; the recipe fails. One
		// that panicked before main returned may still be unwinding.
		it.WaitGoroutines(goroutineGrace)
		if err = it.GoroutinePanic(); err == nil {
			return nil
		}
		err = fmt.Errorf("a goroutine stopped: %w", err)
	}
	if m := osExitPanic.FindStringSubmatch(err.Error()); m != nil {
		code, _ := strconv.Atoi(m[1])
		if code == 0 {
			return nil
		}
		return &ExitError{Code: code}
	}
	if errors.Is(err, ErrInterrupted) {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}

// isMainPackage reports whether src starts (after comments) with a package
// clause.
func isMainPackage(src string) bool {
	for _, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == "" || strings.HasPrefix(t, "//"):
			continue
		case strings.HasPrefix(t, "package "):
			return true
		}
		return false
	}
	return false
}

// EvalFile evaluates a whole Go source file (package main; its main
// function runs) in the interpreter.
func (it *Interpreter) EvalFile(ctx context.Context, name, src string) error {
	it.run.Lock()
	defer it.run.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrInterrupted, err)
	}
	for _, w := range loopVarWarningsFile(src) {
		fmt.Fprintln(it.stderr, "warning:", w)
	}
	src, _ = rewriteBuiltins(src, "", "", it.nextID, nil)
	fs := token.NewFileSet()
	if f, err := parser.ParseFile(fs, name, src, parser.SkipObjectResolution); err == nil {
		if err := missingBuiltins(fs, f, 0, nil); err != nil {
			return err
		}
	}
	src = rewriteFile(src, it.nextID)
	restore := it.ctx.set(ctx)
	defer restore()
	_, err := runCell(ctx, fmt.Sprintf("%p/%d", it, it.seq.Add(1)), func(ctx context.Context) (reflect.Value, error) {
		return it.yi.EvalWithContext(ctx, src)
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
		}
		return cleanError(err)
	}
	return nil
}
