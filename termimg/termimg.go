// Package termimg draws images in terminals: with the kitty graphics
// protocol, sixel, iTerm2 inline images, or Unicode half-blocks (▀ with
// 24-bit colour) that work everywhere, tmux and plain SSH included.
//
// Render encodes an image to fit a box of terminal cells; Detect picks a
// mode from the environment. The TUI and the REPL's show(img) share it.
//
//	mode := termimg.Detect(os.Getenv)
//	fmt.Print(termimg.Render(img, 40, 20, mode))
package termimg

import (
	"fmt"
	"image"
	"strings"
)

// Mode is a way of drawing images in a terminal.
type Mode int

// Modes, from the least to the most capable. ModeAuto is only an input to
// ParseMode and Resolve; Render treats it as ModeHalfblock.
const (
	ModeNone Mode = iota
	ModeHalfblock
	ModeSixel
	ModeKitty
	ModeITerm
	ModeAuto
)

var modeNames = [...]string{
	ModeNone:      "none",
	ModeHalfblock: "halfblock",
	ModeSixel:     "sixel",
	ModeKitty:     "kitty",
	ModeITerm:     "iterm",
	ModeAuto:      "auto",
}

// String returns the mode's flag spelling ("kitty", "halfblock", ...).
func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Sprintf("Mode(%d)", int(m))
	}
	return modeNames[m]
}

// Modes lists the spellings ParseMode accepts.
func Modes() []string {
	return []string{"auto", "kitty", "sixel", "iterm", "halfblock", "none"}
}

// ParseMode parses a --graphics value: auto, kitty, sixel, iterm, halfblock
// (also "blocks") or none. The empty string means auto.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return ModeAuto, nil
	case "kitty":
		return ModeKitty, nil
	case "sixel":
		return ModeSixel, nil
	case "iterm", "iterm2":
		return ModeITerm, nil
	case "halfblock", "halfblocks", "blocks":
		return ModeHalfblock, nil
	case "none", "off":
		return ModeNone, nil
	}
	return ModeNone, fmt.Errorf("--graphics %q: want one of %s", s, strings.Join(Modes(), ", "))
}

// Default cell size in pixels, used to size pixel images when the
// terminal's real cell size is unknown.
const (
	DefaultCellWidth  = 10
	DefaultCellHeight = 20
)

// Options control RenderOptions.
type Options struct {
	Mode Mode
	// CellWidth and CellHeight are the terminal cell size in pixels, used
	// by sixel (which addresses pixels); zero means the defaults.
	CellWidth, CellHeight int
	// Tmux wraps escape sequences in tmux's DCS passthrough (needs
	// `set -g allow-passthrough on`). Half-blocks need no wrapping.
	Tmux bool
}

func (o Options) cell() (w, h int) {
	w, h = o.CellWidth, o.CellHeight
	if w <= 0 {
		w = DefaultCellWidth
	}
	if h <= 0 {
		h = DefaultCellHeight
	}
	return w, h
}

// Render draws img to fit in cols×rows terminal cells, keeping its aspect
// ratio, with the default cell size. It returns "" for ModeNone, an empty
// image or a box with no cells. Half-block output is rows of text joined by
// "\n"; the other modes are escape sequences drawn at the cursor.
func Render(img image.Image, cols, rows int, mode Mode) string {
	return RenderOptions(img, cols, rows, Options{Mode: mode})
}

// RenderOptions is Render with explicit options.
func RenderOptions(img image.Image, cols, rows int, o Options) string {
	if img == nil || img.Bounds().Empty() || cols <= 0 || rows <= 0 {
		return ""
	}
	var s string
	switch o.Mode {
	case ModeNone:
		return ""
	case ModeSixel:
		s = Sixel(img, cols, rows, o)
	case ModeKitty:
		s = Kitty(img, cols, rows)
	case ModeITerm:
		s = ITerm(img, cols, rows)
	default:
		return Halfblock(img, cols, rows)
	}
	if o.Tmux {
		s = TmuxWrap(s)
	}
	return s
}

// Fit returns the size in pixels of img scaled to fit a box of w×h pixels
// with its aspect ratio kept (at least 1×1).
func Fit(imgW, imgH, w, h int) (int, int) {
	if imgW <= 0 || imgH <= 0 || w <= 0 || h <= 0 {
		return 0, 0
	}
	// Compare w/imgW with h/imgH without floating point.
	if w*imgH <= h*imgW {
		return w, max(1, (imgH*w+imgW/2)/imgW)
	}
	return max(1, (imgW*h+imgH/2)/imgH), h
}

// CellSize returns how many cells (cols, rows) Render uses for img in a
// cols×rows box in the given mode, with the default cell size.
func CellSize(img image.Image, cols, rows int, mode Mode) (int, int) {
	return CellSizeOptions(img, cols, rows, Options{Mode: mode})
}

// CellSizeOptions is CellSize with explicit options.
func CellSizeOptions(img image.Image, cols, rows int, o Options) (int, int) {
	if img == nil || img.Bounds().Empty() || cols <= 0 || rows <= 0 || o.Mode == ModeNone {
		return 0, 0
	}
	b := img.Bounds()
	cw, ch := o.cell()
	if o.Mode == ModeHalfblock || o.Mode == ModeAuto {
		cw, ch = 1, 2
	}
	pw, ph := Fit(b.Dx(), b.Dy(), cols*cw, rows*ch)
	return min(cols, (pw+cw-1)/cw), min(rows, (ph+ch-1)/ch)
}

// TmuxWrap wraps an escape sequence in tmux's passthrough DCS so that tmux
// forwards it to the outer terminal.
func TmuxWrap(s string) string {
	if s == "" {
		return ""
	}
	return "\x1bPtmux;" + strings.ReplaceAll(s, "\x1b", "\x1b\x1b") + "\x1b\\"
}
