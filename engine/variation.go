package engine

import (
	"math"

	"github.com/darkroom-ai/darkroom/engine/rng"
)

// initialNoise is a request's unit initial noise for latents [B, C, h, w]
// drawn from g (the seed's generator): the seed's noise, blended towards
// the variation seed's by VariationStrength and, with a SeedResizeFrom
// size, drawn at that size and pasted centred into the seed's noise of the
// real size, as A1111 defines variation seeds and "resize seed from"
// (create_random_tensors); the batch is one tensor per seed, as ComfyUI
// draws it.
func initialNoise(req Request, shape []int, g *rng.Torch) []float32 {
	b, c, h, w := shape[0], shape[1], shape[2], shape[3]
	factor := 8
	if req.Width > 0 && w > 0 {
		factor = max(1, req.Width/w)
	}
	nh, nw := h, w
	if req.SeedResizeFromW > 0 && req.SeedResizeFromH > 0 {
		nh, nw = max(1, req.SeedResizeFromH/factor), max(1, req.SeedResizeFromW/factor)
	}
	resized := nh != h || nw != w
	if !resized && req.VariationStrength == 0 {
		return g.Randn(b * c * h * w)
	}
	// The seed's generator draws the (from-size) noise first; a resize
	// then draws the full-size noise from a fresh generator of the seed.
	noise := g.Randn(b * c * nh * nw)
	if req.VariationStrength != 0 {
		sub := rng.NewTorch(req.VariationSeed).Randn(b * c * nh * nw)
		per := c * nh * nw
		for i := range b {
			slerpA1111(noise[i*per:(i+1)*per], sub[i*per:(i+1)*per], float32(req.VariationStrength), c, nh, nw)
		}
	}
	if !resized {
		return noise
	}
	x := rng.NewTorch(req.Seed).Randn(b * c * h * w)
	dx, dy := (w-nw)/2, (h-nh)/2
	cw, ch := nw, nh
	if dx < 0 {
		cw = nw + 2*dx
	}
	if dy < 0 {
		ch = nh + 2*dy
	}
	tx, ty := max(dx, 0), max(dy, 0)
	sx, sy := max(-dx, 0), max(-dy, 0)
	for i := range b * c {
		for y := range ch {
			dst := x[i*h*w+(ty+y)*w+tx:]
			src := noise[i*nh*nw+(sy+y)*nw+sx:]
			copy(dst[:cw], src[:cw])
		}
	}
	return x
}

// slerpA1111 replaces low ([c, h, w]) by A1111's slerp of low and high at
// val: both normalised along the height axis (dim 1, as A1111 calls it on
// one image's [C, H, W] noise), blended by the angle of each (channel,
// column); nearly parallel noises (mean cosine > 0.9995) are mixed
// linearly with A1111's weights, low·val + high·(1 − val).
func slerpA1111(low, high []float32, val float32, c, h, w int) {
	n := c * w
	dot := make([]float64, n)
	nl, nh := make([]float64, n), make([]float64, n)
	for ch := range c {
		for x := range w {
			k := ch*w + x
			for y := range h {
				i := (ch*h+y)*w + x
				nl[k] += float64(low[i]) * float64(low[i])
				nh[k] += float64(high[i]) * float64(high[i])
			}
			nl[k], nh[k] = math.Sqrt(nl[k]), math.Sqrt(nh[k])
		}
	}
	var mean float64
	for ch := range c {
		for x := range w {
			k := ch*w + x
			for y := range h {
				i := (ch*h+y)*w + x
				dot[k] += float64(low[i]) / nl[k] * float64(high[i]) / nh[k]
			}
			mean += dot[k]
		}
	}
	if mean/float64(n) > 0.9995 {
		for i := range low {
			low[i] = low[i]*val + high[i]*(1-val)
		}
		return
	}
	for ch := range c {
		for x := range w {
			k := ch*w + x
			omega := math.Acos(dot[k])
			so := math.Sin(omega)
			a, b := math.Sin((1-float64(val))*omega)/so, math.Sin(float64(val)*omega)/so
			for y := range h {
				i := (ch*h+y)*w + x
				low[i] = float32(a*float64(low[i]) + b*float64(high[i]))
			}
		}
	}
}
