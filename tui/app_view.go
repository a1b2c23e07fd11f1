package tui

import (
	"fmt"
	"image"
	"strings"

	"charm.land/bubbles/v2/help"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
)

// screen is the computed layout: the left column holds the prompt editor
// and the queue/history box, the right column the preview and devices.
type screen struct {
	tooSmall       bool
	leftW, rightW  int
	promptH, listH int
	previewH, devH int
	mainH          int
	scriptH        int // the command line's output area
	height         int
}

// hints reports whether the key hints line is shown (below hintsHeight
// rows it gives its row to the lists).
func (l screen) hints() bool { return l.height >= hintsHeight }

// layout recomputes the pane sizes for the terminal size.
func (a *App) layout() screen {
	w, h := a.c.Width, a.c.Height
	var l screen
	if w < minWidth || h < minHeight {
		l.tooSmall = true
		return l
	}
	l.height = h
	l.mainH = h - 2 // log line and key hints (or the command line)
	if a.script.open {
		l.scriptH = a.script.Rows(h)
		l.mainH -= l.scriptH
	} else if !l.hints() {
		l.mainH++
	}
	l.leftW = w * 55 / 100
	l.rightW = w - l.leftW
	a.prompt.SetCompact(h < fullHeight)
	l.promptH = a.prompt.Height()
	l.listH = l.mainH - l.promptH
	l.devH = a.devices.Height() + 2
	l.previewH = l.mainH - l.devH
	if l.previewH < 6 { // too short for both: the preview wins
		l.devH, l.previewH = 0, l.mainH
	}
	a.prompt.SetWidth(l.leftW)
	return l
}

// previewImage is what the preview shows: the selected history image
// while the history has focus, else the running job's live preview, else
// the last finished image.
func (a *App) previewImage() (*image.NRGBA, string) {
	if a.focus == paneHistory && len(a.done) > 0 {
		j := a.done[min(a.history.Selected(), len(a.done)-1)]
		if len(j.Images) > 0 {
			return j.Images[0], fmt.Sprintf("#%d seed %d", j.ID, j.Req.Seed)
		}
	}
	if j := a.running; j != nil {
		if j.Preview != nil {
			return j.Preview, fmt.Sprintf("#%d %s %d/%d (latent preview)", j.ID, j.Phase, j.Step, j.Total)
		}
		return nil, fmt.Sprintf("#%d %s…", j.ID, j.Phase)
	}
	if a.shown != nil {
		return a.shown, fmt.Sprintf("shown by the script, %d×%d", a.shown.Rect.Dx(), a.shown.Rect.Dy())
	}
	if a.lastImage != nil && len(a.done) > 0 {
		return a.lastImage, fmt.Sprintf("#%d done, seed %d", a.done[0].ID, a.done[0].Req.Seed)
	}
	return nil, ""
}

// previewTarget returns the preview image and its body's screen cell
// rectangle.
func (a *App) previewTarget() (img *image.NRGBA, x, y, w, h int) {
	l := a.layout()
	if l.tooSmall {
		return nil, 0, 0, 0, 0
	}
	img, _ = a.previewImage()
	return img, l.leftW + 1, 2, l.rightW - 2, l.previewH - 3
}

// View draws the whole screen.
func (a *App) View() tea.View {
	v := tea.NewView(a.render())
	v.AltScreen = true
	v.MouseMode = tea.MouseModeCellMotion
	v.WindowTitle = "darkroom"
	return v
}

func (a *App) render() string {
	s := a.c.Styles
	l := a.layout()
	if l.tooSmall {
		msg := fmt.Sprintf("Terminal too small: %d×%d.\ndarkroom needs at least %d×%d.\nEnlarge the window, or press ctrl+c to quit.", a.c.Width, a.c.Height, minWidth, minHeight)
		return lipgloss.Place(a.c.Width, a.c.Height, lipgloss.Center, lipgloss.Center, s.TooSmall.Render(msg))
	}
	left := a.prompt.Render(l.promptH) + "\n" + a.listBox(l.leftW, l.listH)
	right := a.previewBox(l.rightW, l.previewH)
	if l.devH > 0 {
		right += "\n" + a.c.Box("Devices", strings.Join(a.devices.Rows(l.rightW-2), "\n"), l.rightW, l.devH, false)
	}
	body := lipgloss.JoinHorizontal(lipgloss.Top, left, right)
	logStyle := s.LogInfo
	if a.logErr {
		logStyle = s.LogError
	}
	hm := help.New()
	hm.Styles = a.helpStyles()
	hm.SetWidth(a.c.Width)
	logLine := logStyle.Render(fitWidth(ansiTrunc(a.logMsg, a.c.Width), a.c.Width))
	hintLine := fitWidth(hm.ShortHelpView(a.c.Keys.ShortHelp()), a.c.Width)
	// While the options input has the cursor, the key hints row names
	// the options matching the word typed; with no key hints row, the
	// log row does, unless it holds an error.
	if hint, ok := a.prompt.OptionsHint(a.c.Width); ok && a.focus == panePrompt && !a.script.open {
		if l.hints() {
			hintLine = hint
		} else if !a.logErr {
			logLine = hint
		}
	}
	var frame string
	if a.script.open {
		out, input := a.script.View(a.c.Width, l.scriptH)
		frame = body + "\n" + out + "\n" + logLine + "\n" + input
	} else if l.hints() {
		frame = body + "\n" + logLine + "\n" + hintLine
	} else {
		frame = body + "\n" + logLine
	}
	switch a.overlay {
	case overlayHelp:
		frame = overlay(frame, a.helpView(), a.c.Width, a.c.Height)
	case overlayPicker:
		frame = overlay(frame, a.pickerView(min(64, a.c.Width-4), min(20, a.c.Height-2)), a.c.Width, a.c.Height)
	case overlayQuit:
		n := a.inFlight()
		q := s.OverlayTitle.Render("Quit?") + "\n\n" + fmt.Sprintf("%d job(s) queued or running will be lost.", n) + "\n\n" + s.HelpKey.Render("y") + s.HelpDesc.Render(" quit  ") + s.HelpKey.Render("n") + s.HelpDesc.Render(" keep working")
		frame = overlay(frame, s.Overlay.Render(q), a.c.Width, a.c.Height)
	}
	return frame
}

func (a *App) helpStyles() help.Styles {
	s := a.c.Styles
	st := help.DefaultStyles(s.Dark)
	st.ShortKey, st.FullKey = s.HelpKey, s.HelpKey
	st.ShortDesc, st.FullDesc = s.HelpDesc, s.HelpDesc
	st.ShortSeparator, st.FullSeparator = s.Muted, s.Muted
	return st
}

// helpView renders the help overlay.
func (a *App) helpView() string {
	s := a.c.Styles
	hm := help.New()
	hm.Styles = a.helpStyles()
	hm.SetWidth(a.c.Width - 6)
	body := s.OverlayTitle.Render("darkroom keys") + "\n\n" + hm.FullHelpView(a.c.Keys.FullHelp()) + "\n\n" +
		s.Muted.Render("Prompt fields: type to edit, ←/→ change sampler/scheduler/model,\nenter on model opens the picker. Seed \"random\" draws a new one.\n"+
			"options: every other setting, name=value with gen's flag names:\ninit-image=x.png denoise=0.5 hires=2 lora=style:0.8 guidance=3.5")
	return s.Overlay.Render(body)
}

// listBox draws the queue or history box with its tabs.
func (a *App) listBox(w, h int) string {
	s := a.c.Styles
	iw, n := w-2, h-2
	qt := fmt.Sprintf("Queue (%d)", len(a.jobs))
	ht := fmt.Sprintf("History (%d)", len(a.done))
	var title string
	var rows []string
	if a.tab == paneHistory {
		title = s.Title.Render(qt) + " · " + s.TitleFocused.Render(ht)
		rows = a.history.Rows(a.done, iw, n, a.focus == paneHistory)
	} else {
		title = s.TitleFocused.Render(qt) + " · " + s.Title.Render(ht)
		own, remote := a.queueSplit(n)
		rows = a.queue.Rows(a.jobs, iw, own, a.focus == paneQueue)
		// The server's queue follows the own jobs' rows.
		rows = append(rows, a.remoteRows(iw, remote)...)
	}
	return a.c.Box(title, strings.Join(rows, "\n"), w, h, a.focus == paneQueue || a.focus == paneHistory)
}

// previewBox draws the preview box: a caption and the image.
func (a *App) previewBox(w, h int) string {
	s := a.c.Styles
	img, caption := a.previewImage()
	body := s.Muted.Render(ansiTrunc(caption, w-2))
	if img != nil {
		body += "\n" + a.preview.Body(img, w-2, h-3)
	} else if img == nil && caption == "" {
		body = s.Muted.Render("Nothing yet. Live previews of the\nrunning job and finished images\nshow here.")
	}
	return a.c.Box("Preview "+s.Muted.Render(a.preview.Mode().String()), body, w, h, false)
}
