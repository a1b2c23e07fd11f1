package engine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// Hires-fix upscalers (Request.HiresUpscaler): the latent ones resample
// the first pass's latents as ComfyUI's LatentUpscale methods do
// (nearest-exact, bilinear, bicubic, bislerp); "lanczos" decodes, resizes
// the image with Lanczos-3 and encodes it again.
const (
	UpscaleLatentNearest  = "latent-nearest"
	UpscaleLatentBilinear = "latent-bilinear"
	UpscaleLatentBicubic  = "latent-bicubic"
	UpscaleLatentBislerp  = "latent-bislerp"
	UpscaleLanczos        = "lanczos"
)

var hiresUpscalers = []string{UpscaleLanczos, UpscaleLatentNearest, UpscaleLatentBilinear, UpscaleLatentBicubic, UpscaleLatentBislerp}

// IsUpscalerModel reports whether a Request.HiresUpscaler value names an
// upscaler model (a name in the upscale_models folders or a file) rather
// than one of the built-in methods.
func IsUpscalerModel(s string) bool { return s != "" && !slices.Contains(hiresUpscalers, s) }

// defaultHiresDenoise is the second pass's strength when the request gives
// none (A1111's and ComfyUI's usual 0.5).
const defaultHiresDenoise = 0.5

// hiresSize is the second pass's size: the first pass's times the factor,
// rounded to a multiple of 8.
func hiresSize(req Request) (int, int) {
	r := func(v int) int { return max(8, int(math.Round(float64(v)*req.Hires/8))*8) }
	return r(req.Width), r(req.Height)
}

// hiresPass upscales the first pass's latents to the hires size and runs
// the second pass over them: img2img at HiresDenoise (ComfyUI's rule:
// HiresSteps or Steps steps of a longer schedule), with fresh noise from
// the request's seed (the second KSampler of a ComfyUI hires workflow,
// A1111's hires fix).
//
// model is the upscaler model a request's HiresUpscaler names (nil for the
// built-in methods).
func (m *Model) hiresPass(ctx context.Context, req Request, p SampleParams, lat []float32, onEvent func(Event), model *Upscaler) ([]float32, []int, error) {
	w2, h2 := hiresSize(req)
	if max(w2, h2) > MaxSize {
		return nil, nil, &FieldError{Field: "hires", Value: req.Hires, Msg: fmt.Sprintf("makes %dx%d, larger than %d", w2, h2, MaxSize)}
	}
	f := m.LatentFormat()
	shape := slices.Clone(p.Shape)
	shape[len(shape)-1], shape[len(shape)-2] = w2/f.Factor, h2/f.Factor
	var up []float32
	var err error
	switch {
	case req.HiresUpscaler == "" || req.HiresUpscaler == UpscaleLanczos:
		up, err = m.upscaleImage(ctx, lat, p.Shape, w2, h2, nil)
	case IsUpscalerModel(req.HiresUpscaler):
		if model == nil {
			return nil, nil, &FieldError{Field: "hires_upscaler", Value: req.HiresUpscaler, Msg: "an upscaler model that was not loaded"}
		}
		up, err = m.upscaleImage(ctx, lat, p.Shape, w2, h2, model)
	default:
		up, err = upscaleLatents(lat, p.Shape, shape[len(shape)-1], shape[len(shape)-2], req.HiresUpscaler)
	}
	if err != nil {
		return nil, nil, err
	}
	m.c.Denoiser.Reset()
	q := p
	q.Shape, q.Width, q.Height = shape, w2, h2
	q.Latent, q.Mask, q.Start, q.Sigmas, q.Concat = up, nil, nil, nil, nil // an inpainting model: blank channels
	q.Noise = rng.NewTorch(req.Seed).Randn(tensor.Shape(shape).NumElements())
	q.Denoise = req.HiresDenoise
	if q.Denoise == 0 {
		q.Denoise = defaultHiresDenoise
	}
	if req.HiresSteps > 0 {
		q.Steps = req.HiresSteps
	}
	q.DenoiseSteps = DenoiseStepsComfy
	out, err := m.sample(ctx, q, onEvent)
	if err != nil {
		return nil, nil, fmt.Errorf("hires pass: %w", err)
	}
	return out, shape, nil
}

// upscaleImage decodes the latents, resizes each image to w×h with
// Lanczos-3 and encodes it again (the distribution's mean). With an
// upscaler model the image is first enlarged by the model, as many times
// as it takes to reach w×h (A1111's hires fix: a 2× model runs twice for
// a 4× hires fix), then resized to w×h with Lanczos.
func (m *Model) upscaleImage(ctx context.Context, lat []float32, shape []int, w, h int, model *Upscaler) ([]float32, error) {
	imgs, err := m.decodeImages(ctx, lat, shape)
	if err != nil {
		return nil, err
	}
	var out []float32
	for _, img := range imgs {
		if model != nil {
			for pass := 0; pass < 4 && model.Scale() > 1 && (img.Bounds().Dx() < w || img.Bounds().Dy() < h); pass++ {
				if img, err = model.Upscale(ctx, img, UpscaleOptions{}); err != nil {
					return nil, fmt.Errorf("hires upscale: %w", err)
				}
			}
		}
		big, err := FitImage(img, w, h, ResizeStretch)
		if err != nil {
			return nil, err
		}
		z, err := m.encodeImage(ctx, big, nil)
		if err != nil {
			return nil, fmt.Errorf("hires upscale: %w", err)
		}
		out = append(out, z...)
	}
	return out, nil
}

// upscaleLatents resamples [B, C, h, w] latents to [B, C, h2, w2] (w2, h2
// given) as torch.nn.functional.interpolate does (nearest-exact, bilinear
// and bicubic with align_corners=False, no antialiasing) or by ComfyUI's
// bislerp.
func upscaleLatents(x []float32, shape []int, w2, h2 int, method string) ([]float32, error) {
	if len(shape) != 4 {
		return nil, fmt.Errorf("hires upscale: latents %v are not an image batch", shape)
	}
	b, c, h, w := shape[0], shape[1], shape[2], shape[3]
	if method == UpscaleLatentBislerp {
		return bislerp(x, b, c, h, w, h2, w2), nil
	}
	out := make([]float32, b*c*h2*w2)
	var plane func(src, dst []float32)
	switch method {
	case UpscaleLatentNearest:
		plane = func(src, dst []float32) {
			for y := range h2 {
				sy := min(int(math.Floor((float64(y)+0.5)*float64(h)/float64(h2))), h-1)
				for x := range w2 {
					sx := min(int(math.Floor((float64(x)+0.5)*float64(w)/float64(w2))), w-1)
					dst[y*w2+x] = src[sy*w+sx]
				}
			}
		}
	case UpscaleLatentBilinear:
		plane = func(src, dst []float32) { copy(dst, (&greyMask{w: w, h: h, v: src}).latent(w2, h2)) }
	case UpscaleLatentBicubic:
		plane = func(src, dst []float32) { bicubicPlane(src, w, h, dst, w2, h2) }
	default:
		return nil, fmt.Errorf("hires upscaler %q: want %s", method, strings.Join(hiresUpscalers, ", "))
	}
	for i := range b * c {
		plane(x[i*h*w:(i+1)*h*w], out[i*h2*w2:(i+1)*h2*w2])
	}
	return out, nil
}

// bicubicPlane is torch's bicubic interpolation (A = −0.75,
// align_corners=False, source indices clamped at the borders).
func bicubicPlane(src []float32, w, h int, dst []float32, w2, h2 int) {
	const a = -0.75
	cubic := func(t float64) [4]float64 {
		c1 := func(x float64) float64 { return ((a+2)*x-(a+3))*x*x + 1 }
		c2 := func(x float64) float64 { return ((a*x-5*a)*x+8*a)*x - 4*a }
		return [4]float64{c2(t + 1), c1(t), c1(1 - t), c2(2 - t)}
	}
	at := func(x, y int) float64 { return float64(src[min(max(y, 0), h-1)*w+min(max(x, 0), w-1)]) }
	for y := range h2 {
		fy := (float64(y)+0.5)*float64(h)/float64(h2) - 0.5
		y0 := int(math.Floor(fy))
		wy := cubic(fy - float64(y0))
		for x := range w2 {
			fx := (float64(x)+0.5)*float64(w)/float64(w2) - 0.5
			x0 := int(math.Floor(fx))
			wx := cubic(fx - float64(x0))
			var v float64
			for j := range 4 {
				var row float64
				for i := range 4 {
					row += wx[i] * at(x0-1+i, y0-1+j)
				}
				v += wy[j] * row
			}
			dst[y*w2+x] = float32(v)
		}
	}
}

// bislerp is ComfyUI's bislerp upscale: along each axis in turn, every new
// position blends its two source neighbours (bilinear positions, the
// second index one past the first, clamped) by spherical interpolation of
// the channel vectors, their norms interpolated linearly; identical
// directions keep the first, opposite ones blend linearly.
func bislerp(x []float32, b, c, h, w, h2, w2 int) []float32 {
	// along w
	mid := make([]float32, b*c*h*w2)
	i1, i2, r := bilinearTaps(w, w2)
	v1, v2, o := make([]float32, c), make([]float32, c), make([]float32, c)
	for n := range b {
		for y := range h {
			for xo := range w2 {
				for ch := range c {
					base := ((n*c+ch)*h + y) * w
					v1[ch], v2[ch] = x[base+i1[xo]], x[base+i2[xo]]
				}
				slerpVec(o, v1, v2, r[xo])
				for ch := range c {
					mid[((n*c+ch)*h+y)*w2+xo] = o[ch]
				}
			}
		}
	}
	// along h
	out := make([]float32, b*c*h2*w2)
	i1, i2, r = bilinearTaps(h, h2)
	for n := range b {
		for yo := range h2 {
			for xo := range w2 {
				for ch := range c {
					base := (n*c + ch) * h * w2
					v1[ch], v2[ch] = mid[base+i1[yo]*w2+xo], mid[base+i2[yo]*w2+xo]
				}
				slerpVec(o, v1, v2, r[yo])
				for ch := range c {
					out[((n*c+ch)*h2+yo)*w2+xo] = o[ch]
				}
			}
		}
	}
	return out
}

// bilinearTaps are bislerp's source indices and ratios for n → m
// positions: the bilinear (align_corners=False) image of 0..n−1 gives the
// first index (truncated) and the ratio (its fraction); the image of
// 1..n−1, n−1 truncated gives the second.
func bilinearTaps(n, m int) (first, second []int, ratio []float32) {
	first, second, ratio = make([]int, m), make([]int, m), make([]float32, m)
	lerp := func(f func(int) float32, j int) float32 {
		s := max((float64(j)+0.5)*float64(n)/float64(m)-0.5, 0)
		i0 := min(int(s), n-1)
		i1 := min(i0+1, n-1)
		l := float32(s - float64(i0))
		return f(i0)*(1-l) + f(i1)*l
	}
	for j := range m {
		p := lerp(func(i int) float32 { return float32(i) }, j)
		first[j] = int(p)
		ratio[j] = p - float32(math.Floor(float64(p)))
		q := lerp(func(i int) float32 { return float32(min(i+1, n-1)) }, j)
		second[j] = int(q)
	}
	return first, second, ratio
}

// slerpVec writes ComfyUI's slerp of a and b at ratio t into dst.
func slerpVec(dst, a, b []float32, t float32) {
	var na, nb float64
	for i := range a {
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	na, nb = math.Sqrt(na), math.Sqrt(nb)
	var dot float64
	for i := range a {
		var ua, ub float64
		if na != 0 {
			ua = float64(a[i]) / na
		}
		if nb != 0 {
			ub = float64(b[i]) / nb
		}
		dot += ua * ub
	}
	switch {
	case dot > 1-1e-5:
		copy(dst, a)
		return
	case dot < 1e-5-1:
		for i := range a {
			dst[i] = a[i]*(1-t) + b[i]*t
		}
		return
	}
	omega := math.Acos(dot)
	so := math.Sin(omega)
	ca, cb := math.Sin((1-float64(t))*omega)/so, math.Sin(float64(t)*omega)/so
	norm := na*(1-float64(t)) + nb*float64(t)
	for i := range a {
		var ua, ub float64
		if na != 0 {
			ua = float64(a[i]) / na
		}
		if nb != 0 {
			ub = float64(b[i]) / nb
		}
		dst[i] = float32((ca*ua + cb*ub) * norm)
	}
}
