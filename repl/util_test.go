package repl

import (
	"image"
	"image/color"
)

func solidImage(w, h int) image.Image {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{R: 200, G: 10, B: 10, A: 255})
		}
	}
	return img
}
