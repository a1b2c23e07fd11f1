package tui

import (
	"context"
	"errors"
	"flag"
	"image"
	"image/color"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script/dr"
	"github.com/darkroom-ai/darkroom/termimg"
)

var update = flag.Bool("update", false, "rewrite golden frames")

// fakePipeline emits scripted progress: an encode event, one sample event
// per step with constant latents, decode and done. With gate set, every
// step waits for a value on gate (or cancellation).
type fakePipeline struct {
	models []engine.ModelEntry
	dirs   []string
	gate   chan struct{}
	fail   map[string]error // by prompt
	mu     sync.Mutex
	calls  []engine.Request
}

var _ Pipeline = (*fakePipeline)(nil)

func (f *fakePipeline) ListModels() []engine.ModelEntry { return f.models }
func (f *fakePipeline) ModelDirs() []string             { return f.dirs }

func (f *fakePipeline) Generate(ctx context.Context, req engine.Request, onEvent func(engine.Event)) (*engine.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	f.mu.Unlock()
	onEvent(engine.Event{Phase: engine.PhaseEncode})
	if err := f.fail[req.Prompt]; err != nil {
		return nil, err
	}
	shape := []int{req.Batch, 4, req.Height / 8, req.Width / 8}
	lat := make([]float32, shape[0]*shape[1]*shape[2]*shape[3])
	for i := range lat {
		lat[i] = float32(i%7)/7 - 0.5
	}
	for s := 1; s <= req.Steps; s++ {
		if f.gate != nil {
			select {
			case <-f.gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		onEvent(engine.Event{Phase: engine.PhaseSample, Step: s, Total: req.Steps, Sigma: float32(req.Steps - s),
			Elapsed: time.Duration(s+1) * 100 * time.Millisecond, Denoised: lat, LatentShape: shape, Format: engine.DefaultModelFormat()})
	}
	onEvent(engine.Event{Phase: engine.PhaseDecode})
	res := &engine.Result{Request: req}
	for i := range req.Batch {
		img := image.NewNRGBA(image.Rect(0, 0, req.Width, req.Height))
		c := color.NRGBA{R: uint8(req.Seed * 40), G: uint8(i * 90), B: 200, A: 255}
		for y := range req.Height {
			for x := range req.Width {
				img.SetNRGBA(x, y, c)
			}
		}
		res.Images = append(res.Images, img)
	}
	onEvent(engine.Event{Phase: engine.PhaseDone})
	return res, nil
}

// harness drives the App like tea.Program does, without a terminal:
// commands run on goroutines and their messages, and the worker's, are
// applied with Update one at a time from the test goroutine.
type harness struct {
	t    *testing.T
	app  *App
	fake *fakePipeline
	w    *worker
	out  string // output directory
	msgs chan tea.Msg
	done chan struct{}
	raw  []string // tea.Raw output, in order
	quit bool
}

type harnessOpts struct {
	w, h  int
	mode  termimg.Mode
	auto  bool
	model string
	gpu   GPUStatsProvider
	eng   *engine.Engine // the scripts' eng (the jobs still run on the fake)
	// pipeline, when set, runs the jobs instead of the fake (a server's
	// client); remote is the server's queue.
	pipeline Pipeline
	remote   RemoteQueue
	connect  func(url, token string) (dr.Remote, error) // dr.Server
}

func newHarness(t *testing.T, fake *fakePipeline, o harnessOpts) *harness {
	t.Helper()
	if o.w == 0 {
		o.w, o.h = 80, 24
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, fake: fake, out: t.TempDir(), msgs: make(chan tea.Msg, 256), done: make(chan struct{})}
	var p Pipeline = fake
	if o.pipeline != nil {
		p = o.pipeline
	}
	h.w = newWorker(p, h.out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.w.now = func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	var seed uint64
	h.app = newApp(ctx, p, h.w.submit, appConfig{
		Model: o.model, Mode: o.mode, Auto: o.auto, GPU: o.gpu, Engine: o.eng, Remote: o.remote, Connect: o.connect,
		RandSeed: func() uint64 { seed++; return seed },
	})
	h.app.host.root = "testdata/proc"
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); h.w.run(ctx) }()
	go func() {
		for m := range h.w.out {
			select {
			case h.msgs <- m:
			case <-h.done:
			}
		}
	}()
	t.Cleanup(func() {
		close(h.done)
		cancel()
		<-workerDone
	})
	h.run(h.app.Init())
	h.send(tea.WindowSizeMsg{Width: o.w, Height: o.h})
	// Wait for the model list and the first devices sample.
	h.waitFor("startup", func(a *App) bool { return a.modelsLoaded && a.devices.valid })
	return h
}

// run executes cmd on a goroutine (expanding batches), queueing its
// message.
func (h *harness) run(cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	go func() {
		msg := cmd()
		if b, ok := msg.(tea.BatchMsg); ok {
			for _, c := range b {
				h.run(c)
			}
			return
		}
		if msg == nil {
			return
		}
		select {
		case h.msgs <- msg:
		case <-h.done:
		}
	}()
}

// send applies msg with Update and runs the resulting command.
func (h *harness) send(msg tea.Msg) {
	switch m := msg.(type) {
	case tea.RawMsg:
		h.raw = append(h.raw, m.Msg.(string))
		return
	case tea.QuitMsg:
		h.quit = true
		return
	}
	_, cmd := h.app.Update(msg)
	h.run(cmd)
}

// waitFor applies queued messages until cond holds, failing after 5 s.
func (h *harness) waitFor(what string, cond func(*App) bool) {
	h.t.Helper()
	h.waitWithin(5*time.Second, what, cond)
}

// waitWithin is waitFor failing after d.
func (h *harness) waitWithin(d time.Duration, what string, cond func(*App) bool) {
	h.t.Helper()
	deadline := time.After(d)
	for !cond(h.app) {
		select {
		case m := <-h.msgs:
			h.send(m)
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; screen:\n%s", what, h.screen())
		}
	}
}

// until applies queued messages until cond (on the harness) holds,
// failing after 5 s.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	h.waitFor(what, func(*App) bool { return cond() })
}

// settle applies messages until none arrive for a moment.
func (h *harness) settle() {
	for {
		select {
		case m := <-h.msgs:
			h.send(m)
		case <-time.After(150 * time.Millisecond):
			return
		}
	}
}

// keys sends key presses: named keys ("ctrl+g", "tab", "enter", "esc",
// "up", "down", "backspace", "shift+tab", "f1", "alt+2") or single
// characters.
func (h *harness) keys(names ...string) {
	for _, n := range names {
		h.send(tea.KeyPressMsg(parseKey(n)))
	}
}

// typeText types s character by character.
func (h *harness) typeText(s string) {
	for _, r := range s {
		h.send(tea.KeyPressMsg{Code: r, Text: string(r)})
	}
}

func parseKey(n string) tea.Key {
	var k tea.Key
	for {
		switch {
		case strings.HasPrefix(n, "ctrl+"):
			k.Mod |= tea.ModCtrl
			n = n[5:]
			continue
		case strings.HasPrefix(n, "alt+"):
			k.Mod |= tea.ModAlt
			n = n[4:]
			continue
		case strings.HasPrefix(n, "shift+"):
			k.Mod |= tea.ModShift
			n = n[6:]
			continue
		}
		break
	}
	codes := map[string]rune{"tab": tea.KeyTab, "enter": tea.KeyEnter, "esc": tea.KeyEscape, "up": tea.KeyUp,
		"down": tea.KeyDown, "left": tea.KeyLeft, "right": tea.KeyRight, "backspace": tea.KeyBackspace,
		"delete": tea.KeyDelete, "f1": tea.KeyF1, "space": tea.KeySpace}
	if c, ok := codes[n]; ok {
		k.Code = c
		return k
	}
	r := []rune(n)[0]
	k.Code = r
	if k.Mod == 0 || k.Mod == tea.ModShift {
		k.Text = n
	}
	return k
}

// screen is the current frame without colours.
func (h *harness) screen() string { return ansi.Strip(h.app.View().Content) }

// golden compares the frame (with colours) to testdata/<test name>.golden
// and a colourless copy (.txt) that is easy to review.
func (h *harness) golden() {
	h.t.Helper()
	frame := h.app.View().Content
	base := filepath.Join("testdata", "golden", strings.ReplaceAll(h.t.Name(), "/", "_"))
	if *update {
		if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(base+".golden", []byte(frame), 0o644); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(base+".txt", []byte(ansi.Strip(frame)), 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
	want, err := os.ReadFile(base + ".golden")
	if err != nil {
		h.t.Fatalf("read golden (run go test -update): %v", err)
	}
	if frame != string(want) {
		h.t.Errorf("frame differs from %s.golden\n got:\n%s\nwant:\n%s", base, ansi.Strip(frame), ansi.Strip(string(want)))
	}
	// Every frame fills the screen exactly.
	lines := strings.Split(frame, "\n")
	if len(lines) != h.app.c.Height {
		h.t.Errorf("frame has %d lines, want %d", len(lines), h.app.c.Height)
	}
	for i, l := range lines {
		if w := ansi.StringWidth(l); w != h.app.c.Width {
			h.t.Errorf("line %d is %d cells wide, want %d: %q", i, w, h.app.c.Width, ansi.Strip(l))
		}
	}
}

// fill sets the prompt editor for a small fast job.
func (h *harness) fill(prompt string) {
	h.keys("alt+1")
	h.app.prompt.Focus(fieldPrompt)
	h.app.prompt.prompt.SetValue("")
	h.typeText(prompt)
	h.setField(fieldSteps, "4")
	h.setField(fieldSize, "64x64")
}

// setField focuses a prompt field with tab and types its new value.
func (h *harness) setField(f field, v string) {
	for h.app.focus != panePrompt || h.app.prompt.focus != f {
		h.keys("tab")
	}
	for range 30 {
		h.keys("backspace")
	}
	h.typeText(v)
}

// setOptions focuses the options line with tab and replaces its text.
func (h *harness) setOptions(v string) {
	for h.app.focus != panePrompt || h.app.prompt.focus != fieldOptions {
		h.keys("tab")
	}
	h.keys("ctrl+e", "ctrl+u")
	h.typeText(v)
}

var errTest = errors.New("out of memory: needs 6.2 GiB, 4.0 GiB free")

func tinyModels() *fakePipeline {
	return &fakePipeline{
		models: []engine.ModelEntry{{Name: "sd15", Path: "/m/sd15.safetensors", Size: 2 << 30}, {Name: "tiny", Path: "/m/tiny.safetensors", Size: 1 << 20}},
		dirs:   []string{"/m"},
		fail:   map[string]error{"fail me": errTest},
	}
}
