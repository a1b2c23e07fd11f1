package tui

import (
	tea "charm.land/bubbletea/v2"
)

// handleMouse focuses what a left click hits (a prompt field, the queue
// or history and their rows) and scrolls the lists with the wheel.
// Overlays take no mouse input.
func (a *App) handleMouse(m tea.Mouse, wheel bool) tea.Cmd {
	l := a.layout()
	if l.tooSmall || a.overlay != overlayNone || m.X >= l.leftW {
		return nil
	}
	inList := m.Y >= l.promptH && m.Y < l.promptH+l.listH
	if wheel {
		if !inList {
			return nil
		}
		d := 1
		if m.Button == tea.MouseWheelUp {
			d = -1
		}
		if a.tab == paneHistory {
			a.history.Move(d, len(a.done))
		} else {
			a.queue.Move(d, len(a.jobs))
		}
		return nil
	}
	if m.Button != tea.MouseLeft {
		return nil
	}
	if m.Y < l.promptH {
		if f, ok := a.fieldAt(m.X, m.Y, l); ok {
			a.focus, a.tab = panePrompt, paneQueue
			return a.prompt.Focus(f)
		}
		return nil
	}
	if !inList {
		return nil
	}
	p := a.tab
	cmd := a.setFocus(p)
	row := m.Y - l.promptH - 1 // below the box's top edge
	n := l.listH - 2
	if row < 0 || row >= n {
		return cmd
	}
	if p == paneHistory {
		listN := max(1, n-2)
		first := max(0, min(a.history.sel-listN+1, len(a.done)-listN))
		if i := first + row; row < listN && i < len(a.done) {
			a.history.sel = i
		}
	} else {
		n, _ = a.queueSplit(n)
		first := max(0, min(a.queue.sel-n+1, len(a.jobs)-n))
		if i := first + row; row < n && i < len(a.jobs) {
			a.queue.Select(i, len(a.jobs))
		}
	}
	return cmd
}

// fieldAt maps a cell of the prompt box to its field, following the
// rows PromptPane.Render draws (PromptPane.rowFields).
func (a *App) fieldAt(x, y int, l screen) (field, bool) {
	rows := a.prompt.rowFields()
	y-- // the box's top edge
	if y < 0 || y >= len(rows) {
		return 0, false
	}
	left, right := rows[y][0], rows[y][1]
	if right == numFields || x < 1+(l.leftW-2)/2 {
		return left, true
	}
	return right, true
}
