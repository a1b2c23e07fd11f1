package engine

import (
	"image"
	"image/color"
)

// sd1LatentRGB maps the 4 SD1 latent channels to RGB: a linear
// approximation of the VAE decoder, used for cheap live previews (the
// factors are the widely used ones fitted for SD1.x latents).
var sd1LatentRGB = [4][3]float32{
	{0.3512, 0.2297, 0.3227},
	{0.3250, 0.4974, 0.2350},
	{-0.2829, 0.1762, 0.2721},
	{-0.2120, -0.2616, -0.7177},
}

// LatentPreview renders batch item i of latents [shape] as a small RGB
// image (one pixel per latent cell) with the linear latent→RGB
// approximation. It returns nil when the latents are not 4-channel.
func LatentPreview(latents []float32, shape [4]int, i int) *image.NRGBA {
	c, h, w := shape[1], shape[2], shape[3]
	if c != 4 || i < 0 || i >= shape[0] || len(latents) < shape[0]*c*h*w {
		return nil
	}
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	base := i * c * h * w
	plane := h * w
	for y := range h {
		for x := range w {
			var rgb [3]float32
			for ch := range 4 {
				v := latents[base+ch*plane+y*w+x]
				for k := range 3 {
					rgb[k] += v * sd1LatentRGB[ch][k]
				}
			}
			img.SetNRGBA(x, y, color.NRGBA{R: to8((rgb[0] + 1) / 2), G: to8((rgb[1] + 1) / 2), B: to8((rgb[2] + 1) / 2), A: 255})
		}
	}
	return img
}
