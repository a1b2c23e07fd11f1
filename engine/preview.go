package engine

import (
	"image"
	"image/color"
)

// LatentPreview renders batch item i of latents [shape] as a small RGB
// image (one pixel per latent cell) with the format's linear latent→RGB
// approximation; for video latents [B, C, T, h, w] it shows the first
// frame. It returns nil when the format has no approximation for the
// latents' channels or the arguments are inconsistent.
func LatentPreview(f LatentFormat, latents []float32, shape []int, i int) *image.NRGBA {
	if len(shape) != 4 && len(shape) != 5 {
		return nil
	}
	for _, d := range shape {
		if d < 1 {
			return nil
		}
	}
	n, c := shape[0], shape[1]
	h, w := shape[len(shape)-2], shape[len(shape)-1]
	per := 1
	for _, d := range shape[1:] {
		per *= d
	}
	if c == 0 || c != len(f.RGB) || i < 0 || i >= n || h <= 0 || w <= 0 || len(latents) < n*per {
		return nil
	}
	frames := per / (c * h * w)
	plane := h * w
	base := i * per
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			rgb := f.RGBBias
			for ch := range c {
				v := latents[base+ch*frames*plane+y*w+x]
				for k := range 3 {
					rgb[k] += v * f.RGB[ch][k]
				}
			}
			img.SetNRGBA(x, y, color.NRGBA{R: to8((rgb[0] + 1) / 2), G: to8((rgb[1] + 1) / 2), B: to8((rgb[2] + 1) / 2), A: 255})
		}
	}
	return img
}
