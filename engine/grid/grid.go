// Package grid lays images out as labelled contact sheets and grids, for
// scripts and recipes that compare seeds, samplers or settings. Labels are
// drawn with a small built-in 5×7 bitmap font (printable ASCII).
//
//	sheet, err := grid.Sheet(images, []string{"seed 1", "seed 2"}, grid.Options{Cols: 2})
//	err = grid.Save("sheet.png", sheet)
package grid

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
)

// Options style a sheet or grid. The zero value selects the defaults.
type Options struct {
	// Cols is the number of images per row of a Sheet; 0 picks a near-square
	// layout. Grid ignores it.
	Cols int
	// Pad is the gap between cells and around the edge, in pixels: 0
	// selects 4, a negative value none.
	Pad int
	// Scale multiplies the 5×7 font; 0 picks 1 for cells under 256 pixels
	// tall and 2 otherwise.
	Scale int
	// Background and Text are the sheet and label colours; a zero colour
	// selects dark gray and white.
	Background, Text color.NRGBA
}

func (o Options) pad() int {
	switch {
	case o.Pad < 0:
		return 0
	case o.Pad == 0:
		return 4
	}
	return o.Pad
}

func (o Options) scale(cellH int) int {
	if o.Scale > 0 {
		return o.Scale
	}
	if cellH >= 256 {
		return 2
	}
	return 1
}

func (o Options) colors() (bg, fg color.NRGBA) {
	bg, fg = o.Background, o.Text
	if bg == (color.NRGBA{}) {
		bg = color.NRGBA{R: 24, G: 24, B: 24, A: 255}
	}
	if fg == (color.NRGBA{}) {
		fg = color.NRGBA{R: 235, G: 235, B: 235, A: 255}
	}
	return bg, fg
}

// TextSize returns the size in pixels of text drawn at scale (≥ 1).
func TextSize(text string, scale int) (w, h int) {
	scale = max(scale, 1)
	n := len([]rune(text))
	if n == 0 {
		return 0, glyphH * scale
	}
	return (n*(glyphW+1) - 1) * scale, glyphH * scale
}

// DrawText draws text with its top-left corner at (x, y), each font pixel
// a scale×scale square of colour c. Characters outside printable ASCII are
// drawn as '?'; pixels outside dst are clipped.
func DrawText(dst draw.Image, x, y int, text string, c color.Color, scale int) {
	scale = max(scale, 1)
	b := dst.Bounds()
	for i, r := range []rune(text) {
		g, ok := font[r]
		if !ok {
			g = font['?']
		}
		x0 := x + i*(glyphW+1)*scale
		for gy, row := range g {
			for gx := range glyphW {
				if row[gx] != '#' {
					continue
				}
				px := image.Rect(x0+gx*scale, y+gy*scale, x0+(gx+1)*scale, y+(gy+1)*scale).Intersect(b)
				if !px.Empty() {
					draw.Draw(dst, px, image.NewUniform(c), image.Point{}, draw.Src)
				}
			}
		}
	}
}

// fit shortens text so that it is at most w pixels wide at scale, marking
// the cut with "..".
func fit(text string, w, scale int) string {
	if tw, _ := TextSize(text, scale); tw <= w {
		return text
	}
	r := []rune(text)
	for n := len(r) - 1; n > 0; n-- {
		s := string(r[:n]) + ".."
		if tw, _ := TextSize(s, scale); tw <= w {
			return s
		}
	}
	return ""
}

// cellSize is the largest width and height among the non-nil images.
func cellSize(imgs []image.Image) (w, h int) {
	for _, im := range imgs {
		if im == nil {
			continue
		}
		s := im.Bounds().Size()
		w, h = max(w, s.X), max(h, s.Y)
	}
	return w, h
}

// widen returns the cell width that fits the widest label, up to twice
// the image width (longer labels are cut).
func widen(cw int, labels []string, scale int) int {
	w := cw
	for _, l := range labels {
		tw, _ := TextSize(l, scale)
		w = max(w, min(tw, 2*cw))
	}
	return w
}

// drawCentered draws im centred in r.
func drawCentered(dst draw.Image, r image.Rectangle, im image.Image) {
	if im == nil {
		return
	}
	s := im.Bounds().Size()
	at := r.Min.Add(image.Pt((r.Dx()-s.X)/2, (r.Dy()-s.Y)/2))
	draw.Draw(dst, image.Rectangle{Min: at, Max: at.Add(s)}, im, im.Bounds().Min, draw.Over)
}

// Sheet lays images out in rows of opt.Cols, each with its label (if any)
// centred beneath it. labels may be shorter than images (missing labels are
// blank) but not longer. Cells take the size of the largest image, widened
// to fit the longest label up to twice that width (longer labels are cut
// and end in "..").
func Sheet(images []image.Image, labels []string, opt Options) (*image.NRGBA, error) {
	if len(images) == 0 {
		return nil, errors.New("sheet: no images")
	}
	if len(labels) > len(images) {
		return nil, fmt.Errorf("sheet: %d labels for %d images", len(labels), len(images))
	}
	cw, ch := cellSize(images)
	if cw == 0 || ch == 0 {
		return nil, errors.New("sheet: all images are empty")
	}
	cols := opt.Cols
	if cols <= 0 {
		for cols = 1; cols*cols < len(images); cols++ {
		}
	}
	cols = min(cols, len(images))
	rows := (len(images) + cols - 1) / cols
	pad, scale := opt.pad(), opt.scale(ch)
	capH := 0
	for _, l := range labels {
		if l != "" {
			capH = (glyphH + 4) * scale
		}
	}
	cw = widen(cw, labels, scale)
	stepX, stepY := cw+pad, ch+capH+pad
	dst := image.NewNRGBA(image.Rect(0, 0, pad+cols*stepX, pad+rows*stepY))
	bg, fg := opt.colors()
	draw.Draw(dst, dst.Bounds(), image.NewUniform(bg), image.Point{}, draw.Src)
	for i, im := range images {
		x, y := pad+(i%cols)*stepX, pad+(i/cols)*stepY
		drawCentered(dst, image.Rect(x, y, x+cw, y+ch), im)
		if i < len(labels) && labels[i] != "" {
			t := fit(labels[i], cw, scale)
			tw, _ := TextSize(t, scale)
			DrawText(dst, x+(cw-tw)/2, y+ch+2*scale, t, fg, scale)
		}
	}
	return dst, nil
}

// Grid lays cells out as rows × columns with column headers above and row
// headers to the left (either label list may be nil; each may be shorter
// than the grid). Rows may differ in length and nil cells stay blank. Cells
// take the size of the largest image, widened like Sheet's for column
// labels; row labels wider than two cells are cut.
func Grid(cells [][]image.Image, rowLabels, colLabels []string, opt Options) (*image.NRGBA, error) {
	var all []image.Image
	cols := 0
	for _, row := range cells {
		all = append(all, row...)
		cols = max(cols, len(row))
	}
	cw, ch := cellSize(all)
	if cw == 0 || ch == 0 {
		return nil, errors.New("grid: no images")
	}
	if len(rowLabels) > len(cells) {
		return nil, fmt.Errorf("grid: %d row labels for %d rows", len(rowLabels), len(cells))
	}
	if len(colLabels) > cols {
		return nil, fmt.Errorf("grid: %d column labels for %d columns", len(colLabels), cols)
	}
	pad, scale := opt.pad(), opt.scale(ch)
	cw = widen(cw, colLabels, scale)
	headH, headW := 0, 0
	if len(colLabels) > 0 {
		headH = (glyphH+2)*scale + pad
	}
	for _, l := range rowLabels {
		w, _ := TextSize(l, scale)
		headW = max(headW, w+pad)
	}
	headW = min(headW, 2*cw) // very long row labels are cut
	stepX, stepY := cw+pad, ch+pad
	dst := image.NewNRGBA(image.Rect(0, 0, pad+headW+cols*stepX, pad+headH+len(cells)*stepY))
	bg, fg := opt.colors()
	draw.Draw(dst, dst.Bounds(), image.NewUniform(bg), image.Point{}, draw.Src)
	for c, l := range colLabels {
		t := fit(l, cw, scale)
		tw, _ := TextSize(t, scale)
		DrawText(dst, pad+headW+c*stepX+(cw-tw)/2, pad, t, fg, scale)
	}
	for r, row := range cells {
		y := pad + headH + r*stepY
		if r < len(rowLabels) {
			t := fit(rowLabels[r], max(headW-pad, 0), scale)
			_, th := TextSize(t, scale)
			DrawText(dst, pad, y+(ch-th)/2, t, fg, scale)
		}
		for c, im := range row {
			x := pad + headW + c*stepX
			drawCentered(dst, image.Rect(x, y, x+cw, y+ch), im)
		}
	}
	return dst, nil
}

// Save writes img to path as a PNG (without generation metadata; use
// engine.SavePNG for single generated images).
func Save(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("save %s: encode png: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}
