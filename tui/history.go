package tui

import (
	"fmt"
	"path/filepath"
	"strings"
)

// HistoryPane lists finished images, newest first, with their parameters.
type HistoryPane struct {
	c   *Common
	sel int
}

// NewHistoryPane returns an empty history pane.
func NewHistoryPane(c *Common) *HistoryPane { return &HistoryPane{c: c} }

// Move moves the selection by d among n items.
func (h *HistoryPane) Move(d, n int) { h.sel = max(0, min(h.sel+d, n-1)) }

// Selected returns the selected index.
func (h *HistoryPane) Selected() int { return h.sel }

// Reset selects the newest item.
func (h *HistoryPane) Reset() { h.sel = 0 }

// Rows renders up to n rows for inner width iw: the items, then the
// selected item's parameters on the last two rows.
func (h *HistoryPane) Rows(items []*Job, iw, n int, focused bool) []string {
	s := h.c.Styles
	if len(items) == 0 {
		return []string{s.Muted.Render("No images yet.")}
	}
	listN := max(1, n-2)
	first := max(0, min(h.sel-listN+1, len(items)-listN))
	if h.sel < first {
		first = h.sel
	}
	var out []string
	for i := first; i < len(items) && len(out) < listN; i++ {
		j := items[i]
		file := ""
		if len(j.Paths) > 0 {
			file = filepath.Base(j.Paths[0])
		}
		row := fmt.Sprintf("#%-2d %-20s %s", j.ID, ansiTrunc(oneLine(j.Req.Prompt), 20), file)
		if focused && i == h.sel {
			out = append(out, s.Selected.Render(fitWidth(row, iw)))
		} else {
			out = append(out, s.Value.Render(ansiTrunc(row, iw)))
		}
	}
	for len(out) < listN {
		out = append(out, "")
	}
	if n >= 3 {
		j := items[min(h.sel, len(items)-1)]
		r := j.Req
		second := fmt.Sprintf("seed %d · %d×%d ×%d · %s", r.Seed, r.Width, r.Height, r.Batch, fmtDur(j.Elapsed))
		if o := formatOptions(r); o != "" {
			second += " · " + o
		}
		out = append(out,
			s.Muted.Render(ansiTrunc(fmt.Sprintf("%s · %s/%s · %d steps · cfg %g", modelName(r.Model), r.Sampler, r.Scheduler, r.Steps, r.CFG), iw)),
			s.Muted.Render(ansiTrunc(second, iw)))
	}
	return out
}

// oneLine flattens a multi-line prompt.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "(empty prompt)"
	}
	return s
}
