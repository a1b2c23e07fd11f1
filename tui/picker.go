package tui

import (
	"fmt"
	"slices"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/engine"
)

// openPicker shows the model picker.
func (a *App) openPicker() {
	a.overlay = overlayPicker
	a.pickSel = max(0, slices.IndexFunc(a.models, func(m engine.ModelEntry) bool { return m.Name == a.prompt.Model() }))
}

// pickerKey handles keys while the model picker is open.
func (a *App) pickerKey(k tea.KeyPressMsg) tea.Cmd {
	keys := a.c.Keys
	switch {
	case key.Matches(k, keys.Back), key.Matches(k, keys.Models):
		a.overlay = overlayNone
	case key.Matches(k, keys.Up):
		a.pickSel = max(0, a.pickSel-1)
	case key.Matches(k, keys.Down):
		a.pickSel = max(0, min(len(a.models)-1, a.pickSel+1))
	case key.Matches(k, keys.Load):
		if a.pickSel < len(a.models) {
			m := a.models[a.pickSel]
			if m.Broken != "" {
				a.setLog(true, "%s is broken: %s", m.Name, m.Broken)
				return nil
			}
			a.prompt.SetModel(m.Name)
			a.setLog(false, "Model: %s", m.Name)
		}
		a.overlay = overlayNone
	case k.String() == "ctrl+r", k.String() == "f5":
		a.setLog(false, "Rescanning model folders…")
		return a.listModels()
	case key.Matches(k, keys.Quit):
		return a.askQuit()
	}
	return nil
}

// cycleModel steps the model field through the list with ←/→.
func (a *App) cycleModel(k tea.KeyPressMsg) {
	if len(a.models) == 0 {
		a.setLog(true, "No models found; run darkroom --models DIR.")
		return
	}
	i := slices.IndexFunc(a.models, func(m engine.ModelEntry) bool { return m.Name == a.prompt.Model() })
	d := 1
	if key.Matches(k, a.c.Keys.Left) {
		d = -1
	}
	for range a.models { // skip broken files
		i = (i + d + len(a.models)) % len(a.models)
		if a.models[i].Broken == "" {
			a.prompt.SetModel(a.models[i].Name)
			return
		}
	}
}

// pickerView renders the model picker box.
func (a *App) pickerView(w, h int) string {
	s := a.c.Styles
	iw := w - 4
	var lines []string
	lines = append(lines, s.OverlayTitle.Render("Models"), "")
	switch {
	case !a.modelsLoaded:
		lines = append(lines, s.Muted.Render("Searching…"))
	case len(a.models) == 0:
		lines = append(lines, s.LogError.Render("No model found."), "",
			"Searched: "+strings.Join(a.modelDirs, ", "), "",
			"Put .safetensors checkpoints (or diffusers folders) there,",
			"or start darkroom with --models DIR (a folder of models, or",
			"a ComfyUI / A1111 / SwarmUI root).")
	default:
		n := h - 6
		if a.pickSel < len(a.models) && a.models[a.pickSel].Broken != "" {
			n -= 2 // room for the reason below the list
		}
		n = max(1, n)
		first := max(0, min(a.pickSel-n+1, len(a.models)-n))
		for i := first; i < len(a.models) && i < first+n; i++ {
			m := a.models[i]
			size := ""
			if m.Size > 0 {
				size = humanBytes(uint64(m.Size))
			}
			if m.Broken != "" {
				size = "broken"
			}
			row := fmt.Sprintf("%-*s %6s", max(1, iw-8), ansiTrunc(m.Name, iw-8), size)
			switch {
			case i == a.pickSel:
				row = s.Selected.Render(fitWidth(row, iw))
			case m.Broken != "":
				row = s.Muted.Render(row)
			}
			lines = append(lines, row)
		}
		if a.pickSel < len(a.models) && a.models[a.pickSel].Broken != "" {
			lines = append(lines, "", s.LogError.Render(ansiTrunc(a.models[a.pickSel].Broken, iw)))
		}
	}
	lines = append(lines, "", s.Muted.Render("enter select · esc close · ctrl+r rescan"))
	for i := range lines {
		lines[i] = fitWidth(lines[i], iw)
	}
	return s.Overlay.Render(strings.Join(lines, "\n"))
}
