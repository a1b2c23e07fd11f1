package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/script"
)

// Kinds of transcript lines.
const (
	lineOutput = iota // printed by the script
	lineInput         // the evaluated source, echoed
	lineValue         // the cell's value
	lineError         // why the cell failed
)

// transcriptLine is one line of the command line's output area.
type transcriptLine struct {
	text string
	kind int
}

// scriptTranscriptMax is how many transcript lines are kept.
const scriptTranscriptMax = 200

// ScriptLine is the `:` command line: a one-line Go editor at the bottom
// of the screen whose Enter evaluates the text on the session's
// interpreter, and the output area above it (the last lines of the
// transcript).
type ScriptLine struct {
	c       *Common
	open    bool
	edit    textEdit
	lines   []transcriptLine
	partial bool // the last output line has no newline yet
	hist    []string
	histAt  int // index into hist while browsing; len(hist) otherwise
	running bool
	cancel  context.CancelFunc
	seq     int
}

// NewScriptLine returns a closed command line.
func NewScriptLine(c *Common) *ScriptLine {
	return &ScriptLine{c: c, edit: newTextEdit("Go, on the session interpreter: generate(ctx, req, progress)…", 1, true)}
}

// Open reports whether the command line is shown.
func (s *ScriptLine) Open() bool { return s.open }

// Running reports whether an evaluation is running.
func (s *ScriptLine) Running() bool { return s.running }

// Rows is the height of the output area for a terminal of height h.
func (s *ScriptLine) Rows(h int) int {
	return max(2, min(6, 3+(h-fullHeight)/4))
}

// Lines returns the transcript's text, oldest first.
func (s *ScriptLine) Lines() []string {
	out := make([]string, len(s.lines))
	for i, l := range s.lines {
		out[i] = l.text
	}
	return out
}

// add appends text as lines of kind; output without a final newline is
// continued by the next output.
func (s *ScriptLine) add(text string, kind int) {
	if text == "" {
		return
	}
	parts := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	if kind == lineOutput {
		if s.partial && len(s.lines) > 0 {
			s.lines[len(s.lines)-1].text += parts[0]
			parts = parts[1:]
		}
		s.partial = !strings.HasSuffix(text, "\n")
		if !s.partial {
			parts = parts[:len(parts)-1]
		}
	} else {
		s.partial = false
	}
	for _, p := range parts {
		s.lines = append(s.lines, transcriptLine{text: p, kind: kind})
	}
	if n := len(s.lines) - scriptTranscriptMax; n > 0 {
		s.lines = append(s.lines[:0], s.lines[n:]...)
	}
}

// View renders the output area (rows lines) and the input line, w cells
// wide.
func (s *ScriptLine) View(w, rows int) (area, input string) {
	st := s.c.Styles
	out := make([]string, 0, rows)
	first := max(0, len(s.lines)-rows)
	for i := 0; i < rows; i++ {
		if first+i >= len(s.lines) {
			out = append(out, strings.Repeat(" ", w))
			continue
		}
		l := s.lines[first+i]
		style := st.Muted
		switch l.kind {
		case lineOutput:
			style = st.TextareaText
		case lineValue:
			style = st.LogInfo
		case lineError:
			style = st.LogError
		}
		out = append(out, fitWidth(style.Render(ansiTrunc(strings.ReplaceAll(l.text, "\t", "    "), w)), w))
	}
	hint := "enter run · ↑/↓ history · esc close"
	if s.running {
		hint = "running… esc cancels"
	}
	hint = st.Muted.Render(" " + hint)
	prefix := st.HelpKey.Render(":") + " "
	ew := max(8, w-lipgloss.Width(prefix)-lipgloss.Width(hint))
	line := prefix + s.edit.View(ew, !s.running, st)
	return strings.Join(out, "\n"), fitWidth(ansiTrunc(line, w-lipgloss.Width(hint))+hint, w)
}

// openScript opens the command line.
func (a *App) openScript() tea.Cmd {
	a.script.open = true
	a.script.histAt = len(a.script.hist)
	a.layout()
	return nil
}

// scriptKey handles a key while the command line is open: Enter
// evaluates, Esc (or Ctrl-C) cancels a running evaluation and otherwise
// Esc closes, ↑/↓ browse the history, ctrl+x cancels the running job and
// other keys edit.
func (a *App) scriptKey(k tea.KeyPressMsg) tea.Cmd {
	s, keys := a.script, a.c.Keys
	switch {
	case k.String() == "esc":
		if s.running {
			a.cancelScript()
			return nil
		}
		s.open = false
		a.layout()
		return nil
	case key.Matches(k, keys.Quit):
		if s.running {
			a.cancelScript()
			return nil
		}
		return a.askQuit()
	case key.Matches(k, keys.Cancel):
		a.cancelRunning()
		return nil
	case k.String() == "enter":
		return a.evalScript()
	case k.String() == "ctrl+j" || k.String() == "shift+enter":
		s.edit.insert("\n")
		return nil
	case k.String() == "up" || k.String() == "down":
		d := 1
		if k.String() == "up" {
			d = -1
		}
		if i := s.histAt + d; i >= 0 && i <= len(s.hist) {
			s.histAt = i
			if i == len(s.hist) {
				s.edit.SetValue("")
			} else {
				s.edit.SetValue(s.hist[i])
			}
		}
		return nil
	}
	s.edit.Update(k, max(8, a.c.Width-2))
	return nil
}

// evalScript evaluates the command line's text off the UI goroutine.
func (a *App) evalScript() tea.Cmd {
	s := a.script
	src := strings.TrimSpace(s.edit.Value())
	if src == "" {
		return nil
	}
	if s.running {
		a.setLog(false, "A script is running; esc cancels it.")
		return nil
	}
	if len(s.hist) == 0 || s.hist[len(s.hist)-1] != src {
		s.hist = append(s.hist, src)
	}
	s.histAt = len(s.hist)
	s.edit.SetValue("")
	s.add("› "+src, lineInput)
	ctx, cancel := context.WithCancel(a.ctx)
	s.running, s.cancel = true, cancel
	s.seq++
	var cmds []tea.Cmd
	if a.sess == nil {
		a.sess = newScriptSession(a.ctx, a.cfg.Engine, a.modelDirs)
		a.sess.connect = a.cfg.Connect
		cmds = append(cmds, a.sess.listen())
	}
	cmds = append(cmds, a.sess.eval(ctx, s.seq, src))
	a.setLog(false, "Running the script… (esc cancels)")
	return tea.Batch(cmds...)
}

// cancelScript interrupts the running evaluation and drops the jobs it
// queued.
func (a *App) cancelScript() {
	s := a.script
	if !s.running || s.cancel == nil {
		return
	}
	s.cancel()
	a.dropCancelledScriptJobs()
	a.setLog(false, "Interrupting the script…")
}

// dropCancelledScriptJobs marks the queued jobs whose script call was
// cancelled as cancelled.
func (a *App) dropCancelledScriptJobs() {
	for _, j := range a.jobs {
		if j.sj != nil && j.State == JobQueued && j.sj.ctx.Err() != nil {
			j.State = JobCancelled
			j.sj.finish(nil, fmt.Errorf("job #%d: %w", j.ID, context.Canceled))
		}
	}
}

// onScriptDone shows an evaluation's value or error.
func (a *App) onScriptDone(m scriptDoneMsg) {
	s := a.script
	if m.Seq != s.seq || !s.running {
		return
	}
	s.running = false
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	a.dropCancelledScriptJobs()
	if a.sess != nil {
		s.add(a.sess.drain(), lineOutput)
	}
	switch {
	case m.Err != nil && errors.Is(m.Err, script.ErrInterrupted):
		s.add("interrupted", lineError)
		a.setLog(false, "Script interrupted.")
	case m.Err != nil:
		msg := m.Err.Error()
		s.add(msg, lineError)
		first, _, _ := strings.Cut(msg, "\n")
		a.setLog(true, "Script error: %s", first)
	case m.Value != "":
		s.add(m.Value, lineValue)
		first, _, more := strings.Cut(m.Value, "\n")
		if more {
			first += " …"
		}
		a.setLog(false, "= %s", first)
	default:
		a.setLog(false, "Script done.")
	}
}

// onScriptJob queues a job for a script's generate call.
func (a *App) onScriptJob(sj *scriptJob) tea.Cmd {
	if sj.ctx.Err() != nil {
		sj.finish(nil, fmt.Errorf("generate: %w", context.Canceled))
		return nil
	}
	// A request that names no model (a script's engine.DefaultRequest())
	// runs on the model selected in the prompt pane, not on "".
	if sj.req.Model == "" {
		sj.req.Model = a.prompt.Model()
	}
	j := &Job{ID: a.nextID, Req: sj.req, State: JobQueued, Script: true, sj: sj}
	a.nextID++
	a.jobs = append(a.jobs, j)
	a.setLog(false, "Script queued #%d (seed %d).", j.ID, sj.req.Seed)
	return a.startNext()
}

// scriptJobResult answers a finished script job's call.
func scriptJobResult(j *Job, m jobDoneMsg) (*engine.Result, error) {
	switch {
	case m.Cancelled:
		return nil, fmt.Errorf("job #%d cancelled: %w", j.ID, context.Canceled)
	case m.Err != nil:
		return nil, fmt.Errorf("job #%d: %w", j.ID, m.Err)
	case m.Result != nil:
		return m.Result, nil
	}
	return &engine.Result{Request: j.Req, Images: m.Images}, nil
}
