package tui

import (
	"fmt"
	"strings"
	"time"

	"charm.land/lipgloss/v2"
)

// QueuePane lists jobs: queued, running (progress bar, it/s, ETA), done,
// failed (with the reason) and cancelled.
type QueuePane struct {
	c   *Common
	sel int
}

// NewQueuePane returns an empty queue pane.
func NewQueuePane(c *Common) *QueuePane { return &QueuePane{c: c} }

// Clamp keeps the selection inside n jobs.
func (q *QueuePane) Clamp(n int) { q.sel = max(0, min(q.sel, n-1)) }

// Move moves the selection by d.
func (q *QueuePane) Move(d, n int) { q.sel += d; q.Clamp(n) }

// Selected returns the selected index.
func (q *QueuePane) Selected() int { return q.sel }

// Select sets the selected index.
func (q *QueuePane) Select(i, n int) { q.sel = i; q.Clamp(n) }

// Rows renders the job rows for an inner width iw and at most n rows,
// scrolled to keep the selection visible.
func (q *QueuePane) Rows(jobs []*Job, iw, n int, focused bool) []string {
	if len(jobs) == 0 {
		return []string{q.c.Styles.Muted.Render("No jobs. Write a prompt, then ctrl+g.")}
	}
	first := max(0, min(q.sel-n+1, len(jobs)-n))
	if q.sel < first {
		first = q.sel
	}
	var out []string
	for i := first; i < len(jobs) && len(out) < n; i++ {
		row := q.row(jobs[i], iw)
		if focused && i == q.sel {
			row = q.c.Styles.Selected.Render(fitWidth(stripANSI(row), iw))
		}
		out = append(out, row)
	}
	return out
}

func (q *QueuePane) row(j *Job, iw int) string {
	s := q.c.Styles
	st := map[JobState]lipgloss.Style{JobQueued: s.Queued, JobRunning: s.Running, JobDone: s.Done, JobFailed: s.Failed, JobCancelled: s.Cancelled}[j.State]
	name := j.State.String()
	if j.Cancelling {
		name = "stopping"
	}
	head := fmt.Sprintf("#%-2d ", j.ID) + st.Render(fmt.Sprintf("%-7s", name)) + " "
	// Script jobs are tagged "script", or "s" where a progress bar would
	// not fit beside the word.
	if j.Script {
		tag := "script"
		if (j.State == JobRunning || j.State == JobDone) && iw-lipgloss.Width(head)-len(tag)-1 < 24+8 {
			tag = "s"
		}
		head += s.Muted.Render(tag) + " "
	}
	rest := iw - lipgloss.Width(head)
	switch j.State {
	case JobQueued:
		desc := fmt.Sprintf("%d×%d %s %d steps", j.Req.Width, j.Req.Height, j.Req.Sampler, j.Req.Steps)
		if o := formatOptions(j.Req); o != "" {
			desc += " " + o
		}
		return head + s.Muted.Render(ansiTrunc(desc, rest))
	case JobFailed:
		return head + s.Failed.Render(ansiTrunc(j.Err, rest))
	case JobCancelled:
		return head + s.Muted.Render(ansiTrunc(fmt.Sprintf("at step %d/%d", j.Step, j.Total), rest))
	case JobRunning:
		if j.Waiting && j.Step == 0 {
			return head + s.Muted.Render(ansiTrunc(fmt.Sprintf("waiting on the server, %d ahead", j.Ahead), rest))
		}
	}
	// running or done: bar, steps, rate, ETA / total time
	steps := fmt.Sprintf("%d/%d", j.Step, j.Total)
	if j.Total == 0 {
		steps = string(j.Phase)
	}
	rate := ""
	switch {
	case j.Rate >= 100:
		rate = fmt.Sprintf("%.0fit/s", j.Rate)
	case j.Rate > 0:
		rate = fmt.Sprintf("%.1fit/s", j.Rate)
	}
	tail := ""
	switch {
	case j.State == JobDone:
		tail = fmtDur(j.Elapsed)
	case j.Phase == "decode":
		tail = "decode"
	case j.ETA > 0:
		tail = "ETA " + fmtDur(j.ETA)
	}
	info := fmt.Sprintf(" %5s %8s %8s", steps, rate, tail)
	barW := rest - len(info)
	if barW < 4 {
		return head + ansiTrunc(strings.TrimSpace(info), rest)
	}
	return head + q.c.Gauge(j.Fraction(), barW, false) + info
}

// fmtDur formats a duration as m:ss (or 1.2s under ten seconds).
func fmtDur(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
