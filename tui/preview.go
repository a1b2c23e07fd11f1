package tui

import (
	"fmt"
	"image"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/darkroom-ai/darkroom/termimg"
)

// kittyImageID is the kitty image slot of the preview.
const kittyImageID = 42

// gfxDelay is how long pixel graphics wait after the frame that makes
// room for them, so the renderer has drawn (blank) cells first.
const gfxDelay = 80 * time.Millisecond

// gfxReadyMsg carries encoded pixel graphics for generation Seq; they are
// written only if no newer generation was scheduled meanwhile.
type gfxReadyMsg struct {
	Seq int
	Out string
}

// PreviewPane shows the running job's live preview or a finished image.
// Half-blocks are part of the frame; sixel and iTerm2 images are drawn
// over blank cells with tea.Raw (cursor saved and restored) after the
// frame; kitty images are uploaded with tea.Raw and placed with Unicode
// placeholders inside the frame.
type PreviewPane struct {
	c    *Common
	mode termimg.Mode
	tmux bool
	// cellW and cellH are the terminal's cell size in pixels (0: unknown,
	// termimg's defaults are used).
	cellW, cellH int

	// cache of the last half-block or placeholder rendering
	cacheImg       *image.NRGBA
	cacheW, cacheH int
	cacheMode      termimg.Mode
	cacheText      string
}

// NewPreviewPane returns a preview pane drawing in mode.
func NewPreviewPane(c *Common, mode termimg.Mode, tmux bool) *PreviewPane {
	return &PreviewPane{c: c, mode: mode, tmux: tmux}
}

// Mode returns the graphics mode.
func (p *PreviewPane) Mode() termimg.Mode { return p.mode }

// SetMode changes the graphics mode (after a DA1 reply reveals sixel).
func (p *PreviewPane) SetMode(m termimg.Mode) { p.mode = m; p.cacheImg = nil }

// SetCellSize sets the terminal's cell size in pixels (from a CSI 16 t
// reply or the tty's window size), so pixel images fit their cells.
func (p *PreviewPane) SetCellSize(w, h int) {
	if w > 0 && h > 0 && w < 200 && h < 400 {
		p.cellW, p.cellH, p.cacheImg = w, h, nil
	}
}

// opts are the termimg options for sixel and iTerm2 images. They are not
// wrapped for tmux: tmux 3.4+ draws sixel itself, and passthrough images
// would land at the outer terminal's cursor, not the pane's. Only kitty
// uploads (placed by placeholders, not the cursor) go through passthrough.
func (p *PreviewPane) opts() termimg.Options {
	return termimg.Options{Mode: p.mode, CellWidth: p.cellW, CellHeight: p.cellH}
}

// cells returns the cells img takes in a w×h box.
func (p *PreviewPane) cells(img *image.NRGBA, w, h int) (int, int) {
	return termimg.CellSizeOptions(img, w, h, p.opts())
}

// Body renders the image area (w×h cells): half-blocks or kitty
// placeholders centred horizontally, or blank cells for sixel/iTerm2.
func (p *PreviewPane) Body(img *image.NRGBA, w, h int) string {
	if img == nil || w <= 0 || h <= 0 {
		return ""
	}
	if p.mode == termimg.ModeNone {
		b := img.Bounds()
		return p.c.Styles.Muted.Render(fmt.Sprintf("[%d×%d image; --graphics none]", b.Dx(), b.Dy()))
	}
	if p.cacheImg == img && p.cacheW == w && p.cacheH == h && p.cacheMode == p.mode {
		return p.cacheText
	}
	cols, rows := p.cells(img, w, h)
	pad := strings.Repeat(" ", (w-cols)/2)
	var text string
	switch p.mode {
	case termimg.ModeKitty:
		text = termimg.KittyPlaceholders(kittyImageID, cols, rows)
	case termimg.ModeSixel, termimg.ModeITerm:
		text = strings.TrimSuffix(strings.Repeat(strings.Repeat(" ", cols)+"\n", rows), "\n")
	default:
		text = termimg.Halfblock(img, cols, rows)
	}
	lines := strings.Split(text, "\n")
	for i := range lines {
		lines[i] = pad + lines[i]
	}
	p.cacheImg, p.cacheW, p.cacheH, p.cacheMode = img, w, h, p.mode
	p.cacheText = strings.Join(lines, "\n")
	return p.cacheText
}

// Graphics returns the escape sequence that draws img for a body at
// screen cell (x, y) (0-based) of w×h cells, or "" when the mode draws
// inside the frame.
func (p *PreviewPane) Graphics(img *image.NRGBA, x, y, w, h int) string {
	if img == nil || w <= 0 || h <= 0 {
		return ""
	}
	cols, rows := p.cells(img, w, h)
	x += (w - cols) / 2
	var seq string
	switch p.mode {
	case termimg.ModeKitty:
		seq = termimg.KittyTransmit(img, kittyImageID, cols, rows)
		if p.tmux {
			seq = termimg.TmuxWrap(seq)
		}
		return seq
	case termimg.ModeSixel, termimg.ModeITerm:
		seq = termimg.RenderOptions(img, cols, rows, p.opts())
	default:
		return ""
	}
	if seq == "" {
		return ""
	}
	// Save the cursor, clear what an earlier image left in the body, draw
	// at the image's corner, restore: the renderer's idea of the cursor
	// and of the cells stays right.
	return "\x1b7" + eraseRect(x-(w-cols)/2, y, w, h) + fmt.Sprintf("\x1b[%d;%dH%s\x1b8", y+1, x+1, seq)
}

// Erase returns the sequence that clears pixel graphics from the body at
// (x, y), w×h cells, or "" for modes that draw inside the frame.
func (p *PreviewPane) Erase(x, y, w, h int) string {
	if p.mode != termimg.ModeSixel && p.mode != termimg.ModeITerm || w <= 0 || h <= 0 {
		return ""
	}
	return "\x1b7" + eraseRect(x, y, w, h) + "\x1b8"
}

// eraseRect erases w cells on h rows from (x, y) with ECH, which also
// removes sixel and inline-image pixels there.
func eraseRect(x, y, w, h int) string {
	var sb strings.Builder
	for r := range h {
		fmt.Fprintf(&sb, "\x1b[%d;%dH\x1b[%dX", y+r+1, x+1, w)
	}
	return sb.String()
}

// encodeCmd encodes img off the UI goroutine, after delay, as generation
// seq. The pane's settings are copied first, so the command shares no
// state with Update.
func (p *PreviewPane) encodeCmd(seq int, img *image.NRGBA, x, y, w, h int, delay time.Duration) tea.Cmd {
	pc := *p
	pc.cacheImg, pc.cacheText = nil, ""
	encode := func() tea.Msg { return gfxReadyMsg{Seq: seq, Out: pc.Graphics(img, x, y, w, h)} }
	if delay <= 0 {
		return encode
	}
	return tea.Tick(delay, func(time.Time) tea.Msg { return encode() })
}
