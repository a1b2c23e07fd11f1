package tui

import (
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script"
	"github.com/darkroom-ai/darkroom/termimg"
)

// openScript opens the command line from the queue pane.
func (h *harness) openScript() {
	h.t.Helper()
	h.keys("alt+2", ":")
	if !h.app.script.Open() {
		h.t.Fatalf("command line not open after ':'")
	}
}

// eval types src on the open command line, presses Enter and waits for the
// evaluation to end.
func (h *harness) eval(src string) {
	h.t.Helper()
	h.typeText(src)
	h.keys("enter")
	if !h.app.script.Running() {
		h.t.Fatalf("%q did not start", src)
	}
	h.waitFor("evaluation of "+src, func(a *App) bool { return !a.script.Running() })
}

// lastLine is the transcript's last line.
func (h *harness) lastLine() string {
	l := h.app.script.Lines()
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

// scriptRequest is a cell building a small fast request for the fake.
// scriptRequest names no model: the job takes the prompt pane's ("tiny").
const scriptRequest = `req := engine.DefaultRequest(); req.Prompt = "from a script"; req.Width, req.Height, req.Steps, req.Seed = 64, 64, 3, 7`

func TestScriptLineValueAndState(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	// ':' typed in the prompt is text, not the command line.
	h.keys("alt+1")
	h.typeText("a:b")
	if h.app.script.Open() || h.app.prompt.prompt.Value() != "a:b" {
		t.Fatalf("':' while typing: open %v, prompt %q", h.app.script.Open(), h.app.prompt.prompt.Value())
	}
	h.keys("alt+;")
	if !h.app.script.Open() {
		t.Fatal("alt+; did not open the command line while typing")
	}
	h.keys("esc")
	if h.app.script.Open() {
		t.Fatal("esc did not close the idle command line")
	}

	h.openScript()
	h.eval("1+2")
	if got := h.lastLine(); got != "3" {
		t.Errorf("value line %q, want 3", got)
	}
	scr := h.screen()
	for _, want := range []string{"› 1+2", "\n3 ", "= 3", ": "} {
		if !strings.Contains(scr, want) {
			t.Errorf("screen lacks %q:\n%s", want, scr)
		}
	}
	// State persists across evaluations; printed output is shown.
	h.eval("x := 40")
	h.eval(`fmt.Println("hello", x); x + 2`)
	lines := h.app.script.Lines()
	if n := len(lines); n < 2 || lines[n-2] != "hello 40" || lines[n-1] != "42" {
		t.Errorf("transcript ends %q, want hello 40, 42", lines[max(0, n-3):])
	}
	// ↑ recalls the history.
	h.keys("up", "up")
	if got := h.app.script.edit.Value(); got != "x := 40" {
		t.Errorf("history recall %q, want x := 40", got)
	}
	// The layout still fills the screen exactly.
	frame := strings.Split(h.screen(), "\n")
	if len(frame) != 24 {
		t.Errorf("frame has %d lines, want 24", len(frame))
	}
}

func TestScriptLineErrors(t *testing.T) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.openScript()
	for _, tc := range []struct{ name, src, want string }{
		{"undefined", "nosuchname + 1", "undefined"},
		{"panic", `panic("boom")`, "boom"},
		{"syntax", "1 +* ", "Script error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			h.eval(tc.src)
			if !h.app.logErr || !strings.Contains(h.app.logMsg, tc.want) || strings.Contains(h.app.logMsg, "\n") {
				t.Errorf("log line %q (error %v), want one error line with %q", h.app.logMsg, h.app.logErr, tc.want)
			}
			if !strings.Contains(h.screen(), "Script error:") {
				t.Errorf("screen does not show the error:\n%s", h.screen())
			}
		})
	}
	h.t = t
	h.eval("2*21")
	if got := h.lastLine(); got != "42" || h.app.logErr {
		t.Errorf("after errors: %q (log error %v), want 42", got, h.app.logErr)
	}
}

func TestScriptLineGenerate(t *testing.T) {
	fake := tinyModels()
	fake.gate = make(chan struct{})
	h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.openScript()
	h.eval(scriptRequest)
	h.typeText(`res, err := generate(ctx, req, progress); check(err); fmt.Sprint(len(res.Images), " ", res.Images[0].Bounds().Dx(), " ", res.Request.Seed)`)
	h.keys("enter")
	h.waitFor("script job running", func(a *App) bool { return len(a.jobs) == 1 && a.jobs[0].State == JobRunning })
	j := h.app.jobs[0]
	if !j.Script || j.Req.Prompt != "from a script" || j.Req.Seed != 7 || j.Req.Model != "tiny" {
		t.Errorf("job %+v, want a script job with the script's request", j)
	}
	step(fake, 2)
	h.waitFor("step 2", func(a *App) bool { return j.Step == 2 })
	if j.Preview == nil {
		t.Error("script job has no live preview")
	}
	scr := h.screen()
	for _, want := range []string{"#1  running s ", "2/3", "#1 sample 2/3"} {
		if !strings.Contains(scr, want) {
			t.Errorf("screen lacks %q:\n%s", want, scr)
		}
	}
	step(fake, 1)
	h.waitFor("script done", func(a *App) bool { return !a.script.Running() })
	if j.State != JobDone || len(j.Paths) != 1 {
		t.Errorf("job %v, paths %v; want done with one PNG", j.State, j.Paths)
	}
	if got := h.lastLine(); got != "1 64 7" {
		t.Errorf("script value %q, want \"1 64 7\"; transcript %q", got, h.app.script.Lines())
	}
	// The progress callback ran on the script's side.
	if tr := strings.Join(h.app.script.Lines(), "\n"); !strings.Contains(tr, "step 3/3") {
		t.Errorf("transcript lacks the progress lines:\n%s", tr)
	}
	if len(h.app.done) != 1 || h.app.done[0] != j {
		t.Errorf("history %v, want the script job", h.app.done)
	}

	// Images the script shows go to the preview pane.
	h.eval("show(res.Images[0]); 0")
	if h.app.shown == nil || !strings.Contains(h.screen(), "shown by the script, 64×64") {
		t.Errorf("shown image %v; screen:\n%s", h.app.shown, h.screen())
	}
}

func TestScriptLineCancel(t *testing.T) {
	// A loop that checks ctx stops at once; one that ignores it is aborted
	// after the interpreter's grace period (2 s), the UI working meanwhile.
	for _, tc := range []struct{ name, loop string }{
		{"checks ctx", `for { check(ctx.Err()); n++; if n == 1 { fmt.Println("started") } }`},
		{"ignores ctx", `for { n++; if n == 1 { fmt.Println("started") } }`},
	} {
		t.Run(tc.name, func(t *testing.T) { testScriptLoopCancel(t, tc.loop) })
	}
	t.Run("jobs", func(t *testing.T) {

		fake := tinyModels()
		fake.gate = make(chan struct{})
		h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
		h.fill("typed job")
		h.keys("ctrl+g")
		h.waitFor("typed job running", func(a *App) bool { return len(a.jobs) == 1 && a.jobs[0].State == JobRunning })
		h.openScript()
		h.eval(scriptRequest)
		// Two script jobs: the first waits behind the typed one.
		h.typeText("for i := 0; i < 2; i++ { _, err := generate(ctx, req, nil); check(err) }")
		h.keys("enter")
		h.waitFor("script job queued", func(a *App) bool { return len(a.jobs) == 2 })
		if j := h.app.jobs[1]; j.State != JobQueued || !j.Script {
			t.Fatalf("script job %v (script %v), want queued", j.State, j.Script)
		}
		if !strings.Contains(h.screen(), "#2  queued  script") {
			t.Errorf("queue row lacks the script tag:\n%s", h.screen())
		}
		h.keys("ctrl+c") // cancels the script, not the program
		if h.quit || h.app.overlay != overlayNone {
			t.Fatal("ctrl+c while a script runs asked to quit")
		}
		h.waitFor("script interrupted", func(a *App) bool { return !a.script.Running() })
		if j := h.app.jobs[1]; j.State != JobCancelled {
			t.Errorf("queued script job is %v, want cancelled", j.State)
		}
		if len(h.app.jobs) != 2 {
			t.Errorf("%d jobs, want 2 (the loop stopped)", len(h.app.jobs))
		}
		if h.app.jobs[0].State != JobRunning {
			t.Errorf("typed job is %v, want still running", h.app.jobs[0].State)
		}
		step(fake, 4)
		h.waitFor("typed job done", func(a *App) bool { return a.jobs[0].State == JobDone })

		// A running script job stops with its script.
		h.typeText("_, err := generate(ctx, req, nil); err")
		h.keys("enter")
		h.waitFor("script job running", func(a *App) bool { return len(a.jobs) == 3 && a.jobs[2].State == JobRunning })
		step(fake, 1)
		h.keys("esc")
		h.waitFor("script job cancelled", func(a *App) bool { return a.jobs[2].State == JobCancelled && !a.script.Running() })
	})
	t.Run("removed", func(t *testing.T) {
		fake := tinyModels()
		fake.gate = make(chan struct{})
		h := newHarness(t, fake, harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
		h.fill("typed job")
		h.keys("ctrl+g")
		h.openScript()
		h.eval(scriptRequest)
		h.typeText("_, err := generate(ctx, req, nil); err")
		h.keys("enter")
		h.waitFor("script job queued", func(a *App) bool { return len(a.jobs) == 2 })
		// Close the line? It is running, so leave it open and remove the
		// job from the queue with the mouse-free path: select it directly.
		h.app.queue.Select(1, 2)
		h.app.removeSelected()
		h.waitFor("script answered", func(a *App) bool { return !a.script.Running() })
		if got := h.lastLine(); !strings.Contains(got, "job #2 removed from the queue") {
			t.Errorf("script got %q, want the removal error", got)
		}
		step(fake, 4)
	})
}

func TestScriptLineEngine(t *testing.T) {
	// Without an engine the prelude leaves out eng (nothing opens one
	// behind the TUI's back); with one, eng is the TUI's engine.
	if !strings.Contains(script.Prelude, "eng := dr.Engine()\n") {
		t.Fatal("script.Prelude no longer declares eng on its own line; update scriptSession.interpreter")
	}
	t.Run("none", func(t *testing.T) {
		h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
		h.openScript()
		h.eval("eng")
		if !h.app.logErr || !strings.Contains(h.app.logMsg, "undefined: eng") {
			t.Errorf("log line %q, want undefined: eng", h.app.logMsg)
		}
	})
	t.Run("cpu", func(t *testing.T) {
		eng, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{t.TempDir()}})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock, eng: eng})
		h.openScript()
		h.eval("eng == dr.Engine()")
		if got := h.lastLine(); got != "true" {
			t.Errorf("eng == dr.Engine() = %q, want true", got)
		}
		if h.app.sess.it == nil {
			t.Fatal("no interpreter")
		}
		if e, err := h.app.sess.it.Engine(); err != nil || e != eng {
			t.Errorf("session engine %p (%v), want the TUI's %p", e, err, eng)
		}
	})
}

// testScriptLoopCancel runs loop (which prints "started" on its first
// iteration), presses Esc and checks the cell was interrupted and the
// session lives on.
func testScriptLoopCancel(t *testing.T, loop string) {
	h := newHarness(t, tinyModels(), harnessOpts{model: "tiny", mode: termimg.ModeHalfblock})
	h.openScript()
	h.eval("n := 0")
	h.typeText(loop)
	h.keys("enter")
	h.until("loop running", func() bool { return h.lastLine() == "started" })
	h.keys("esc")
	if !h.app.script.Open() {
		t.Error("esc while running closed the line instead of cancelling")
	}
	// The UI takes keys while the cell winds down.
	h.typeText("x")
	if got := h.app.script.edit.Value(); got != "x" || !strings.Contains(h.app.logMsg, "Interrupting") {
		t.Errorf("while interrupting: line %q, log %q", got, h.app.logMsg)
	}
	h.keys("ctrl+u")
	h.waitFor("interrupted", func(a *App) bool { return !a.script.Running() })
	if got := h.lastLine(); got != "interrupted" {
		t.Errorf("last line %q, want interrupted", got)
	}
	h.eval("n > 0")
	if got := h.lastLine(); got != "true" {
		t.Errorf("n > 0 = %q after the interrupted loop, want true", got)
	}
}
