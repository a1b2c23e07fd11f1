package tui

import (
	"charm.land/lipgloss/v2"
)

// Styles holds every style the TUI draws with; components never build
// their own.
type Styles struct {
	Dark bool

	Border, BorderFocused lipgloss.Style
	Title, TitleFocused   lipgloss.Style
	Label, Value, Muted   lipgloss.Style
	Selected              lipgloss.Style
	FieldFocused          lipgloss.Style
	Queued, Running, Done lipgloss.Style
	Failed, Cancelled     lipgloss.Style
	GaugeFull, GaugeEmpty lipgloss.Style
	GaugeWarn, GaugeHot   lipgloss.Style
	LogInfo, LogError     lipgloss.Style
	HelpKey, HelpDesc     lipgloss.Style
	Overlay, OverlayTitle lipgloss.Style
	TextareaText          lipgloss.Style
	TextareaPlaceholder   lipgloss.Style
	TextareaCursorLine    lipgloss.Style
	TooSmall              lipgloss.Style
}

// DefaultStyles returns the styles for a dark or a light terminal
// background.
func DefaultStyles(dark bool) Styles {
	ld := lipgloss.LightDark(dark)
	accent := ld(lipgloss.Color("#5A4FCF"), lipgloss.Color("#A99CFF"))
	muted := ld(lipgloss.Color("#8A8A8A"), lipgloss.Color("#6C6C6C"))
	text := ld(lipgloss.Color("#1F1F1F"), lipgloss.Color("#E4E4E4"))
	green := ld(lipgloss.Color("#1E7F3C"), lipgloss.Color("#5FD787"))
	red := ld(lipgloss.Color("#B3261E"), lipgloss.Color("#FF6B6B"))
	yellow := ld(lipgloss.Color("#8A6D00"), lipgloss.Color("#F2C94C"))
	blue := ld(lipgloss.Color("#005F99"), lipgloss.Color("#5FAFFF"))
	selBg := ld(lipgloss.Color("#DCD8FF"), lipgloss.Color("#3A3566"))
	emptyBar := ld(lipgloss.Color("#D0D0D0"), lipgloss.Color("#3A3A3A"))
	s := lipgloss.NewStyle()
	return Styles{
		Dark:                dark,
		Border:              s.Foreground(muted),
		BorderFocused:       s.Foreground(accent),
		Title:               s.Foreground(muted).Bold(true),
		TitleFocused:        s.Foreground(accent).Bold(true),
		Label:               s.Foreground(muted),
		Value:               s.Foreground(text),
		Muted:               s.Foreground(muted),
		Selected:            s.Background(selBg).Foreground(text),
		FieldFocused:        s.Foreground(accent).Bold(true),
		Queued:              s.Foreground(muted),
		Running:             s.Foreground(blue).Bold(true),
		Done:                s.Foreground(green),
		Failed:              s.Foreground(red).Bold(true),
		Cancelled:           s.Foreground(yellow),
		GaugeFull:           s.Foreground(green),
		GaugeEmpty:          s.Foreground(emptyBar),
		GaugeWarn:           s.Foreground(yellow),
		GaugeHot:            s.Foreground(red),
		LogInfo:             s.Foreground(text),
		LogError:            s.Foreground(red),
		HelpKey:             s.Foreground(accent).Bold(true),
		HelpDesc:            s.Foreground(muted),
		Overlay:             s.Border(lipgloss.RoundedBorder()).BorderForeground(accent).Padding(0, 1),
		OverlayTitle:        s.Foreground(accent).Bold(true),
		TextareaText:        s.Foreground(text),
		TextareaPlaceholder: s.Foreground(muted).Italic(true),
		TextareaCursorLine:  s,
		TooSmall:            s.Foreground(red).Bold(true),
	}
}
