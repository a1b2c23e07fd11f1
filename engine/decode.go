package engine

import (
	"context"
	"fmt"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"image"
	"image/color"
	"math"
)

// DecodeImages decodes latents [shape] with the VAE into 8-bit images.
// Images are decoded one at a time to bound memory.
func (m *Model) DecodeImages(ctx context.Context, latents []float32, shape []int) ([]*image.NRGBA, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.decodeImages(ctx, latents, shape)
}

func (m *Model) decodeImages(ctx context.Context, latents []float32, shape []int) ([]*image.NRGBA, error) {
	if len(shape) != 4 {
		return nil, fmt.Errorf("decode images: latent shape %v is not an image batch [B, C, h, w]", shape)
	}
	pix, err := m.decode(ctx, latents, shape)
	if err != nil {
		return nil, err
	}
	f := m.LatentFormat().Factor
	h, w := shape[2]*f, shape[3]*f
	imgs := make([]*image.NRGBA, shape[0])
	for i := range imgs {
		imgs[i] = ToNRGBA(pix[i*3*h*w:(i+1)*3*h*w], w, h)
	}
	return imgs, nil
}

// Decode runs the VAE decoder and returns pixels [N, 3, (T,) H, W] in 0..1
// (mapped from the decoder's [-1, 1] and clamped), float32.
func (m *Model) Decode(ctx context.Context, latents []float32, shape []int) ([]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.decode(ctx, latents, shape)
}

func (m *Model) decode(ctx context.Context, latents []float32, shape []int) ([]float32, error) {
	if err := m.checkShape(shape); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	n := tensor.Shape(shape).NumElements()
	if len(latents) != n {
		return nil, fmt.Errorf("decode: %d latent values for shape %v", len(latents), shape)
	}
	per := n / shape[0]
	var out []float32
	for i := range shape[0] {
		lt := m.dev.Upload(latents[i*per:(i+1)*per], append([]int{1}, shape[1:]...)...)
		img, err := m.c.VAE.Decode(ctx, m.dev, lt)
		if err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		m.dev.Affine(img, img, 0.5, 0.5)
		px, err := m.dev.Download(img)
		if err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		for j, v := range px {
			px[j] = min(max(v, 0), 1)
		}
		out = append(out, px...)
	}
	return out, nil
}

// ToNRGBA converts planar RGB in 0..1 ([3, h, w]) to an 8-bit image,
// rounding as torchvision/PIL pipelines do (round half away from zero of
// v·255).
func ToNRGBA(px []float32, w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	plane := w * h
	for y := range h {
		for x := range w {
			i := y*w + x
			img.SetNRGBA(x, y, color.NRGBA{R: to8(px[i]), G: to8(px[plane+i]), B: to8(px[2*plane+i]), A: 255})
		}
	}
	return img
}

func to8(v float32) uint8 {
	return uint8(math.Round(float64(min(max(v, 0), 1)) * 255))
}

// Enlarge returns img scaled n× with nearest-neighbour sampling (img itself
// when n ≤ 1), for viewing small images.
func Enlarge(img *image.NRGBA, n int) *image.NRGBA {
	if n <= 1 {
		return img
	}
	b := img.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx()*n, b.Dy()*n))
	for y := range b.Dy() * n {
		for x := range b.Dx() * n {
			out.SetNRGBA(x, y, img.NRGBAAt(b.Min.X+x/n, b.Min.Y+y/n))
		}
	}
	return out
}
