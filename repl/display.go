package repl

import (
	"image"
	"os"

	"golang.org/x/term"
)

// display draws images inline for show(img).
type display interface {
	// render returns the text that draws img (escape sequences or
	// half-block rows), or "" to print only the image size.
	render(img image.Image) string
}

type noDisplay struct{}

func (noDisplay) render(image.Image) string { return "" }

// boxSize is the cell box for an inline image: opts' bounds, capped by the
// terminal size when known.
func boxSize(opts Options) (cols, rows int) {
	cols, rows = opts.ImageCols, opts.ImageRows
	if cols <= 0 {
		cols = 32
	}
	if rows <= 0 {
		rows = 16
	}
	if f, ok := opts.Stdout.(*os.File); ok {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil {
			cols, rows = min(cols, w), min(rows, max(h-2, 1))
		}
	}
	return cols, rows
}
