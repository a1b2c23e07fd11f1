package tui

import (
	"slices"
	"strings"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
)

// textEdit is a small multi-line text editor with soft wrapping: enough
// for prompts, with no clipboard or cursor blinking (so frames are
// deterministic).
type textEdit struct {
	value       []rune
	cur         int // cursor, an index into value
	placeholder string
	height      int // visible rows
	multiline   bool
	limit       int
	// accept, when set, filters inserted runes (typed or pasted): a
	// numeric field takes only digits and the signs its type allows.
	accept func(rune) bool
}

func newTextEdit(placeholder string, height int, multiline bool) textEdit {
	return textEdit{placeholder: placeholder, height: height, multiline: multiline, limit: 4000}
}

// Value returns the text.
func (t *textEdit) Value() string { return string(t.value) }

// SetValue replaces the text and puts the cursor at its end.
func (t *textEdit) SetValue(s string) {
	t.value = []rune(s)
	t.cur = len(t.value)
}

func (t *textEdit) insert(s string) {
	if !t.multiline {
		s = strings.ReplaceAll(s, "\n", " ")
	}
	r := []rune(strings.ReplaceAll(s, "\r", ""))
	if t.accept != nil {
		r = slices.DeleteFunc(r, func(c rune) bool { return !t.accept(c) })
	}
	if len(t.value)+len(r) > t.limit {
		r = r[:max(0, t.limit-len(t.value))]
	}
	t.value = append(t.value[:t.cur], append(r, t.value[t.cur:]...)...)
	t.cur += len(r)
}

// Update edits the text for a key press or paste.
func (t *textEdit) Update(msg tea.Msg, width int) {
	switch msg := msg.(type) {
	case tea.PasteMsg:
		t.insert(msg.Content)
	case tea.KeyPressMsg:
		switch msg.String() {
		case "enter":
			if t.multiline {
				t.insert("\n")
			}
		case "backspace", "ctrl+h":
			if t.cur > 0 {
				t.value = append(t.value[:t.cur-1], t.value[t.cur:]...)
				t.cur--
			}
		case "delete", "ctrl+d":
			if t.cur < len(t.value) {
				t.value = append(t.value[:t.cur], t.value[t.cur+1:]...)
			}
		case "left", "ctrl+b":
			t.cur = max(0, t.cur-1)
		case "right", "ctrl+f":
			t.cur = min(len(t.value), t.cur+1)
		case "home", "ctrl+a":
			for t.cur > 0 && t.value[t.cur-1] != '\n' {
				t.cur--
			}
		case "end", "ctrl+e":
			for t.cur < len(t.value) && t.value[t.cur] != '\n' {
				t.cur++
			}
		case "ctrl+u":
			t.value, t.cur = t.value[t.cur:], 0
		case "ctrl+k":
			t.value = t.value[:t.cur]
		case "ctrl+w":
			i := t.cur
			for i > 0 && t.value[i-1] == ' ' {
				i--
			}
			for i > 0 && t.value[i-1] != ' ' && t.value[i-1] != '\n' {
				i--
			}
			t.value = append(t.value[:i], t.value[t.cur:]...)
			t.cur = i
		case "up", "down":
			rows, pos := t.layout(width)
			r, c := pos[t.cur][0], pos[t.cur][1]
			if msg.String() == "up" {
				r--
			} else {
				r++
			}
			if r >= 0 && r < len(rows) {
				t.cur = rows[r].start + min(c, rows[r].end-rows[r].start)
			}
		default:
			if msg.Text != "" {
				t.insert(msg.Text)
			}
		}
	}
}

type visualRow struct{ start, end int } // value[start:end], no newline

// layout word-wraps the text to width cells (one cell is kept for the
// cursor) and returns the visual rows and each cursor index's (row, col).
func (t *textEdit) layout(width int) ([]visualRow, [][2]int) {
	w := max(1, width-1)
	var rows []visualRow
	for start := 0; start <= len(t.value); {
		nl := start
		for nl < len(t.value) && t.value[nl] != '\n' {
			nl++
		}
		s := start
		for nl-s > w {
			brk := s + w
			for j := s + w; j > s+1; j-- {
				if t.value[j-1] == ' ' {
					brk = j
					break
				}
			}
			rows = append(rows, visualRow{s, brk})
			s = brk
		}
		rows = append(rows, visualRow{s, nl})
		start = nl + 1
	}
	pos := make([][2]int, len(t.value)+1)
	for r, row := range rows {
		for i := row.start; i <= row.end; i++ {
			pos[i] = [2]int{r, i - row.start}
		}
	}
	return rows, pos
}

// View renders height rows of width cells, scrolled to show the cursor,
// which is drawn (reverse video) when focused.
func (t *textEdit) View(width int, focused bool, s Styles) string {
	if len(t.value) == 0 {
		ph := s.TextareaPlaceholder.Render(ansi.Truncate(t.placeholder, width, "…"))
		if focused {
			ph = "\x1b[7m \x1b[27m" + s.TextareaPlaceholder.Render(ansi.Truncate(t.placeholder, width-1, "…"))
		}
		return ph + strings.Repeat("\n", max(0, t.height-1))
	}
	rows, pos := t.layout(width)
	cr := pos[t.cur][0]
	first := max(0, min(cr-t.height+1, len(rows)-t.height))
	if cr < first {
		first = cr
	}
	out := make([]string, 0, t.height)
	for r := first; r < first+t.height; r++ {
		if r >= len(rows) {
			out = append(out, "")
			continue
		}
		row := rows[r]
		text := string(t.value[row.start:row.end])
		if focused && r == cr {
			c := pos[t.cur][1]
			rr := []rune(text)
			under := " "
			if c < len(rr) {
				under = string(rr[c])
			}
			after := ""
			if c+1 < len(rr) {
				after = string(rr[c+1:])
			}
			out = append(out, s.TextareaText.Render(string(rr[:min(c, len(rr))]))+"\x1b[7m"+under+"\x1b[27m"+s.TextareaText.Render(after))
			continue
		}
		out = append(out, s.TextareaText.Render(text))
	}
	return strings.Join(out, "\n")
}

// ViewLine renders the text on one row of width cells without wrapping:
// from its start when not focused, else scrolled sideways to keep the
// cursor (drawn in reverse video) in view; "…" marks text cut off at
// either end. The options line uses it, where a long line must not hide
// its start on another row.
func (t *textEdit) ViewLine(width int, focused bool, s Styles) string {
	if len(t.value) == 0 || width < 3 {
		return t.View(width, focused, s)
	}
	r, n := t.value, len(t.value)
	if !focused {
		return s.TextareaText.Render(ansi.Truncate(string(r), width, "…"))
	}
	cur := t.cur
	start, end := 0, n
	left, right := "", ""
	switch {
	case n+1 <= width: // all of it, and the cursor cell after it
	case cur < width-1: // the start, cut on the right
		end, right = width-1, "…"
	case cur == n: // the end, cut on the left, the cursor cell last
		start, left = n-(width-2), "…"
	default: // cut on the left, the cursor's rune last (but for a "…")
		end, left = cur+1, "…"
		avail := width - 1
		if end < n {
			right = "…"
			avail--
		}
		start = end - avail
	}
	text := r[start:end]
	c := cur - start
	under, after := " ", ""
	if c < len(text) {
		under, after = string(text[c]), string(text[c+1:])
	}
	return s.Muted.Render(left) + s.TextareaText.Render(string(text[:c])) + "\x1b[7m" + under + "\x1b[27m" + s.TextareaText.Render(after) + s.Muted.Render(right)
}
