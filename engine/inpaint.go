package engine

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"math"
	"strconv"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// greyMask is a mask in 0..1 (1: repaint), row-major.
type greyMask struct {
	w, h int
	v    []float32
}

// maskFromImage reads a mask image by its luminance (Rec. 601, as PIL's
// convert("L")): white repaints, black keeps, as A1111's and ComfyUI's
// mask images.
func maskFromImage(img image.Image) *greyMask {
	b := img.Bounds()
	m := &greyMask{w: b.Dx(), h: b.Dy(), v: make([]float32, b.Dx()*b.Dy())}
	for y := range m.h {
		for x := range m.w {
			c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
			m.v[y*m.w+x] = (299*float32(c.R) + 587*float32(c.G) + 114*float32(c.B)) / 1000 / 255
		}
	}
	return m
}

// maskFromAlpha is the repaint mask of an image's transparency (1 − alpha,
// as ComfyUI's LoadImage makes its MASK output), or nil when the image is
// opaque everywhere.
func maskFromAlpha(img image.Image) *greyMask {
	b := img.Bounds()
	m := &greyMask{w: b.Dx(), h: b.Dy(), v: make([]float32, b.Dx()*b.Dy())}
	any := false
	for y := range m.h {
		for x := range m.w {
			_, _, _, a := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			m.v[y*m.w+x] = 1 - float32(a)/0xffff
			any = any || a != 0xffff
		}
	}
	if !any {
		return nil
	}
	return m
}

// image returns the mask as a grey image (for fitting with the image).
func (m *greyMask) image() *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, m.w, m.h))
	for i, v := range m.v {
		u := uint8(math.Round(float64(min(max(v, 0), 1)) * 255))
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = u, u, u, 255
	}
	return img
}

// fitMask fits a mask as FitImage fits its image; ResizeFill's borders
// repeat the mask's edges as the image's do.
func fitMask(m *greyMask, w, h int, mode string) (*greyMask, error) {
	if m.w == w && m.h == h {
		return m, nil
	}
	img, err := FitImage(m.image(), w, h, mode)
	if err != nil {
		return nil, err
	}
	out := &greyMask{w: w, h: h, v: make([]float32, w*h)}
	for i := range out.v {
		out.v[i] = float32(img.Pix[4*i]) / 255
	}
	return out, nil
}

// grow dilates the mask by n pixels (a (2n+1)² maximum filter: ComfyUI's
// GrowMask with square corners, n times a 3×3 maximum).
func (m *greyMask) grow(n int) *greyMask {
	if n <= 0 {
		return m
	}
	tmp := make([]float32, len(m.v))
	for y := range m.h {
		for x := range m.w {
			var v float32
			for dx := max(x-n, 0); dx <= min(x+n, m.w-1); dx++ {
				v = max(v, m.v[y*m.w+dx])
			}
			tmp[y*m.w+x] = v
		}
	}
	out := &greyMask{w: m.w, h: m.h, v: make([]float32, len(m.v))}
	for y := range m.h {
		for x := range m.w {
			var v float32
			for dy := max(y-n, 0); dy <= min(y+n, m.h-1); dy++ {
				v = max(v, tmp[dy*m.w+x])
			}
			out.v[y*m.w+x] = v
		}
	}
	return out
}

// blur smooths the mask with a Gaussian of standard deviation r pixels
// (A1111's mask blur), the borders clamped.
func (m *greyMask) blur(r int) *greyMask {
	if r <= 0 {
		return m
	}
	sigma := float64(r)
	rad := int(math.Ceil(3 * sigma))
	k := make([]float32, 2*rad+1)
	var sum float64
	for i := range k {
		d := float64(i - rad)
		w := math.Exp(-d * d / (2 * sigma * sigma))
		k[i] = float32(w)
		sum += w
	}
	for i := range k {
		k[i] /= float32(sum)
	}
	pass := func(src []float32, horizontal bool) []float32 {
		dst := make([]float32, len(src))
		for y := range m.h {
			for x := range m.w {
				var v float32
				for i, w := range k {
					sx, sy := x, y
					if horizontal {
						sx = min(max(x+i-rad, 0), m.w-1)
					} else {
						sy = min(max(y+i-rad, 0), m.h-1)
					}
					v += w * src[sy*m.w+sx]
				}
				dst[y*m.w+x] = v
			}
		}
		return dst
	}
	return &greyMask{w: m.w, h: m.h, v: pass(pass(m.v, true), false)}
}

// latent resamples the mask to the latent grid with bilinear
// interpolation at pixel centres (torch's interpolate, bilinear,
// align_corners=False, as ComfyUI's prepare_mask), no antialiasing.
func (m *greyMask) latent(w, h int) []float32 {
	out := make([]float32, w*h)
	sx, sy := float64(m.w)/float64(w), float64(m.h)/float64(h)
	for y := range h {
		fy := max((float64(y)+0.5)*sy-0.5, 0)
		y0 := min(int(fy), m.h-1)
		y1 := min(y0+1, m.h-1)
		ly := float32(fy - float64(y0))
		for x := range w {
			fx := max((float64(x)+0.5)*sx-0.5, 0)
			x0 := min(int(fx), m.w-1)
			x1 := min(x0+1, m.w-1)
			lx := float32(fx - float64(x0))
			top := m.v[y0*m.w+x0]*(1-lx) + m.v[y0*m.w+x1]*lx
			bot := m.v[y1*m.w+x0]*(1-lx) + m.v[y1*m.w+x1]*lx
			out[y*w+x] = top*(1-ly) + bot*ly
		}
	}
	return out
}

// Outpaint is the padding of an outpainting run in pixels per side.
type Outpaint struct{ Left, Top, Right, Bottom int }

// ParseOutpaint reads "N" (every side) or "LEFT,TOP,RIGHT,BOTTOM".
func ParseOutpaint(s string) (Outpaint, error) {
	parts := strings.Split(s, ",")
	var v []int
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 || n > MaxSize {
			return Outpaint{}, fmt.Errorf("%q: want N or LEFT,TOP,RIGHT,BOTTOM in pixels (0 to %d)", s, MaxSize)
		}
		v = append(v, n)
	}
	switch len(v) {
	case 1:
		return Outpaint{v[0], v[0], v[0], v[0]}, nil
	case 4:
		return Outpaint{v[0], v[1], v[2], v[3]}, nil
	}
	return Outpaint{}, fmt.Errorf("%q: want N or LEFT,TOP,RIGHT,BOTTOM in pixels", s)
}

// pad extends img by the outpaint borders filled with mid grey and returns
// the repaint mask: 1 over the borders and, inside the image, feathered
// over `feather` pixels from each padded side as ((feather−d)/feather)²
// (ComfyUI's ImagePadForOutpaint).
func (o Outpaint) pad(img *image.NRGBA, feather int) (*image.NRGBA, *greyMask) {
	b := img.Bounds()
	iw, ih := b.Dx(), b.Dy()
	w, h := iw+o.Left+o.Right, ih+o.Top+o.Bottom
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(out.Pix); i += 4 {
		out.Pix[i], out.Pix[i+1], out.Pix[i+2], out.Pix[i+3] = 128, 128, 128, 255
	}
	m := &greyMask{w: w, h: h, v: make([]float32, w*h)}
	for i := range m.v {
		m.v[i] = 1
	}
	feathered := feather > 0 && 2*feather < iw && 2*feather < ih
	for y := range ih {
		copy(out.Pix[out.PixOffset(o.Left, o.Top+y):out.PixOffset(o.Left+iw, o.Top+y)], img.Pix[img.PixOffset(b.Min.X, b.Min.Y+y):img.PixOffset(b.Min.X+iw, b.Min.Y+y)])
		for x := range iw {
			var v float32
			if feathered {
				d := min(side(o.Top, y, ih), side(o.Bottom, ih-y, ih), side(o.Left, x, iw), side(o.Right, iw-x, iw))
				if d < feather {
					f := float32(feather-d) / float32(feather)
					v = f * f
				}
			}
			m.v[(o.Top+y)*w+o.Left+x] = v
		}
	}
	return out, m
}

// side is the distance to a padded side, or the whole extent when that
// side is not padded.
func side(pad, d, extent int) int {
	if pad == 0 {
		return extent
	}
	return d
}

// inpaintDenoiser wraps a denoiser for a run that repaints only where the
// latent mask is 1 (ComfyUI's KSamplerX0Inpaint over SetLatentNoiseMask):
// before each model call the unmasked part of x is replaced by the init
// latent noised to the call's sigma with the run's unit noise, and the
// unmasked part of the estimate by the init latent. mask holds one value
// per latent pixel of one image, broadcast over batch and channels.
func inpaintDenoiser(den sampling.Denoiser, latent, noise, mask []float32, flow bool) sampling.Denoiser {
	plane := len(mask)
	return func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
		xin := make([]float32, len(x))
		for i, v := range x {
			m := mask[i%plane]
			kept := latent[i] + sigma*noise[i]
			if flow {
				kept = sigma*noise[i] + (1-sigma)*latent[i]
			}
			xin[i] = v*m + kept*(1-m)
		}
		out, err := den(ctx, xin, sigma)
		if err != nil {
			return nil, err
		}
		for i := range out {
			m := mask[i%plane]
			out[i] = out[i]*m + latent[i]*(1-m)
		}
		return out, nil
	}
}

// composite pastes the init image back where the pixel mask is below 1:
// out = init·(1 − m) + generated·m, so unmasked pixels come back unchanged
// (A1111's inpainting overlay).
func composite(gen, init *image.NRGBA, m *greyMask) *image.NRGBA {
	out := image.NewNRGBA(gen.Bounds())
	for i, a := range m.v {
		a = min(max(a, 0), 1)
		for c := range 3 {
			v := float32(init.Pix[4*i+c])*(1-a) + float32(gen.Pix[4*i+c])*a
			out.Pix[4*i+c] = uint8(math.Round(float64(v)))
		}
		out.Pix[4*i+3] = 255
	}
	return out
}

// blankInpaintLatent is the latent of a black image that ComfyUI gives an
// inpainting model with no mask (model_base's blank_inpaint_image_like,
// SD1's VAE space, used for every 4-channel family).
var blankInpaintLatent = [4]float32{0.8223, -0.6876, 0.6364, 0.1380}

// inpaintConcat builds an inpainting model's extra channels for latents of
// shape [B, C, h, w], as ComfyUI's InpaintModelConditioning and concat_cond
// do: with a mask, the mask resampled to the latent grid and rounded, then
// the latents of the init image with the (rounded) masked pixels set to
// mid grey; without one (txt2img, or img2img with no mask), a mask of ones
// and the blank latent.
func (m *Model) inpaintConcat(ctx context.Context, shape []int, st *initState) ([]float32, error) {
	b, c, h, w := shape[0], shape[1], shape[2], shape[3]
	if m.c.InpaintChannels != c+1 {
		return nil, fmt.Errorf("inpainting model: %d extra channels for %d latent channels (want mask + latents)", m.c.InpaintChannels, c)
	}
	plane := h * w
	one := make([]float32, (c+1)*plane)
	if st == nil || st.mask == nil {
		if c != len(blankInpaintLatent) {
			return nil, fmt.Errorf("an inpainting model with %d latent channels needs a mask (--mask)", c)
		}
		for i := range plane {
			one[i] = 1
			for ch := range c {
				one[(1+ch)*plane+i] = blankInpaintLatent[ch]
			}
		}
	} else {
		for i, v := range st.latentMask {
			one[i] = float32(math.RoundToEven(float64(v)))
		}
		keep := make([]float32, len(st.mask.v))
		for i, v := range st.mask.v {
			keep[i] = 1 - float32(math.RoundToEven(float64(v)))
		}
		bb := st.img.Bounds()
		z, err := m.encodePixels(ctx, imagePixels(st.img, keep), bb.Dx(), bb.Dy(), nil)
		if err != nil {
			return nil, fmt.Errorf("inpainting model: the masked image: %w", err)
		}
		copy(one[plane:], z)
	}
	out := make([]float32, 0, b*len(one))
	for range b {
		out = append(out, one...)
	}
	return out, nil
}
