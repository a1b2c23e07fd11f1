package engine

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/tensor"
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
		lat := latents[i*per : (i+1)*per]
		px, err := decodeOne(ctx, m.dev, m.c.VAE, lat, shape)
		if err != nil {
			return nil, err
		}
		if !allFinite(px) {
			// A 16-bit decode that overflowed (the SDXL VAE in fp16 does):
			// decode again in float32 on the CPU, never a black image.
			if px, err = m.decodeFloat32(ctx, lat, shape); err != nil {
				return nil, err
			}
		}
		for j, v := range px {
			px[j] = min(max(v, 0), 1)
		}
		out = append(out, px...)
	}
	return out, nil
}

// decodeOne decodes one image's latents on dev into pixels in 0..1 (not
// clamped).
func decodeOne(ctx context.Context, dev backend.Device, v family.VAE, lat []float32, shape []int) ([]float32, error) {
	lt := dev.Upload(lat, append([]int{1}, shape[1:]...)...)
	defer dev.Free(lt)
	img, err := v.Decode(ctx, dev, lt)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	defer dev.Free(img)
	dev.Affine(img, img, 0.5, 0.5)
	px, err := dev.Download(img)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return px, nil
}

// decodeFloat32 decodes on the CPU in float32 with a VAE built there from
// the model's weights (kept for the model's next overflow), and notes it
// in the job's notices.
func (m *Model) decodeFloat32(ctx context.Context, lat []float32, shape []int) ([]float32, error) {
	if _, onCPU := m.dev.(*cpu.Device); onCPU || m.c.VAEOn == nil {
		return nil, fmt.Errorf("decode: the VAE produced non-finite values (NaN or Inf): the latents or the VAE's weights are broken")
	}
	if m.cpuDev == nil {
		m.cpuDev = cpu.New()
	}
	if m.cpuVAE == nil {
		v, err := m.c.VAEOn(m.cpuDev)
		if err != nil {
			return nil, fmt.Errorf("decode: the VAE overflowed on %s and could not be built on the CPU: %w", m.dev.Name(), err)
		}
		m.cpuVAE = v
	}
	px, err := decodeOne(ctx, m.cpuDev, m.cpuVAE, lat, shape)
	if err != nil {
		return nil, err
	}
	if !allFinite(px) {
		return nil, fmt.Errorf("decode: the VAE produced non-finite values (NaN or Inf) even in float32: the latents or the VAE's weights are broken")
	}
	m.notices = append(m.notices, fmt.Sprintf("the VAE's 16-bit decode on %s overflowed (the SDXL VAE does in fp16); decoded again in float32 on the CPU — an fp16-fix VAE (--vae) or --precision bf16 avoids the detour", m.dev.Name()))
	return px, nil
}

func allFinite(v []float32) bool {
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
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
