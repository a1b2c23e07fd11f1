package repl

import (
	"image"
	"os"

	"github.com/darkroom-ai/darkroom/termimg"
)

// newDisplay draws with termimg, detecting the terminal's graphics as
// the TUI does; Graphics overrides the detection.
func newDisplay(opts Options, tty bool) display {
	mode, err := termimg.ParseMode(opts.Graphics)
	if err != nil {
		mode = termimg.ModeHalfblock
	}
	if mode == termimg.ModeAuto {
		if !tty {
			return noDisplay{}
		}
		mode = termimg.Detect(os.Getenv)
	}
	if mode == termimg.ModeNone {
		return noDisplay{}
	}
	cols, rows := boxSize(opts)
	return termimgDisplay{cols: cols, rows: rows, opts: termimg.Options{Mode: mode, Tmux: termimg.InTmux(os.Getenv)}}
}

type termimgDisplay struct {
	cols, rows int
	opts       termimg.Options
}

func (d termimgDisplay) render(img image.Image) string {
	return termimg.RenderOptions(img, d.cols, d.rows, d.opts)
}
