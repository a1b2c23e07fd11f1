package tui

import (
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
)

// remoteMsg carries a sample of the server's queue.
type remoteMsg struct {
	Jobs []RemoteJob
	Err  error
}

// remoteInterval is how often the queue pane reads the server's queue.
const remoteInterval = time.Second

// pollRemote returns a command that reads the server's queue after delay.
func pollRemote(q RemoteQueue, delay time.Duration) tea.Cmd {
	return tea.Tick(delay, func(time.Time) tea.Msg {
		jobs, err := q.RemoteJobs()
		return remoteMsg{Jobs: jobs, Err: err}
	})
}

// setRemote stores a sample of the server's queue: the other jobs for
// the list, and whether the TUI's running job (Here) still waits there.
func (a *App) setRemote(m remoteMsg) {
	a.remote, a.remoteErr, a.remoteValid = nil, m.Err, true
	var here *RemoteJob
	for i, j := range m.Jobs {
		if j.Here {
			here = &m.Jobs[i]
			continue
		}
		a.remote = append(a.remote, j)
	}
	if r := a.running; r != nil && m.Err == nil {
		r.Waiting = here != nil && here.State == JobQueued
		if r.Waiting {
			r.Ahead = here.Position
		}
	}
}

// queueSplit divides the queue pane's n rows between the TUI's own jobs
// and the server's queue (a heading row and its jobs, or the error that
// hides them): the server's part gets what the own jobs leave, and at
// least two rows (or half) when both do not fit.
func (a *App) queueSplit(n int) (own, remote int) {
	if a.cfg.Remote == nil {
		return n, 0
	}
	want := 1 + max(1, len(a.remote))
	if a.remoteErr != nil {
		want = 2
	}
	ownRows := max(1, len(a.jobs))
	remote = min(want, max(n-ownRows, min(2, n/2)))
	return n - remote, remote
}

// remoteRows renders the heading and the server's jobs in n rows of inner
// width iw.
func (a *App) remoteRows(iw, n int) []string {
	s := a.c.Styles
	if n <= 0 {
		return nil
	}
	heading := func(text string) string {
		t := "─ server queue: " + text + " "
		if pad := iw - lipgloss.Width(t); pad > 0 {
			return s.Muted.Render(t + strings.Repeat("─", pad))
		}
		return s.Muted.Render(ansiTrunc(t, iw))
	}
	var out []string
	switch {
	case a.remoteErr != nil:
		out = append(out, heading("unreadable"), s.LogError.Render(ansiTrunc(a.remoteErr.Error(), iw)))
	case !a.remoteValid:
		out = append(out, heading("reading…"))
	case len(a.remote) == 0:
		out = append(out, heading("no other jobs"))
	default:
		head := fmt.Sprintf("%d other job", len(a.remote))
		if len(a.remote) > 1 {
			head += "s"
		}
		out = append(out, heading(head))
		for _, j := range a.remote {
			out = append(out, a.remoteRow(j, iw))
		}
	}
	if len(out) > n {
		more := len(out) - n + 1
		out = append(out[:n-1], s.Muted.Render(ansiTrunc(fmt.Sprintf("… %d more", more), iw)))
	}
	return out
}

// remoteRow renders one job of the server's queue: its client (other
// clients' jobs are marked with @NAME), its state, and its size or its
// progress.
func (a *App) remoteRow(j RemoteJob, iw int) string {
	s := a.c.Styles
	st := map[JobState]lipgloss.Style{JobQueued: s.Queued, JobRunning: s.Running}[j.State]
	who := "@" + j.Client
	if j.Mine {
		who = "mine"
	}
	head := s.Muted.Render(fitWidth(who, 9)) + " " + st.Render(fmt.Sprintf("%-7s", j.State)) + " "
	rest := iw - lipgloss.Width(head)
	if j.State == JobRunning {
		info := fmt.Sprintf(" %d/%d %s", j.Step, j.Total, j.Worker)
		if j.Total == 0 { // loading the model, encoding the prompt
			info = strings.TrimRight(" "+j.Phase+" "+j.Worker, " ")
		}
		if barW := rest - lipgloss.Width(info); barW >= 4 && j.Total > 0 {
			return head + a.c.Gauge(float64(j.Step)/float64(j.Total), barW, false) + s.Muted.Render(ansiTrunc(info, rest-barW))
		}
		return head + s.Muted.Render(ansiTrunc(info[1:], rest))
	}
	desc := ""
	if j.Width > 0 && j.Height > 0 {
		desc = fmt.Sprintf("%d×%d ", j.Width, j.Height)
	}
	if j.Steps > 0 {
		desc += fmt.Sprintf("%d steps ", j.Steps)
	}
	desc += modelName(j.Model)
	if j.Mine && j.Prompt != "" {
		desc = fmt.Sprintf("%q %s", j.Prompt, desc)
	}
	return head + s.Muted.Render(ansiTrunc(desc, rest))
}
