package termimg

import (
	"bytes"
	"image"
	"image/color"

	"github.com/mattn/go-sixel"
)

// Palette levels of the fixed sixel palette: 6 reds × 7 greens × 6 blues
// = 252 colour registers (one of xterm's 256 stays free for go-sixel's
// transparent key). A fixed palette needs no per-frame quantisation, so
// live previews encode quickly and deterministically.
const (
	levelsR = 6
	levelsG = 7
	levelsB = 6
)

// SixelPalette returns the fixed palette sixel output uses.
func SixelPalette() color.Palette {
	p := make(color.Palette, 0, levelsR*levelsG*levelsB)
	for r := range levelsR {
		for g := range levelsG {
			for b := range levelsB {
				p = append(p, color.RGBA{R: level(r, levelsR), G: level(g, levelsG), B: level(b, levelsB), A: 255})
			}
		}
	}
	return p
}

func level(i, n int) uint8 { return uint8((i*255 + (n-1)/2) / (n - 1)) }

// nearestLevel maps v (0..255) to the closest of n evenly spaced levels.
func nearestLevel(v uint8, n int) int { return (int(v)*(n-1) + 127) / 255 }

// quantize maps px onto the fixed palette, compositing transparent pixels
// onto black.
func quantize(px *image.NRGBA, pal color.Palette) *image.Paletted {
	b := px.Bounds()
	out := image.NewPaletted(b, pal)
	for y := range b.Dy() {
		for x := range b.Dx() {
			p := pixel(px, x, y)
			a := uint32(p[3])
			r := uint8(uint32(p[0]) * a / 255)
			g := uint8(uint32(p[1]) * a / 255)
			bl := uint8(uint32(p[2]) * a / 255)
			idx := (nearestLevel(r, levelsR)*levelsG+nearestLevel(g, levelsG))*levelsB + nearestLevel(bl, levelsB)
			out.Pix[y*out.Stride+x] = uint8(idx)
		}
	}
	return out
}

// Sixel encodes img as a DECSIXEL sequence (DCS … ST) scaled to fit
// cols×rows cells of the options' cell size, with the fixed 252-colour
// palette. It returns "" if encoding fails.
func Sixel(img image.Image, cols, rows int, o Options) string {
	if img == nil || img.Bounds().Empty() || cols <= 0 || rows <= 0 {
		return ""
	}
	cw, ch := o.cell()
	px := fitPixels(img, cols, rows, cw, ch)
	pal := quantize(px, SixelPalette())
	var buf bytes.Buffer
	enc := sixel.NewEncoder(&buf)
	if err := enc.Encode(pal); err != nil {
		return ""
	}
	return buf.String()
}
