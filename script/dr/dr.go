// Package dr holds the helpers darkroom scripts and recipes share: the
// engine, a context that Ctrl-C cancels, the script's arguments, inline
// image display, a progress printer and a darkroom server's client.
//
// Under `darkroom run` and `darkroom repl` these functions are bound to the
// running session (its engine, its per-cell context, its terminal). The
// package is also real Go, so a recipe builds with `go run recipe.go`; then
// Engine opens a CPU engine on the default model directories, Context is
// cancelled by an interrupt signal, Args are the program arguments and
// Show prints the image size.
package dr

import (
	"context"
	"fmt"
	"image"
	"os"
	"os/signal"
	"sync"

	"github.com/darkroom-ai/darkroom/engine"
)

// standalone caches the engine and context of a recipe built with the go
// tool (it is not used inside darkroom).
var standalone struct {
	engine func() (*engine.Engine, error)
	ctx    func() context.Context
}

func init() {
	standalone.engine = sync.OnceValues(func() (*engine.Engine, error) { return engine.Open(engine.Options{}) })
	standalone.ctx = sync.OnceValue(func() context.Context {
		ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt)
		return ctx
	})
}

// Engine returns the session's engine.
func Engine() *engine.Engine {
	e, err := standalone.engine()
	Check(err)
	return e
}

// Context returns the context of the running script or REPL cell; Ctrl-C
// cancels it, and engine calls given it stop within one sampler step.
func Context() context.Context { return standalone.ctx() }

// Args returns the script's arguments (after the script path).
func Args() []string { return os.Args[1:] }

// Show displays img inline in the terminal (kitty, sixel or iTerm2
// graphics where the terminal supports them, half-block characters
// otherwise).
func Show(img image.Image) {
	if img == nil {
		fmt.Println("[no image]")
		return
	}
	b := img.Bounds()
	fmt.Printf("[image %dx%d]\n", b.Dx(), b.Dy())
}

// Generate runs a text-to-image request on the session's engine (loading
// req.Model on first use) and returns the result; onEvent (may be nil)
// gets per-step progress. In the TUI, jobs submitted this way go through
// its queue and show their previews there; under `darkroom repl --server`
// and `darkroom run --server` they run on the server.
func Generate(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error) {
	return Engine().Generate(ctx, req, onEvent)
}

// Remote is a darkroom server (`darkroom serve`) that runs the jobs a
// script submits to it; Server returns one.
type Remote interface {
	// Generate runs req as a job on the server and returns its images;
	// onEvent (may be nil) gets its steps, and the server's latent
	// previews as ready images (Event.Preview). Cancelling ctx cancels the
	// job.
	Generate(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error)
	// ListModels lists the server's models by name (Path is the name,
	// which requests take).
	ListModels() []engine.ModelEntry
}

// Server connects to the darkroom server at url ("http://gpu-box:7860")
// with a bearer token ("": DARKROOM_TOKEN, or none for a loopback server
// without tokens), checking that it answers. Under `darkroom run`,
// `darkroom repl` and the TUI's `:` line it returns the server's client;
// a recipe built with the go tool has no server client here (it can
// import package server and use server.NewClient).
func Server(url, token string) (Remote, error) {
	return nil, fmt.Errorf("dr.Server %s: connecting to a server needs darkroom run or darkroom repl", url)
}

// Progress is a ready-made event callback for Generate and Sample: it prints
// one line per sampler step to standard error.
func Progress(ev engine.Event) {
	if line := ProgressLine(ev); line != "" {
		fmt.Fprintln(os.Stderr, line)
	}
}

// ProgressLine formats a generation event as a short progress line, or ""
// for events not worth a line.
func ProgressLine(ev engine.Event) string {
	switch ev.Phase {
	case engine.PhaseSample:
		return fmt.Sprintf("step %d/%d  sigma %.3f  %.1fs", ev.Step, ev.Total, ev.Sigma, ev.Elapsed.Seconds())
	case engine.PhaseDone:
		return fmt.Sprintf("done in %.1fs", ev.Elapsed.Seconds())
	}
	return ""
}

// Check stops the script with err when it is not nil: the REPL prints the
// error and keeps the session, `darkroom run` prints it and exits with
// status 1.
func Check(err error) {
	if err != nil {
		panic(ScriptError{Err: err})
	}
}

// ScriptError is the panic value Check raises; the interpreter reports its
// error as is.
type ScriptError struct{ Err error }

// Error returns the wrapped error's message.
func (e ScriptError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e ScriptError) Unwrap() error { return e.Err }
