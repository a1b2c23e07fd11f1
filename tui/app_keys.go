package tui

import (
	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
)

// handleKey routes a key press: overlays first, then global chords, then
// the focused pane.
func (a *App) handleKey(k tea.KeyPressMsg) tea.Cmd {
	keys := a.c.Keys
	switch a.overlay {
	case overlayQuit:
		switch {
		case key.Matches(k, keys.Yes), key.Matches(k, keys.Quit):
			return a.quit()
		case key.Matches(k, keys.No):
			a.overlay = overlayNone
		}
		return nil
	case overlayHelp:
		if key.Matches(k, keys.Help, keys.Back, keys.QuitList) {
			a.overlay = overlayNone
		} else if key.Matches(k, keys.Quit) {
			return a.askQuit()
		}
		return nil
	case overlayPicker:
		return a.pickerKey(k)
	}
	if a.script.open {
		return a.scriptKey(k)
	}
	// ":" opens the command line unless it is text being typed; the alt
	// chords work everywhere.
	if key.Matches(k, keys.Script) && (k.String() != ":" || a.focus != panePrompt || !a.prompt.Typing()) {
		return a.openScript()
	}

	switch {
	case key.Matches(k, keys.Quit):
		return a.askQuit()
	case key.Matches(k, keys.Enqueue):
		return a.enqueue()
	case key.Matches(k, keys.Cancel):
		a.cancelRunning()
		return nil
	case key.Matches(k, keys.Models):
		a.openPicker()
		return nil
	case key.Matches(k, keys.Next):
		return a.cycleFocus(1)
	case key.Matches(k, keys.Prev):
		return a.cycleFocus(-1)
	case key.Matches(k, keys.Prompt):
		a.prompt.focus = fieldPrompt
		return a.setFocus(panePrompt)
	case key.Matches(k, keys.Queue):
		return a.setFocus(paneQueue)
	case key.Matches(k, keys.History):
		return a.setFocus(paneHistory)
	case k.String() == "f1":
		a.overlay = overlayHelp
		return nil
	}

	if a.focus == panePrompt {
		if a.prompt.Typing() {
			if k.String() == "esc" {
				return a.setFocus(paneQueue)
			}
			return a.prompt.Update(k)
		}
		switch {
		case key.Matches(k, keys.Help):
			a.overlay = overlayHelp
		case a.prompt.focus == fieldModel && (key.Matches(k, keys.Load) || k.String() == "space"):
			a.openPicker()
		case a.prompt.focus == fieldModel && key.Matches(k, keys.Left, keys.Right):
			a.cycleModel(k)
		case key.Matches(k, keys.QuitList):
			return a.askQuit()
		default:
			return a.prompt.Update(k)
		}
		return nil
	}
	return a.listKey(k)
}

// listKey handles keys in the queue and history panes.
func (a *App) listKey(k tea.KeyPressMsg) tea.Cmd {
	keys := a.c.Keys
	switch {
	case key.Matches(k, keys.Help):
		a.overlay = overlayHelp
	case key.Matches(k, keys.QuitList):
		return a.askQuit()
	case key.Matches(k, keys.MoveUp) && a.focus == paneQueue:
		a.moveSelected(-1)
	case key.Matches(k, keys.MoveDown) && a.focus == paneQueue:
		a.moveSelected(1)
	case key.Matches(k, keys.Up):
		a.moveList(-1)
	case key.Matches(k, keys.Down):
		a.moveList(1)
	case key.Matches(k, keys.Remove) && a.focus == paneQueue:
		a.removeSelected()
	case key.Matches(k, keys.Back) && a.focus == paneQueue:
		a.cancelRunning()
	case key.Matches(k, keys.Rerun):
		return a.rerun(a.selectedJob())
	case key.Matches(k, keys.Load):
		return a.loadParams(a.selectedJob())
	}
	return nil
}

func (a *App) moveList(d int) {
	if a.focus == paneQueue {
		a.queue.Move(d, len(a.jobs))
	} else {
		a.history.Move(d, len(a.done))
	}
}

// cycleFocus moves through the prompt fields, then the queue and the
// history, and around.
func (a *App) cycleFocus(d int) tea.Cmd {
	stops := int(numFields) + 2
	cur := int(a.prompt.focus)
	switch a.focus {
	case paneQueue:
		cur = int(numFields)
	case paneHistory:
		cur = int(numFields) + 1
	}
	next := (cur + d + stops) % stops
	switch {
	case next < int(numFields):
		a.focus, a.tab = panePrompt, paneQueue
		return a.prompt.Focus(field(next))
	case next == int(numFields):
		return a.setFocus(paneQueue)
	default:
		return a.setFocus(paneHistory)
	}
}

// setFocus focuses a pane.
func (a *App) setFocus(p pane) tea.Cmd {
	a.focus = p
	if p == panePrompt {
		a.tab = paneQueue
		return a.prompt.Focus(a.prompt.focus)
	}
	a.prompt.Blur()
	a.tab = p
	return nil
}

// askQuit quits, or asks first when jobs are queued or running.
func (a *App) askQuit() tea.Cmd {
	if a.inFlight() > 0 {
		a.overlay = overlayQuit
		return nil
	}
	return a.quit()
}

// quit cancels the running job and ends the program.
func (a *App) quit() tea.Cmd {
	if a.running != nil && a.running.cancel != nil {
		a.running.cancel()
	}
	if a.script.cancel != nil {
		a.script.cancel()
	}
	return tea.Quit
}
