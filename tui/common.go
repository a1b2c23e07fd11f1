package tui

import (
	"fmt"
	"strings"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"
)

// Common is shared by every component: styles, keys and the screen size.
type Common struct {
	Styles        Styles
	Keys          KeyMap
	Width, Height int
}

// Box draws body in a rounded frame of w×h cells with title in the top
// edge. Body lines are cut or padded to fit exactly.
func (c *Common) Box(title, body string, w, h int, focused bool) string {
	if w < 4 || h < 2 {
		return ""
	}
	bs, ts := c.Styles.Border, c.Styles.Title
	if focused {
		bs, ts = c.Styles.BorderFocused, c.Styles.TitleFocused
	}
	iw := w - 2
	t := ansi.Truncate(title, max(0, iw-3), "…")
	top := bs.Render("╭─") + ts.Render(t) + bs.Render(strings.Repeat("─", max(0, iw-1-lipgloss.Width(t)))+"╮")
	var sb strings.Builder
	sb.WriteString(top)
	lines := strings.Split(body, "\n")
	side := bs.Render("│")
	for i := range h - 2 {
		l := ""
		if i < len(lines) {
			l = lines[i]
		}
		sb.WriteByte('\n')
		sb.WriteString(side)
		sb.WriteString(fitWidth(l, iw))
		sb.WriteString(side)
	}
	sb.WriteByte('\n')
	sb.WriteString(bs.Render("╰" + strings.Repeat("─", iw) + "╯"))
	return sb.String()
}

// fitWidth cuts or pads a styled line to exactly w cells.
func fitWidth(s string, w int) string {
	if lw := ansi.StringWidth(s); lw > w {
		return ansi.Truncate(s, w, "…")
	} else if lw < w {
		return s + strings.Repeat(" ", w-lw)
	}
	return s
}

// Gauge draws a bar of w cells filled to frac (0..1), coloured by how full
// it is when warn is set.
func (c *Common) Gauge(frac float64, w int, warn bool) string {
	if w <= 0 {
		return ""
	}
	frac = min(1, max(0, frac))
	eighths := int(frac*float64(w*8) + 0.5)
	full, part := eighths/8, eighths%8
	partials := []string{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"}
	bar := strings.Repeat("█", full)
	if part > 0 && full < w {
		bar += partials[part]
		full++
	}
	st := c.Styles.GaugeFull
	if warn && frac >= 0.9 {
		st = c.Styles.GaugeHot
	} else if warn && frac >= 0.75 {
		st = c.Styles.GaugeWarn
	}
	return st.Render(bar) + c.Styles.GaugeEmpty.Render(strings.Repeat("░", w-full))
}

// overlay draws fg centred over bg (both blocks of lines).
func overlay(bg, fg string, w, h int) string {
	bl := strings.Split(bg, "\n")
	fl := strings.Split(fg, "\n")
	fw := min(w, lipgloss.Width(fg)) // a wider box is cut at the edge
	x, y := max(0, (w-fw)/2), max(0, (h-len(fl))/2)
	for i, l := range fl {
		if y+i >= len(bl) {
			break
		}
		row := bl[y+i]
		left := ansi.Truncate(row, x, "")
		left += strings.Repeat(" ", max(0, x-ansi.StringWidth(left)))
		right := ansi.TruncateLeft(row, x+fw, "")
		bl[y+i] = left + "\x1b[0m" + fitWidth(l, fw) + "\x1b[0m" + right
	}
	return strings.Join(bl, "\n")
}

// humanBytes formats a byte count as 3.1G, 512M.
func humanBytes(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0fM", float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%.0fK", float64(b)/(1<<10))
	}
}

// ansiTrunc cuts s to w cells with an ellipsis.
func ansiTrunc(s string, w int) string {
	if w <= 0 {
		return ""
	}
	return ansi.Truncate(s, w, "…")
}

// stripANSI removes escape sequences.
func stripANSI(s string) string { return ansi.Strip(s) }
