package termimg

import (
	"bytes"
	"image"
	"image/color"

	"github.com/mattn/go-sixel"
)

// The fixed sixel palette: a 6×6×6 colour cube (216 registers) followed by
// a ramp of 36 greys ending at white — 252 registers, one of xterm's 256
// staying free for go-sixel's transparent key. The grey ramp keeps
// monochrome and desaturated images neutral, which a cube alone cannot (its
// only greys are six). A fixed palette needs no per-frame quantisation, so
// live previews encode quickly and deterministically.
const (
	cubeLevels = 6
	cubeSize   = cubeLevels * cubeLevels * cubeLevels
	greyLevels = 36
)

// SixelPalette returns the fixed palette sixel output uses.
func SixelPalette() color.Palette {
	p := make(color.Palette, 0, cubeSize+greyLevels)
	for r := range cubeLevels {
		for g := range cubeLevels {
			for b := range cubeLevels {
				p = append(p, color.RGBA{R: level(r, cubeLevels), G: level(g, cubeLevels), B: level(b, cubeLevels), A: 255})
			}
		}
	}
	for k := range greyLevels {
		v := greyLevel(k)
		p = append(p, color.RGBA{R: v, G: v, B: v, A: 255})
	}
	return p
}

func level(i, n int) uint8 { return uint8((i*255 + (n-1)/2) / (n - 1)) }

// greyLevel is the k-th grey of the ramp: (k+1)·255/36, rounded.
func greyLevel(k int) uint8 { return uint8(((k+1)*255 + greyLevels/2) / greyLevels) }

// nearestLevel maps v (0..255) to the closest of n evenly spaced levels.
func nearestLevel(v uint8, n int) int { return (int(v)*(n-1) + 127) / 255 }

// quantize maps px onto the fixed palette — the nearer (in squared RGB
// distance) of the closest cube colour and the closest grey — compositing
// transparent pixels onto black.
func quantize(px *image.NRGBA, pal color.Palette) *image.Paletted {
	b := px.Bounds()
	out := image.NewPaletted(b, pal)
	for y := range b.Dy() {
		for x := range b.Dx() {
			p := pixel(px, x, y)
			a := uint32(p[3])
			r := int(uint32(p[0]) * a / 255)
			g := int(uint32(p[1]) * a / 255)
			bl := int(uint32(p[2]) * a / 255)
			ri, gi, bi := nearestLevel(uint8(r), cubeLevels), nearestLevel(uint8(g), cubeLevels), nearestLevel(uint8(bl), cubeLevels)
			idx := (ri*cubeLevels+gi)*cubeLevels + bi
			dc := sq(r-int(level(ri, cubeLevels))) + sq(g-int(level(gi, cubeLevels))) + sq(bl-int(level(bi, cubeLevels)))
			k := max(0, min(greyLevels-1, ((r+g+bl)*greyLevels+3*255/2)/(3*255)-1))
			v := int(greyLevel(k))
			if dg := sq(r-v) + sq(g-v) + sq(bl-v); dg < dc {
				idx = cubeSize + k
			}
			out.Pix[y*out.Stride+x] = uint8(idx)
		}
	}
	return out
}

func sq(x int) int { return x * x }

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
