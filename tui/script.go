package tui

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"strings"
	"sync"

	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script"
	"github.com/darkroom-ai/darkroom/script/dr"
)

// scriptOutMsg says the script printed something; Update drains it, so
// that output and the end of an evaluation stay in order.
type scriptOutMsg struct{}

// scriptDoneMsg ends evaluation Seq of the command line: its value, or
// why it failed.
type scriptDoneMsg struct {
	Seq   int
	Value string
	Err   error
}

// scriptJobMsg asks the app to queue a job for a script's generate call.
type scriptJobMsg struct{ Job *scriptJob }

// scriptShowMsg shows an image a script displayed in the preview pane;
// Shown is closed once it is, so that the script's next statement sees it
// on screen.
type scriptShowMsg struct {
	Img   *image.NRGBA
	Shown chan struct{}
}

// scriptJob is a generate call waiting for its job: the app queues it,
// forwards its progress on events and answers on reply when it ends.
type scriptJob struct {
	ctx    context.Context // cancelled with the call's or the cell's context
	req    engine.Request
	events chan engine.Event // progress, dropped when full
	reply  chan scriptReply  // capacity 1: the app never blocks on it
}

// scriptReply is a script job's outcome.
type scriptReply struct {
	res *engine.Result
	err error
}

// finish answers the waiting call once; later answers are dropped.
func (sj *scriptJob) finish(res *engine.Result, err error) {
	select {
	case sj.reply <- scriptReply{res, err}:
	default:
	}
}

// progress forwards a progress event without blocking the UI.
func (sj *scriptJob) progress(ev engine.Event) {
	select {
	case sj.events <- ev:
	default:
	}
}

// scriptOutLimit bounds the output waiting to be shown.
const scriptOutLimit = 64 << 10

// scriptSession is the command line's interpreter and the channels
// between the script's goroutines and the UI. Scripts run on the eval
// command's goroutine; the UI learns of their output, jobs and images
// through one listening command (listen) at a time.
type scriptSession struct {
	eng       *engine.Engine
	modelDirs []string
	// connect opens a server's client for dr.Server (nil: it fails).
	connect func(url, token string) (dr.Remote, error)
	done    <-chan struct{} // the app's context

	events chan tea.Msg  // job requests and images, in order
	wake   chan struct{} // capacity 1: output is waiting
	newIt  func() (*script.Interpreter, error)
	evalMu sync.Mutex // one evaluation at a time

	mu  sync.Mutex
	out strings.Builder
	it  *script.Interpreter
	cur context.Context // the running evaluation's context
}

// newScriptSession returns a session; its interpreter is created by the
// first evaluation. eng, when not nil, is the scripts' eng; modelDirs are
// searched when a script opens an engine of its own without one.
func newScriptSession(ctx context.Context, eng *engine.Engine, modelDirs []string) *scriptSession {
	s := &scriptSession{
		eng: eng, modelDirs: modelDirs, done: ctx.Done(),
		events: make(chan tea.Msg), wake: make(chan struct{}, 1),
		cur: context.Background(),
	}
	s.newIt = s.interpreter
	return s
}

// interpreter creates the session's interpreter and loads the REPL
// prelude. Without an engine the prelude leaves out eng, so that nothing
// opens one until a script calls dr.Engine().
func (s *scriptSession) interpreter() (*script.Interpreter, error) {
	w := scriptWriter{s}
	it, err := script.New(script.Options{
		Stdout: w, Stderr: w, Engine: s.eng,
		EngineOptions: engine.Options{ModelDirs: s.modelDirs},
		Show:          s.show,
		Generate:      s.generate,
		Connect:       s.connect,
	})
	if err != nil {
		return nil, fmt.Errorf("start interpreter: %w", err)
	}
	if s.eng != nil {
		err = it.LoadPrelude(context.Background())
	} else {
		_, err = it.Eval(context.Background(), strings.Replace(script.Prelude, "eng := dr.Engine()\n", "", 1))
	}
	if err != nil {
		return nil, fmt.Errorf("load prelude: %w", err)
	}
	return it, nil
}

// eval evaluates src on the session's interpreter (creating it first)
// and reports the value or error as scriptDoneMsg seq.
func (s *scriptSession) eval(ctx context.Context, seq int, src string) tea.Cmd {
	return func() tea.Msg {
		s.evalMu.Lock()
		defer s.evalMu.Unlock()
		s.mu.Lock()
		it := s.it
		s.cur = ctx
		s.mu.Unlock()
		if it == nil {
			var err error
			if it, err = s.newIt(); err != nil {
				return scriptDoneMsg{Seq: seq, Err: err}
			}
			s.mu.Lock()
			s.it = it
			s.mu.Unlock()
		}
		v, err := it.Eval(ctx, src)
		return scriptDoneMsg{Seq: seq, Value: v, Err: err}
	}
}

// listen waits for the next message from the script's goroutines.
func (s *scriptSession) listen() tea.Cmd {
	return func() tea.Msg {
		select {
		case m := <-s.events:
			return m
		case <-s.wake:
			return scriptOutMsg{}
		case <-s.done:
			return nil
		}
	}
}

// drain returns and clears the output waiting to be shown.
func (s *scriptSession) drain() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.out.String()
	s.out.Reset()
	return t
}

// send hands m to the listener, giving up when the app ends.
func (s *scriptSession) send(ctx context.Context, m tea.Msg) error {
	select {
	case s.events <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errors.New("the TUI has quit")
	}
}

// generate is the interpreter's Generate hook: it queues req as a script
// job in the TUI's queue and waits for it, passing its progress to
// onEvent (without the denoised latents) on the calling goroutine.
func (s *scriptSession) generate(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	s.mu.Lock()
	cell := s.cur
	s.mu.Unlock()
	// The job stops with the caller's context or with the cell.
	jctx, cancel := context.WithCancel(cell)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	if err := jctx.Err(); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	sj := &scriptJob{ctx: jctx, req: req, events: make(chan engine.Event, 64), reply: make(chan scriptReply, 1)}
	if err := s.send(jctx, scriptJobMsg{Job: sj}); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	for {
		select {
		case ev := <-sj.events:
			if onEvent != nil {
				onEvent(ev)
			}
		case r := <-sj.reply:
			for {
				select {
				case ev := <-sj.events:
					if onEvent != nil {
						onEvent(ev)
					}
					continue
				default:
				}
				break
			}
			return r.res, r.err
		case <-jctx.Done():
			return nil, fmt.Errorf("generate: %w", context.Cause(jctx))
		case <-s.done:
			return nil, errors.New("generate: the TUI has quit")
		}
	}
}

// show is the interpreter's Show hook: the image goes to the preview
// pane.
func (s *scriptSession) show(img image.Image) {
	if img == nil || isNilImage(img) {
		fmt.Fprintln(scriptWriter{s}, "[no image]")
		return
	}
	s.mu.Lock()
	ctx := s.cur
	s.mu.Unlock()
	m := scriptShowMsg{Img: toNRGBA(img), Shown: make(chan struct{})}
	if s.send(ctx, m) == nil {
		select {
		case <-m.Shown:
		case <-ctx.Done():
		case <-s.done:
		}
	}
}

// isNilImage reports whether img is a typed nil pointer.
func isNilImage(img image.Image) bool {
	switch v := img.(type) {
	case *image.NRGBA:
		return v == nil
	case *image.RGBA:
		return v == nil
	case *image.Gray:
		return v == nil
	}
	return false
}

// toNRGBA returns img as an *image.NRGBA with its origin at (0, 0),
// copying unless it already is one.
func toNRGBA(img image.Image) *image.NRGBA {
	if n, ok := img.(*image.NRGBA); ok && n.Rect.Min == (image.Point{}) {
		return n
	}
	b := img.Bounds()
	n := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(n, n.Rect, img, b.Min, draw.Src)
	return n
}

// scriptWriter collects the script's output for the UI.
type scriptWriter struct{ s *scriptSession }

// Write appends p to the waiting output (keeping its last
// scriptOutLimit bytes) and wakes the listener.
func (w scriptWriter) Write(p []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	s.out.Write(p)
	if s.out.Len() > scriptOutLimit {
		t := s.out.String()
		s.out.Reset()
		s.out.WriteString(t[len(t)-scriptOutLimit/2:])
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}
