package tui

import (
	"reflect"
	"strconv"

	"github.com/charmbracelet/x/ansi"
	"os"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	uv "github.com/charmbracelet/ultraviolet"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/termimg"
)

// step lets the gated fake take n steps.
func step(f *fakePipeline, n int) {
	for range n {
		f.gate <- struct{}{}
	}
}

func TestFlowEnqueueRunCancel(t *testing.T) {
	fake := tinyModels()
	fake.gate = make(chan struct{})
	h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.fill("a red fox in the snow")
	h.keys("ctrl+g")
	h.fill("a lighthouse at dusk")
	h.keys("ctrl+g")
	if len(h.app.jobs) != 2 {
		t.Fatalf("%d jobs, want 2", len(h.app.jobs))
	}
	h.waitFor("job 1 running", func(a *App) bool { return a.jobs[0].State == JobRunning })
	if s := h.app.jobs[1].State; s != JobQueued {
		t.Errorf("job 2 is %v, want queued while job 1 runs", s)
	}
	step(fake, 2)
	h.waitFor("job 1 step 2", func(a *App) bool { return a.jobs[0].Step == 2 })
	j := h.app.jobs[0]
	if j.Total != 4 || j.Preview == nil || j.Preview.Bounds().Dx() != 8 {
		t.Errorf("job 1: total %d, preview %v; want 4 and an 8×8 latent preview", j.Total, j.Preview)
	}
	// Elapsed 0.3 s at step 2, 0.2 s at step 1 → 10 it/s; 2 steps left → 0.2 s.
	if j.Rate < 9.99 || j.Rate > 10.01 || j.ETA.Milliseconds() != 200 {
		t.Errorf("rate %.3f it/s, ETA %v; want 10 it/s, 200ms", j.Rate, j.ETA)
	}
	scr := h.screen()
	for _, want := range []string{"#1  running", "2/4", "10.0it/s", "ETA 0.2s", "#2  queued", "64×64 euler 4 steps", "#1 sample 2/4"} {
		if !strings.Contains(scr, want) {
			t.Errorf("screen lacks %q:\n%s", want, scr)
		}
	}
	h.keys("ctrl+x")
	h.waitFor("job 1 cancelled", func(a *App) bool { return a.jobs[0].State == JobCancelled })
	h.waitFor("job 2 running", func(a *App) bool { return a.jobs[1].State == JobRunning })
	step(fake, 4)
	h.waitFor("job 2 done", func(a *App) bool { return a.jobs[1].State == JobDone })
	j2 := h.app.jobs[1]
	if len(j2.Paths) != 1 {
		t.Fatalf("paths %v, want one PNG", j2.Paths)
	}
	req, err := engine.RequestFromPNG(j2.Paths[0])
	if err != nil {
		t.Fatalf("saved PNG: %v", err)
	}
	if req.Prompt != "a lighthouse at dusk" || req.Seed != 2 || req.Width != 64 || req.Steps != 4 {
		t.Errorf("PNG parameters %+v", req)
	}
	if len(h.app.done) != 1 || h.app.done[0] != j2 || h.app.lastImage == nil {
		t.Errorf("history %v, last image %v", h.app.done, h.app.lastImage)
	}
	if !strings.Contains(h.screen(), "#2 done in") {
		t.Errorf("log line: %q", h.app.logMsg)
	}
	if h.app.inFlight() != 0 || h.app.running != nil {
		t.Errorf("in flight %d, running %v", h.app.inFlight(), h.app.running)
	}
}

func TestFlowFailureKeepsRunning(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.fill("fail me")
	h.keys("ctrl+g")
	h.fill("fine")
	h.keys("ctrl+g")
	h.waitFor("both finished", func(a *App) bool { return len(a.jobs) == 2 && a.jobs[1].State == JobDone })
	if j := h.app.jobs[0]; j.State != JobFailed || j.Err != errTest.Error() {
		t.Errorf("job 1: %v %q", j.State, j.Err)
	}
	h.keys("alt+2")
	scr := h.screen()
	if !strings.Contains(scr, "#1  failed  out of memory") {
		t.Errorf("failed row does not say why:\n%s", scr)
	}
	if _, err := os.Stat(h.app.jobs[1].Paths[0]); err != nil {
		t.Errorf("second job's PNG: %v", err)
	}
}

func TestQueueEditing(t *testing.T) {
	fake := tinyModels()
	fake.gate = make(chan struct{})
	h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	for _, p := range []string{"one", "two", "three", "four"} {
		h.fill(p)
		h.keys("ctrl+g")
	}
	h.waitFor("job 1 running", func(a *App) bool { return a.jobs[0].State == JobRunning })
	h.keys("alt+2", "down", "down") // select #3
	h.keys("K")                     // move it above #2
	if got := ids(h.app.jobs); got != "1 3 2 4" {
		t.Errorf("after K: %s, want 1 3 2 4", got)
	}
	h.keys("K") // #1 is running: refused
	if got := ids(h.app.jobs); got != "1 3 2 4" {
		t.Errorf("moved above the running job: %s", got)
	}
	h.keys("down", "down", "x") // remove #4
	if got := ids(h.app.jobs); got != "1 3 2" {
		t.Errorf("after x: %s, want 1 3 2", got)
	}
	h.keys("J") // the selection is on #2, the last: nothing below
	if got := ids(h.app.jobs); got != "1 3 2" {
		t.Errorf("after J at end: %s", got)
	}
	h.keys("r") // re-run #2 with a new seed
	if got := ids(h.app.jobs); got != "1 3 2 5" || h.app.jobs[3].Req.Prompt != "two" || h.app.jobs[3].Req.Seed == h.app.jobs[2].Req.Seed {
		t.Errorf("re-run: %s, %+v", got, h.app.jobs[3].Req)
	}
	// Order of execution follows the queue.
	step(fake, 4)
	h.waitFor("#3 running", func(a *App) bool { return a.running != nil && a.running.ID == 3 })
}

func ids(jobs []*Job) string {
	var s []string
	for _, j := range jobs {
		s = append(s, strconv.Itoa(j.ID))
	}
	return strings.Join(s, " ")
}

func TestHistoryLoadAndRerun(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.fill("first")
	h.setField(fieldCFG, "4.5")
	h.keys("ctrl+g")
	h.waitFor("done", func(a *App) bool { return len(a.done) == 1 })
	h.fill("second")
	h.keys("ctrl+g")
	h.waitFor("done", func(a *App) bool { return len(a.done) == 2 })
	h.keys("alt+3", "down") // history, select the older ("first")
	img, caption := h.app.previewImage()
	if img != h.app.done[1].Images[0] || !strings.Contains(caption, "#1") {
		t.Errorf("preview shows %q, want history item #1", caption)
	}
	h.keys("enter")
	if h.app.focus != panePrompt || h.app.prompt.prompt.Value() != "first" || h.app.prompt.textOf(fieldCFG) != "4.5" || h.app.prompt.textOf(fieldSeed) != "1" {
		t.Errorf("loaded: focus %v prompt %q cfg %q seed %q", h.app.focus, h.app.prompt.prompt.Value(), h.app.prompt.textOf(fieldCFG), h.app.prompt.textOf(fieldSeed))
	}
	h.keys("alt+3", "r")
	h.waitFor("re-run done", func(a *App) bool { return len(a.done) == 3 })
	if r := h.app.done[0].Req; r.Prompt != "first" || r.CFG != 4.5 || r.Seed != 3 {
		t.Errorf("re-run of the selected item: %+v", r)
	}
}

func TestQuitAsksWithWorkInFlight(t *testing.T) {
	fake := tinyModels()
	fake.gate = make(chan struct{})
	h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.fill("slow")
	h.keys("ctrl+g")
	h.waitFor("running", func(a *App) bool { return a.running != nil })
	h.keys("ctrl+c")
	h.settle()
	if h.quit || h.app.overlay != overlayQuit {
		t.Fatalf("quit=%v overlay=%v; want the question", h.quit, h.app.overlay)
	}
	if !strings.Contains(h.screen(), "1 job(s) queued or running will be lost") {
		t.Errorf("no question on screen:\n%s", h.screen())
	}
	h.keys("n")
	h.settle()
	if h.quit || h.app.overlay != overlayNone {
		t.Fatalf("n: quit=%v overlay=%v", h.quit, h.app.overlay)
	}
	h.keys("ctrl+c", "y")
	h.until("quit", func() bool { return h.quit })
	h.waitFor("running job cancelled", func(a *App) bool { return a.jobs[0].State == JobCancelled })
}

func TestQuitIdleIsImmediate(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{mode: termimg.ModeHalfblock})
	h.keys("alt+2", "q")
	h.until("q to quit", func() bool { return h.quit })
}

func TestNoModel(t *testing.T) {
	fake := &fakePipeline{dirs: []string{"/home/u/.local/share/darkroom/models"}}
	h := newHarness(t, fake, harnessOpts{mode: termimg.ModeHalfblock})
	if !strings.Contains(h.app.logMsg, "--models") || !h.app.logErr {
		t.Errorf("log line %q does not mention --models", h.app.logMsg)
	}
	h.typeText("x")
	h.keys("ctrl+g")
	if len(h.app.jobs) != 0 || !strings.Contains(h.app.logMsg, "no model selected") {
		t.Errorf("jobs %d, log %q", len(h.app.jobs), h.app.logMsg)
	}
	h.keys("ctrl+o")
	if !strings.Contains(h.screen(), "No model found.") {
		t.Errorf("picker:\n%s", h.screen())
	}
}

func TestBuiltinModelOnly(t *testing.T) {
	fake := &fakePipeline{models: []engine.ModelEntry{{Name: engine.DefaultModel, Path: engine.DefaultModel}}, dirs: []string{"/nowhere"}}
	h := newHarness(t, fake, harnessOpts{mode: termimg.ModeHalfblock})
	if h.app.prompt.Model() != engine.DefaultModel {
		t.Errorf("model %q, want the built-in %q", h.app.prompt.Model(), engine.DefaultModel)
	}
	if !strings.Contains(h.app.logMsg, "--models") || !strings.Contains(h.app.logMsg, "/nowhere") {
		t.Errorf("log line %q should name the folder and --models", h.app.logMsg)
	}
	// A user model is preferred over the built-in one.
	fake.models = append(fake.models, engine.ModelEntry{Name: "mine", Path: "/m/mine.safetensors"})
	h2 := newHarness(t, fake, harnessOpts{mode: termimg.ModeHalfblock})
	if h2.app.prompt.Model() != "mine" {
		t.Errorf("model %q, want mine", h2.app.prompt.Model())
	}
}

func TestModelPicker(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{mode: termimg.ModeHalfblock})
	if h.app.prompt.Model() != "sd15" || !strings.Contains(h.app.logMsg, "2 models found; using sd15") {
		t.Errorf("two models: preselected %q (want the first, sd15), log %q", h.app.prompt.Model(), h.app.logMsg)
	}
	h.keys("ctrl+o", "down", "enter")
	if h.app.prompt.Model() != "tiny" || h.app.overlay != overlayNone {
		t.Errorf("picked %q, overlay %v", h.app.prompt.Model(), h.app.overlay)
	}
	h.app.prompt.Focus(fieldModel)
	h.keys("right")
	if h.app.prompt.Model() != "sd15" {
		t.Errorf("→ on model: %q, want sd15 (wraps)", h.app.prompt.Model())
	}
}

func TestInvalidRequest(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.fill("x")
	h.setField(fieldSize, "65x64")
	h.keys("ctrl+g")
	if len(h.app.jobs) != 0 || !strings.Contains(h.app.logMsg, "multiple of 8") {
		t.Errorf("jobs %d, log %q", len(h.app.jobs), h.app.logMsg)
	}
}

func TestGraphicsSixel(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeSixel})
	h.fill("x")
	h.keys("ctrl+g")
	h.waitFor("done", func(a *App) bool { return len(a.done) == 1 })
	h.until("a sixel", func() bool { return len(h.raw) > 0 && strings.Contains(h.raw[len(h.raw)-1], "\x1bP") })
	h.settle()
	last := h.raw[len(h.raw)-1]
	_, x, y, w, hh := h.app.previewTarget()
	cols, _ := h.app.preview.cells(h.app.lastImage, w, hh)
	erase := "\x1b7\x1b[" + strconv.Itoa(y+1) + ";" + strconv.Itoa(x+1) + "H\x1b[" + strconv.Itoa(w) + "X"
	want := "\x1b[" + strconv.Itoa(y+1) + ";" + strconv.Itoa(x+1+(w-cols)/2) + "H\x1bP"
	if !strings.HasPrefix(last, erase) || !strings.Contains(last, want) || !strings.HasSuffix(last, "\x1b\\\x1b8") {
		t.Errorf("sixel framing: %q…%q, want prefix %q and %q", last[:min(40, len(last))], last[max(0, len(last)-6):], erase, want)
	}
	if n := strings.Count(last[:strings.Index(last, "\x1bP")], "X"); n != hh {
		t.Errorf("erased %d rows, want %d", n, hh)
	}
	// The frame leaves blank cells under the image.
	lines := strings.Split(h.screen(), "\n")
	if body := string([]rune(lines[y])[x : x+w]); strings.TrimSpace(body) != "" {
		t.Errorf("preview body not blank: %q", body)
	}
	// Opening an overlay and closing it draws the image again.
	n := len(h.raw)
	h.keys("alt+2", "?")
	h.settle()
	h.keys("esc")
	h.until("the redraw", func() bool { return len(h.raw) > n })
	h.settle()
	if len(h.raw) != n+1 {
		t.Errorf("%d sixel writes after closing help, want 1", len(h.raw)-n)
	}
}

func TestGraphicsKitty(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeKitty})
	h.fill("x")
	h.keys("ctrl+g")
	h.waitFor("done", func(a *App) bool { return len(a.done) == 1 })
	h.until("an upload", func() bool { return len(h.raw) > 0 && h.app.running == nil })
	h.settle()
	if len(h.raw) == 0 || !strings.HasPrefix(h.raw[len(h.raw)-1], "\x1b_Ga=T,U=1,f=100,i=42,") {
		t.Fatalf("no kitty upload: %d writes", len(h.raw))
	}
	if !strings.Contains(h.app.View().Content, string(termimg.KittyPlaceholder)) {
		t.Error("no placeholders in the frame")
	}
	for i, l := range strings.Split(h.app.View().Content, "\n") {
		if w := ansi.StringWidth(l); w != 80 {
			t.Errorf("line %d is %d cells wide with placeholders", i, w)
		}
	}
}

func TestDA1UpgradesToSixel(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{mode: termimg.ModeHalfblock, auto: true})
	h.send(uv.PrimaryDeviceAttributesEvent{63, 1, 2, 4, 6, 9})
	if m := h.app.preview.Mode(); m != termimg.ModeSixel {
		t.Errorf("mode %v after DA1 with 4, want sixel", m)
	}
	h2 := newHarness(t, tinyModels(), harnessOpts{mode: termimg.ModeHalfblock})
	h2.send(uv.PrimaryDeviceAttributesEvent{63, 4})
	if m := h2.app.preview.Mode(); m != termimg.ModeHalfblock {
		t.Errorf("explicit halfblock changed to %v", m)
	}
}

func TestResize(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{mode: termimg.ModeHalfblock})
	for _, sz := range [][2]int{{80, 24}, {132, 43}, {100, 30}, {79, 24}, {80, 23}, {60, 18}, {70, 19}, {59, 24}, {80, 17}, {200, 60}} {
		h.send(tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		lines := strings.Split(h.app.View().Content, "\n")
		if len(lines) != sz[1] {
			t.Errorf("%dx%d: %d lines", sz[0], sz[1], len(lines))
		}
		small := sz[0] < 60 || sz[1] < 18 // the minimum; 80×23 (tmux) and down to 60×18 work
		if got := strings.Contains(h.screen(), "Terminal too small"); got != small {
			t.Errorf("%dx%d: too-small message %v, want %v", sz[0], sz[1], got, small)
		}
		for i, l := range lines {
			if w := ansi.StringWidth(l); w != sz[0] {
				t.Errorf("%dx%d: line %d is %d cells wide", sz[0], sz[1], i, w)
			}
		}
		if !small && !strings.Contains(h.screen(), "Prompt") {
			t.Errorf("%dx%d: no prompt pane:\n%s", sz[0], sz[1], h.screen())
		}
		for _, k := range []string{"f1", "ctrl+o"} { // overlays fit too
			h.keys(k)
			for i, l := range strings.Split(h.app.View().Content, "\n") {
				if w := ansi.StringWidth(l); w != sz[0] {
					t.Errorf("%dx%d %s: line %d is %d cells wide", sz[0], sz[1], k, i, w)
				}
			}
			h.keys("esc")
		}
	}
}

func TestMouse(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	for _, p := range []string{"one", "two", "three"} {
		h.fill(p)
		h.keys("ctrl+g")
	}
	h.waitFor("all done", func(a *App) bool { return len(a.done) == 3 })
	click := func(x, y int) { h.send(tea.MouseClickMsg{X: x, Y: y, Button: tea.MouseLeft}) }
	click(30, 9) // "cfg" (right half of the steps/cfg row)
	if h.app.focus != panePrompt || h.app.prompt.focus != fieldCFG {
		t.Errorf("click on cfg: focus %v field %v", h.app.focus, h.app.prompt.focus)
	}
	click(30, 12) // the options line, a whole row
	if h.app.focus != panePrompt || h.app.prompt.focus != fieldOptions {
		t.Errorf("click on options: focus %v field %v", h.app.focus, h.app.prompt.focus)
	}
	click(5, 16) // queue row 2 (#2): the box starts at row 14
	if h.app.focus != paneQueue || h.app.queue.Selected() != 1 {
		t.Errorf("click on queue row 2: focus %v sel %d", h.app.focus, h.app.queue.Selected())
	}
	h.send(tea.MouseWheelMsg{X: 5, Y: 16, Button: tea.MouseWheelDown})
	if h.app.queue.Selected() != 2 {
		t.Errorf("wheel down: sel %d, want 2", h.app.queue.Selected())
	}
	click(60, 5) // the preview: nothing changes
	if h.app.focus != paneQueue {
		t.Errorf("click on preview changed focus to %v", h.app.focus)
	}
	if h.app.View().MouseMode != tea.MouseModeCellMotion {
		t.Error("mouse not enabled")
	}
}

func TestCellSizeRedraws(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeSixel})
	h.fill("x")
	h.keys("ctrl+g")
	h.waitFor("done", func(a *App) bool { return len(a.done) == 1 })
	h.until("a sixel", func() bool { return len(h.raw) > 0 && strings.Contains(h.raw[len(h.raw)-1], "\x1bP") })
	h.settle()
	n := len(h.raw)
	h.send(uv.CellSizeEvent{Width: 8, Height: 16})
	h.until("the redraw", func() bool { return len(h.raw) > n })
	h.settle()
	if len(h.raw) != n+1 {
		t.Fatalf("%d writes after the cell size changed, want 1", len(h.raw)-n)
	}
	// 64×64 image in a 34×15-cell body of 8×16-pixel cells: 240×240 px.
	if !strings.Contains(h.raw[n], "\"1;1;240;240") {
		t.Errorf("sixel not resized for 8×16 cells: %q", h.raw[n][:min(80, len(h.raw[n]))])
	}
}

// In the compact layout (80×23, tmux) clicks find the fields and the
// queue where the shorter prompt box draws them (the negative prompt
// beside its label).
func TestMouseCompact(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{w: 80, h: 23, model: "tiny", mode: termimg.ModeHalfblock})
	click := func(x, y int) { h.send(tea.MouseClickMsg{X: x, Y: y, Button: tea.MouseLeft}) }
	for _, c := range []struct {
		x, y int
		want field
	}{{5, 2, fieldPrompt}, {5, 3, fieldNegative}, {30, 6, fieldCFG}, {5, 7, fieldSeed}, {30, 7, fieldSize}, {5, 8, fieldBatch}, {30, 9, fieldOptions}} {
		click(c.x, c.y)
		if h.app.focus != panePrompt || h.app.prompt.focus != c.want {
			t.Errorf("click at %d,%d: focus %v field %v, want %v", c.x, c.y, h.app.focus, h.app.prompt.focus, c.want)
		}
	}
	click(5, 12) // the queue box starts at row 11
	if h.app.focus != paneQueue {
		t.Errorf("click on the queue: focus %v", h.app.focus)
	}
}

// A broken file (first by name) is listed and marked, never preselected,
// refused by the picker with its reason and skipped by ←/→ (issue 23
// bug 7).
func TestBrokenModelNotPreselected(t *testing.T) {
	fake := tinyModels()
	fake.models = append([]engine.ModelEntry{{Name: "broken", Path: "/m/broken.safetensors", Size: 29, Broken: "/m/broken.safetensors: header length 0x746f6e is past the end of the 29-byte file"}}, fake.models...)
	h := newHarness(t, fake, harnessOpts{mode: termimg.ModeHalfblock})
	if h.app.prompt.Model() != "sd15" || !strings.Contains(h.app.logMsg, "2 models found; using sd15") || !strings.Contains(h.app.logMsg, "1 broken") {
		t.Errorf("preselected %q, log %q", h.app.prompt.Model(), h.app.logMsg)
	}
	h.keys("ctrl+o")
	h.app.pickSel = 0
	if sc := h.screen(); !strings.Contains(sc, "broken") || !strings.Contains(sc, "header length") {
		t.Errorf("picker does not mark the broken file:\n%s", sc)
	}
	h.keys("enter")
	if h.app.prompt.Model() != "sd15" || h.app.overlay != overlayPicker || !strings.Contains(h.app.logMsg, "broken: ") {
		t.Errorf("picked broken: model %q overlay %v log %q", h.app.prompt.Model(), h.app.overlay, h.app.logMsg)
	}
	h.keys("esc")
	h.app.prompt.Focus(fieldModel)
	h.keys("alt+1")
	for h.app.prompt.focus != fieldModel {
		h.keys("tab")
	}
	h.keys("left")
	if h.app.prompt.Model() != "tiny" {
		t.Errorf("← from sd15: %q, want tiny (the broken file skipped)", h.app.prompt.Model())
	}
}

// A job built with the options line carries them into its request (and
// the engine's, and the PNG); a bad entry or a field with its own input
// is refused on the log line, and nothing queued is lost; the queue and
// history show the options, recalling a job restores them and re-running
// keeps them.
func TestFlowOptions(t *testing.T) {
	fake := tinyModels()
	fake.gate = make(chan struct{})
	h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.fill("a cat")
	h.setOptions("guidance=3.5 denoise=0.5 init-image=x.png")
	h.keys("ctrl+g")
	h.fill("a dog")
	h.setOptions("hires=2 lora=style:0.8 lora=detail") // shown in the field table's order
	h.keys("ctrl+g")
	if len(h.app.jobs) != 2 {
		t.Fatalf("%d jobs, want 2 (log %q)", len(h.app.jobs), h.app.logMsg)
	}
	want := engine.DefaultRequest()
	want.Model, want.Prompt, want.Seed, want.Steps, want.Width, want.Height = "tiny", "a cat", 1, 4, 64, 64
	want.Guidance, want.Denoise, want.InitImage = 3.5, 0.5, "x.png"
	if got := h.app.jobs[0].Req; !reflect.DeepEqual(got, want) {
		t.Errorf("job 1 request\n got %+v\nwant %+v", got, want)
	}
	if r := h.app.jobs[1].Req; r.Hires != 2 || !reflect.DeepEqual(r.LoRAs, []string{"style:0.8", "detail"}) || r.Guidance != 0 || r.InitImage != "" {
		t.Errorf("job 2 request %+v", r)
	}
	h.waitFor("job 1 running", func(a *App) bool { return a.jobs[0].State == JobRunning })
	if scr := h.screen(); !strings.Contains(scr, "#2  queued  64×64 euler 4 steps lora=styl…") {
		t.Errorf("queued row without its options:\n%s", scr)
	}

	// Refused entries: one line each, the job list untouched.
	for _, c := range []struct{ options, log string }{
		{"denoise=2", "Not enqueued: options: denoise 2: must be more than 0 and at most 1 (0 means 1)"},
		{"steps=30", "Not enqueued: options: steps: use the steps field above, not options"},
		{"guidence=3.5", `Not enqueued: options: unknown option "guidence" (did you mean guidance?)`},
		{`init-image="my photo.png`, `Not enqueued: options: unterminated " quote in init-image="my photo.png`},
	} {
		h.setOptions(c.options)
		h.keys("ctrl+g")
		if h.app.logMsg != c.log || !h.app.logErr {
			t.Errorf("%s: log %q (error %v), want %q", c.options, h.app.logMsg, h.app.logErr, c.log)
		}
		if !strings.Contains(h.screen(), c.log) {
			t.Errorf("%s: the error is not on screen:\n%s", c.options, h.screen())
		}
		if len(h.app.jobs) != 2 || h.app.jobs[0].State != JobRunning || h.app.jobs[1].State != JobQueued {
			t.Errorf("%s: jobs %s changed", c.options, ids(h.app.jobs))
		}
		if h.app.prompt.Options() != c.options {
			t.Errorf("%s: options line now %q, want it kept for fixing", c.options, h.app.prompt.Options())
		}
	}

	step(fake, 4)
	h.waitFor("job 2 running", func(a *App) bool { return a.jobs[1].State == JobRunning })
	step(fake, 4)
	h.waitFor("both done", func(a *App) bool { return len(a.done) == 2 })
	if got := fake.calls[0]; got.Guidance != 3.5 || got.Denoise != 0.5 || got.InitImage != "x.png" {
		t.Errorf("engine request %+v", got)
	}
	saved, err := engine.RequestFromPNG(h.app.jobs[0].Paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if saved.Guidance != 3.5 || saved.Denoise != 0.5 || saved.InitImage != "x.png" {
		t.Errorf("PNG request %+v", saved)
	}

	// History: the options show under the list; enter recalls them.
	h.setOptions("")
	h.keys("alt+3", "down")
	if scr := h.screen(); !strings.Contains(scr, "seed 1 · 64×64 ×1 · 0.0s · guidance=3.5 d…") {
		t.Errorf("history item without its options:\n%s", scr)
	}
	h.keys("enter")
	if got, want := h.app.prompt.Options(), "guidance=3.5 denoise=0.5 init-image=x.png"; got != want {
		t.Errorf("recalled options %q, want %q", got, want)
	}
	h.keys("alt+3", "r")
	h.waitFor("re-run queued", func(a *App) bool { return len(a.jobs) == 3 })
	if r := h.app.jobs[2].Req; r.Guidance != 3.5 || r.Denoise != 0.5 || r.InitImage != "x.png" || r.Seed == 1 {
		t.Errorf("re-run request %+v", r)
	}
	step(fake, 4)
	h.waitFor("re-run done", func(a *App) bool { return len(a.done) == 3 })
}

// With the cursor in the options line the key hints row names the
// options matching the word typed; with no hints row (under 20 rows) the
// log row does, unless it holds an error.
func TestOptionsHintLine(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	last := func() string {
		lines := strings.Split(h.screen(), "\n")
		return lines[len(lines)-1]
	}
	logRow := func() string {
		lines := strings.Split(h.screen(), "\n")
		return lines[len(lines)-2]
	}
	h.setOptions("guidance=3.5 den")
	if got := last(); !strings.HasPrefix(got, "denoise denoising strength, more than 0 and at most 1 (default 1: a… · also d") {
		t.Errorf("hint row %q", got)
	}
	if !strings.HasPrefix(logRow(), "Welcome to darkroom") {
		t.Errorf("log row %q changed by the hint", logRow())
	}
	h.keys("left", "left", "left", "left", "left")
	if got := last(); !strings.HasPrefix(got, "guidance embedded guidance of a guidance-distilled model") {
		t.Errorf("hint for the word under the cursor: %q", got)
	}
	h.keys("ctrl+e")
	h.typeText(" ")
	if got := last(); !strings.HasPrefix(got, "options name=value, e.g. init-image=x.png") {
		t.Errorf("hint between words: %q", got)
	}
	h.keys("alt+2")
	if got := last(); !strings.HasPrefix(got, "ctrl+g enqueue") {
		t.Errorf("key hints not back in the queue: %q", got)
	}

	h.send(tea.WindowSizeMsg{Width: 60, Height: 18})
	h.setOptions("mask-b")
	if got := last(); !strings.HasPrefix(got, "mask-blur inpaint: feather the mask") {
		t.Errorf("hint on the log row at 60×18: %q", got)
	}
	h.setOptions("mask-blur=999")
	h.keys("ctrl+g")
	if got := last(); !strings.HasPrefix(got, "Not enqueued: options: mask-blur 999: must be") {
		t.Errorf("the error gave way to the hint: %q", got)
	}
}

// The engine's own checks of an option, made when the job runs, fail the
// job with the option named as the options line spells it.
func TestOptionFailureNamesOption(t *testing.T) {
	fake := tinyModels()
	fake.fail["no t5"] = &engine.FieldError{Field: "max_sequence_length", Value: 300, Msg: "this model has no T5 text encoder"}
	fake.fail["bad size"] = &engine.FieldError{Field: "width", Value: 64, Msg: "too small for this model"}
	h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.fill("no t5")
	h.setOptions("max-sequence-length=300")
	h.keys("ctrl+g")
	h.fill("bad size")
	h.setOptions("")
	h.keys("ctrl+g")
	h.waitFor("both failed", func(a *App) bool { return len(a.jobs) == 2 && a.jobs[1].State == JobFailed })
	if got, want := h.app.jobs[0].Err, "max-sequence-length 300: this model has no T5 text encoder"; got != want {
		t.Errorf("option failure %q, want %q", got, want)
	}
	if got, want := h.app.jobs[1].Err, "width 64: too small for this model"; got != want {
		t.Errorf("own field failure %q, want %q", got, want)
	}
}
