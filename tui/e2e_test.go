package tui_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// TestTmuxEndToEnd runs the TUI with the real engine and the tiny
// reference model inside tmux: it types a prompt, enqueues two jobs,
// watches them go queued → running → done, cancels one and checks the
// PNGs on disk; then a script on the : command line runs a job through
// the queue.
func TestTmuxEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed (apt-get install -y tmux); skipping the end-to-end TUI test")
	}
	model, err := filepath.Abs("../testdata/reference/sd1-tiny-a/single.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(model); err != nil {
		t.Skipf("reference model missing: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "darkroom-e2e")
	build := exec.Command("go", "build", "-o", bin, "./internal/e2e")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	models, out := filepath.Join(dir, "models"), filepath.Join(dir, "out")
	if err := os.MkdirAll(models, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(model, filepath.Join(models, "tiny.safetensors")); err != nil {
		t.Fatal(err)
	}
	sock := fmt.Sprintf("darkroom-e2e-%d", os.Getpid())
	tm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cmd := fmt.Sprintf("%s -models %s -out %s -log %s -graphics halfblock", bin, models, out, filepath.Join(dir, "tui.log"))
	tm("-f", "/dev/null", "new-session", "-d", "-s", "e2e", "-x", "80", "-y", "24", "env TERM=xterm-256color "+cmd+"; sleep 60")
	t.Cleanup(func() { exec.Command(tmux, "-L", sock, "kill-server").Run() })
	screen := func() string { return tm("capture-pane", "-p", "-t", "e2e") }
	waitFor := func(what string, cond func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			s := screen()
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; screen:\n%s\nlog:\n%s", what, s, readFile(filepath.Join(dir, "tui.log")))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	has := func(subs ...string) func(string) bool {
		return func(s string) bool {
			for _, sub := range subs {
				if !strings.Contains(s, sub) {
					return false
				}
			}
			return true
		}
	}
	keys := func(k ...string) { tm(append([]string{"send-keys", "-t", "e2e"}, k...)...) }
	text := func(s string) { tm("send-keys", "-t", "e2e", "-l", s) }
	// setField tabs n times from the prompt, clears the field and types v.
	setField := func(tabs int, v string) {
		keys("M-1")
		for range tabs {
			keys("Tab")
		}
		for range 10 {
			keys("BSpace")
		}
		text(v)
	}

	waitFor("the model", has("model   tiny", "Queue (0)"))
	text("a lighthouse at dusk")
	// Tab order from the prompt: negative, model, sampler, sched, steps, cfg, seed, size, batch, options.
	setField(5, "30") // slow enough (seconds) to watch and to cancel
	setField(8, "128x128")
	keys("C-g")
	keys("C-g")
	waitFor("#1 running, #2 queued", has("#1  running", "#2  queued"))
	waitFor("#1 done, #2 running", has("#1  done", "#2  running"))
	keys("C-x")
	waitFor("#2 cancelled", has("#2  cancelled", "Cancelled #2."))
	setField(5, "8")
	setField(8, "64x64")
	setField(10, "variation-seed=7 variation-strength=0.3") // the options line, on the real engine
	keys("C-g")
	s := waitFor("#3 done", has("#3  done", "#3 done in"))
	if !strings.Contains(s, "#1  done") {
		t.Errorf("job 1 no longer done:\n%s", s)
	}
	pngs, _ := filepath.Glob(filepath.Join(out, "*.png"))
	if len(pngs) != 2 {
		t.Fatalf("PNGs %v, want jobs 1 and 3", pngs)
	}
	for _, want := range []string{"-001-", "-003-"} {
		found := false
		for _, p := range pngs {
			if strings.Contains(filepath.Base(p), want) {
				found = true
				if st, err := os.Stat(p); err != nil || st.Size() < 100 {
					t.Errorf("%s: %v", p, err)
				}
			}
		}
		if !found {
			t.Errorf("no PNG for job %s in %v", want, pngs)
		}
	}
	// Job 3's options reached the engine and its PNG.
	for _, p := range pngs {
		if strings.Contains(filepath.Base(p), "-003-") {
			req, err := engine.RequestFromPNG(p)
			if err != nil || req.VariationSeed != 7 || req.VariationStrength != 0.3 {
				t.Errorf("%s: request %+v (%v), want variation seed 7 at 0.3", p, req, err)
			}
		}
	}
	// The PNGs carry the model hash, as gen's do.
	if f, err := os.Open(pngs[0]); err == nil {
		text, err := engine.ReadPNGText(f)
		f.Close()
		if err != nil || !strings.Contains(text[engine.ChunkParameters], "Model hash: ") {
			t.Errorf("%s: no model hash in %q (%v)", pngs[0], text[engine.ChunkParameters], err)
		}
	}
	// tmux in an 80×24 terminal gives an 80×23 pane: the compact layout,
	// not a wall.
	tm("resize-window", "-t", "e2e", "-x", "80", "-y", "23")
	if h := strings.TrimSpace(tm("display-message", "-p", "-t", "e2e", "#{pane_height}")); h != "23" {
		t.Fatalf("pane height %s after resize, want 23", h)
	}
	waitFor("the compact layout at 80×23", func(s string) bool {
		// Redrawn for 23 rows: the boxes end on row 21 (at 24 rows, on 22).
		lines := strings.Split(s, "\n")
		return len(lines) > 20 && strings.HasPrefix(lines[20], "╰") && strings.Contains(s, "Queue (3)") && !strings.Contains(s, "too small")
	})
	// The : command line: a script's generate call runs as job #4 in the
	// queue, on the real engine, and the script gets its result.
	keys("M-2")
	text(":")
	waitFor("the command line", has("enter run"))
	text(`req := engine.DefaultRequest(); req.Model, req.Prompt = "tiny", "scripted"; req.Width, req.Height, req.Steps, req.Seed = 64, 64, 4, 99`)
	keys("Enter")
	text(`res, err := generate(ctx, req, nil); check(err); fmt.Sprint(eng != nil, len(res.Images), res.Request.Seed)`)
	keys("Enter")
	waitFor("#4 done by the script", has("#4  done    s", "= true 1 99"))
	keys("Escape")
	waitFor("the command line closed", func(s string) bool { return !strings.Contains(s, "enter run") })
	// Quit: nothing in flight, so q in the queue pane exits at once.
	keys("M-2", "q")
	waitFor("exit", func(s string) bool { return !strings.Contains(s, "Queue (") })
	if log := readFile(filepath.Join(dir, "tui.log")); !strings.Contains(log, "job done") || !strings.Contains(log, "tui exit") {
		t.Errorf("log file lacks job/exit records:\n%s", log)
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
