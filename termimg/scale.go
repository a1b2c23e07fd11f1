package termimg

import (
	"image"
	"image/draw"
)

// Scale resizes img to w×h with a box filter: each destination pixel is
// the mean of the source pixels it covers (at least the nearest one, so
// enlarging repeats pixels). Colours are averaged premultiplied by alpha.
func Scale(img image.Image, w, h int) *image.NRGBA {
	dst := image.NewNRGBA(image.Rect(0, 0, w, h))
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 || sw == 0 || sh == 0 {
		return dst
	}
	src, ok := img.(*image.NRGBA)
	if !ok || src.Bounds().Min != (image.Point{}) {
		src = image.NewNRGBA(image.Rect(0, 0, sw, sh))
		draw.Draw(src, src.Bounds(), img, b.Min, draw.Src)
	}
	for y := range h {
		y0 := y * sh / h
		y1 := max(y0+1, (y+1)*sh/h)
		for x := range w {
			x0 := x * sw / w
			x1 := max(x0+1, (x+1)*sw/w)
			var r, g, bl, a, n uint64
			for sy := y0; sy < y1; sy++ {
				row := src.Pix[sy*src.Stride:]
				for sx := x0; sx < x1; sx++ {
					p := row[sx*4 : sx*4+4]
					pa := uint64(p[3])
					r += uint64(p[0]) * pa
					g += uint64(p[1]) * pa
					bl += uint64(p[2]) * pa
					a += pa
					n++
				}
			}
			o := dst.Pix[y*dst.Stride+x*4:]
			if a > 0 {
				o[0] = uint8((r + a/2) / a)
				o[1] = uint8((g + a/2) / a)
				o[2] = uint8((bl + a/2) / a)
			}
			o[3] = uint8((a + n/2) / n)
		}
	}
	return dst
}

// fitPixels scales img to fit a box of cols×rows cells of cw×ch pixels.
func fitPixels(img image.Image, cols, rows, cw, ch int) *image.NRGBA {
	b := img.Bounds()
	w, h := Fit(b.Dx(), b.Dy(), cols*cw, rows*ch)
	return Scale(img, w, h)
}
