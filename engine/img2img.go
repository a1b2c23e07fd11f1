package engine

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif"  // init images
	_ "image/jpeg" // init images
	_ "image/png"  // init images
	"math"
	"os"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// How an init image of another size or aspect becomes the request's size
// (Request.Resize): A1111's "Crop and resize", "Resize and fill" and "Just
// resize". Resampling is Lanczos-3 (PIL's LANCZOS, which A1111 uses).
const (
	// ResizeCrop scales the image to cover the size and cuts the overflow
	// evenly from both sides (the default).
	ResizeCrop = "crop"
	// ResizeFill scales the image to fit inside the size and fills the
	// borders with its edge pixels.
	ResizeFill = "fill"
	// ResizeStretch scales each side to the size, changing the aspect.
	ResizeStretch = "stretch"
)

// Which steps an img2img run makes of Steps and Denoise
// (Request.DenoiseSteps).
const (
	// DenoiseStepsComfy runs Steps steps: the last Steps of a
	// Steps/Denoise schedule (ComfyUI's KSampler, A1111 with "do exactly
	// the amount of steps the slider specifies").
	DenoiseStepsComfy = "comfyui"
	// DenoiseStepsA1111 runs the last int(Denoise·Steps)+1 steps of a
	// Steps schedule (A1111's default, denoise capped at 0.999).
	DenoiseStepsA1111 = "a1111"
	// DenoiseStepsDiffusers runs the last int(Steps·strength) steps of a
	// Steps schedule (diffusers' img2img pipelines).
	DenoiseStepsDiffusers = "diffusers"
)

// defaultOutpaintFeather is ComfyUI's ImagePadForOutpaint default.
const defaultOutpaintFeather = 40

var (
	resizeModes  = []string{ResizeCrop, ResizeFill, ResizeStretch}
	denoiseRules = []string{DenoiseStepsComfy, DenoiseStepsA1111, DenoiseStepsDiffusers}
)

// LoadImage reads a PNG, JPEG or GIF file (the first frame).
func LoadImage(path string) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return nil, fmt.Errorf("%s: not a PNG, JPEG or GIF image", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// initSize fills a zero width or height of an img2img request from its
// init image (with the outpaint borders): both zero take the image's
// size, one zero keeps the image's aspect; the result is rounded down to
// a multiple of 8 (ComfyUI's VAEEncode crops the pixels so).
func initSize(req *Request) error {
	if req.InitImage == "" || (req.Width != 0 && req.Height != 0) {
		return nil
	}
	f, err := os.Open(req.InitImage)
	if err != nil {
		return &FieldError{Field: "init_image", Value: req.InitImage, Msg: err.Error()}
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return &FieldError{Field: "init_image", Value: req.InitImage, Msg: "not a PNG, JPEG or GIF image"}
	}
	w, h := cfg.Width, cfg.Height
	if req.Outpaint != "" {
		o, err := ParseOutpaint(req.Outpaint)
		if err != nil {
			return &FieldError{Field: "outpaint", Value: req.Outpaint, Msg: err.Error()}
		}
		w, h = w+o.Left+o.Right, h+o.Top+o.Bottom
	}
	switch {
	case req.Width == 0 && req.Height == 0:
	case req.Width == 0:
		w, h = int(math.Round(float64(req.Height)*float64(w)/float64(h))), req.Height
	default:
		w, h = req.Width, int(math.Round(float64(req.Width)*float64(h)/float64(w)))
	}
	req.Width, req.Height = min(max(w/8*8, MinSize), MaxSize), min(max(h/8*8, MinSize), MaxSize)
	return nil
}

// FitImage returns img at w×h, resized by mode (ResizeCrop, ResizeFill or
// ResizeStretch; "" is crop) with Lanczos-3 resampling; an image already
// w×h is copied unchanged. Alpha is dropped (as PIL's convert("RGB")).
func FitImage(img image.Image, w, h int, mode string) (*image.NRGBA, error) {
	b := img.Bounds()
	iw, ih := b.Dx(), b.Dy()
	if iw < 1 || ih < 1 {
		return nil, fmt.Errorf("the image is empty")
	}
	src := toFloatRGB(img)
	var out *floatImage
	switch mode {
	case "", ResizeCrop:
		s := math.Max(float64(w)/float64(iw), float64(h)/float64(ih))
		rw, rh := max(w, int(math.Round(float64(iw)*s))), max(h, int(math.Round(float64(ih)*s)))
		out = src.resize(rw, rh).crop((rw-w)/2, (rh-h)/2, w, h)
	case ResizeFill:
		s := math.Min(float64(w)/float64(iw), float64(h)/float64(ih))
		rw, rh := min(w, max(1, int(math.Round(float64(iw)*s)))), min(h, max(1, int(math.Round(float64(ih)*s))))
		out = src.resize(rw, rh).pad(w, h, (w-rw)/2, (h-rh)/2)
	case ResizeStretch:
		out = src.resize(w, h)
	default:
		return nil, fmt.Errorf("resize mode %q: want crop, fill or stretch", mode)
	}
	return out.nrgba(), nil
}

// floatImage is an RGB image as float32 byte values, row-major, 3 per pixel.
type floatImage struct {
	w, h int
	pix  []float32
}

func toFloatRGB(img image.Image) *floatImage {
	b := img.Bounds()
	f := &floatImage{w: b.Dx(), h: b.Dy(), pix: make([]float32, 3*b.Dx()*b.Dy())}
	for y := range f.h {
		for x := range f.w {
			c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
			i := 3 * (y*f.w + x)
			f.pix[i], f.pix[i+1], f.pix[i+2] = float32(c.R), float32(c.G), float32(c.B)
		}
	}
	return f
}

func (f *floatImage) nrgba() *image.NRGBA {
	out := image.NewNRGBA(image.Rect(0, 0, f.w, f.h))
	for i := range f.w * f.h {
		for c := range 3 {
			v := math.Round(float64(f.pix[3*i+c]))
			out.Pix[4*i+c] = uint8(min(max(v, 0), 255))
		}
		out.Pix[4*i+3] = 255
	}
	return out
}

// resize resamples with a Lanczos-3 filter, horizontally then vertically,
// the filter widened by the scale when shrinking (antialiasing), as PIL's
// resample does.
func (f *floatImage) resize(w, h int) *floatImage {
	if w == f.w && h == f.h {
		return f
	}
	tmp := &floatImage{w: w, h: f.h, pix: make([]float32, 3*w*f.h)}
	for x, k := range lanczosWeights(f.w, w) {
		for y := range f.h {
			var r, g, b float32
			for j, wt := range k.w {
				i := 3 * (y*f.w + k.first + j)
				r, g, b = r+wt*f.pix[i], g+wt*f.pix[i+1], b+wt*f.pix[i+2]
			}
			o := 3 * (y*w + x)
			tmp.pix[o], tmp.pix[o+1], tmp.pix[o+2] = r, g, b
		}
	}
	out := &floatImage{w: w, h: h, pix: make([]float32, 3*w*h)}
	for y, k := range lanczosWeights(f.h, h) {
		for x := range w {
			var r, g, b float32
			for j, wt := range k.w {
				i := 3 * ((k.first+j)*w + x)
				r, g, b = r+wt*tmp.pix[i], g+wt*tmp.pix[i+1], b+wt*tmp.pix[i+2]
			}
			o := 3 * (y*w + x)
			out.pix[o], out.pix[o+1], out.pix[o+2] = r, g, b
		}
	}
	return out
}

type filterTaps struct {
	first int
	w     []float32
}

// lanczosWeights returns, for each of n output positions, the normalised
// Lanczos-3 taps over the m input positions it reads.
func lanczosWeights(m, n int) []filterTaps {
	const support = 3.0
	scale := float64(m) / float64(n)
	fs := math.Max(scale, 1)
	out := make([]filterTaps, n)
	for i := range out {
		center := (float64(i) + 0.5) * scale
		lo := max(int(center-support*fs+0.5), 0)
		hi := min(int(center+support*fs+0.5), m)
		w := make([]float64, hi-lo)
		var sum float64
		for j := range w {
			w[j] = lanczos3((float64(lo+j) - center + 0.5) / fs)
			sum += w[j]
		}
		taps := filterTaps{first: lo, w: make([]float32, len(w))}
		for j := range w {
			if sum != 0 {
				taps.w[j] = float32(w[j] / sum)
			}
		}
		out[i] = taps
	}
	return out
}

func lanczos3(x float64) float64 {
	if x <= -3 || x >= 3 {
		return 0
	}
	return sinc(x) * sinc(x/3)
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}

// crop cuts a w×h window at (x0, y0).
func (f *floatImage) crop(x0, y0, w, h int) *floatImage {
	out := &floatImage{w: w, h: h, pix: make([]float32, 3*w*h)}
	for y := range h {
		copy(out.pix[3*y*w:3*(y+1)*w], f.pix[3*((y+y0)*f.w+x0):3*((y+y0)*f.w+x0+w)])
	}
	return out
}

// pad places f at (x0, y0) of a w×h image whose borders repeat f's edge
// pixels.
func (f *floatImage) pad(w, h, x0, y0 int) *floatImage {
	out := &floatImage{w: w, h: h, pix: make([]float32, 3*w*h)}
	for y := range h {
		sy := min(max(y-y0, 0), f.h-1)
		for x := range w {
			sx := min(max(x-x0, 0), f.w-1)
			copy(out.pix[3*(y*w+x):3*(y*w+x)+3], f.pix[3*(sy*f.w+sx):3*(sy*f.w+sx)+3])
		}
	}
	return out
}

// EncodeImage VAE-encodes an image already at the model's size into
// sampler latents [1, C, h, w] (the latent distribution's mean, as
// ComfyUI's VAEEncode).
func (m *Model) EncodeImage(ctx context.Context, img *image.NRGBA) ([]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.encodeImage(ctx, img, nil)
}

// encodeImage encodes img; with g it samples the latent distribution with
// g's next normals (diffusers' img2img), else it takes the mean.
func (m *Model) encodeImage(ctx context.Context, img *image.NRGBA, g *rng.Torch) ([]float32, error) {
	return m.encodePixels(ctx, imagePixels(img, nil), img.Bounds().Dx(), img.Bounds().Dy(), g)
}

// imagePixels maps an image to planar RGB in [−1, 1] ([3, h, w]); where
// keep (optional, one value per pixel) is 0 the pixel becomes 0, the
// mid grey ComfyUI's inpainting conditioning puts under the mask.
func imagePixels(img *image.NRGBA, keep []float32) []float32 {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	px := make([]float32, 3*w*h)
	for y := range h {
		for x := range w {
			o := img.PixOffset(b.Min.X+x, b.Min.Y+y)
			for c := range 3 {
				v := float32(img.Pix[o+c])/255*2 - 1
				if keep != nil {
					v *= keep[y*w+x]
				}
				px[c*w*h+y*w+x] = v
			}
		}
	}
	return px
}

// encodePixels encodes planar pixels in [−1, 1] of a w×h image.
func (m *Model) encodePixels(ctx context.Context, px []float32, w, h int, g *rng.Torch) ([]float32, error) {
	f := m.LatentFormat()
	if w%f.Factor != 0 || h%f.Factor != 0 {
		return nil, fmt.Errorf("encode: image %dx%d: sides must be multiples of %d", w, h, f.Factor)
	}
	t := m.dev.Upload(px, 1, 3, h, w)
	defer m.dev.Free(t)
	if g != nil {
		s, ok := m.c.VAE.(family.SampledEncoder)
		if !ok {
			return nil, fmt.Errorf("encode: this model's VAE has no latent distribution to sample")
		}
		eps := g.Randn(f.Channels * (h / f.Factor) * (w / f.Factor))
		lat, err := s.EncodeSample(ctx, m.dev, t, eps)
		if err != nil {
			return nil, err
		}
		defer m.dev.Free(lat)
		return m.dev.Download(lat)
	}
	lat, err := m.c.VAE.Encode(ctx, m.dev, t)
	if err != nil {
		return nil, err
	}
	defer m.dev.Free(lat)
	return m.dev.Download(lat)
}

// initState is what an img2img request's init image became: the fitted
// image, its latents (repeated for the batch), and for inpainting the
// pixel mask (grown and blurred) and its latent-grid version.
type initState struct {
	img        *image.NRGBA
	latents    []float32
	mask       *greyMask
	latentMask []float32
	// notes are what the job should tell the user (a mask resized).
	notes []string
}

// prepareInit loads, pads (outpaint), fits and encodes a request's init
// image and builds its repaint mask (--mask, the outpaint borders, or the
// image's transparency). Under diffusers' convention the latents are
// sampled with g (which then draws the noise), as diffusers' img2img
// pipelines do.
func (m *Model) prepareInit(ctx context.Context, req Request, conv Convention, g *rng.Torch) (*initState, error) {
	src, err := LoadImage(req.InitImage)
	if err != nil {
		return nil, &FieldError{Field: "init_image", Value: req.InitImage, Msg: trimPath(err, req.InitImage)}
	}
	var mask *greyMask
	if req.Outpaint != "" {
		o, err := ParseOutpaint(req.Outpaint)
		if err != nil {
			return nil, &FieldError{Field: "outpaint", Value: req.Outpaint, Msg: err.Error()}
		}
		full, _ := FitImage(src, src.Bounds().Dx(), src.Bounds().Dy(), ResizeStretch)
		feather := req.OutpaintFeather
		if feather == 0 {
			feather = defaultOutpaintFeather
		}
		padded, pm := o.pad(full, feather)
		src, mask = padded, pm
	}
	fit, err := FitImage(src, req.Width, req.Height, req.Resize)
	if err != nil {
		return nil, &FieldError{Field: "init_image", Value: req.InitImage, Msg: err.Error()}
	}
	switch {
	case req.Mask != "" && mask != nil:
		return nil, &FieldError{Field: "mask", Value: req.Mask, Msg: "--outpaint makes its own mask (the new borders); give one or the other"}
	case req.Mask != "":
		mi, err := LoadImage(req.Mask)
		if err != nil {
			return nil, &FieldError{Field: "mask", Value: req.Mask, Msg: trimPath(err, req.Mask)}
		}
		mask = maskFromImage(mi)
	case mask == nil:
		mask = maskFromAlpha(src)
	}
	st := &initState{img: fit}
	if mask != nil && req.Mask != "" {
		if mask.w != req.Width || mask.h != req.Height {
			st.notes = append(st.notes, fmt.Sprintf("--mask %s: %dx%d, fitted to %dx%d like the init image (--resize %s)", req.Mask, mask.w, mask.h, req.Width, req.Height, orDefault(req.Resize, ResizeCrop)))
		}
		lo, hi := mask.v[0], mask.v[0]
		for _, v := range mask.v {
			lo, hi = min(lo, v), max(hi, v)
		}
		switch {
		case hi == 0:
			return nil, &FieldError{Field: "mask", Value: req.Mask, Msg: "is all black: nothing to repaint (white repaints)"}
		case lo == 1:
			st.notes = append(st.notes, fmt.Sprintf("--mask %s is all white: the whole image is repainted (plain img2img)", req.Mask))
		}
	}
	if mask != nil {
		if st.mask, err = fitMask(mask, req.Width, req.Height, req.Resize); err != nil {
			return nil, &FieldError{Field: "mask", Value: req.Mask, Msg: err.Error()}
		}
		st.mask = st.mask.grow(req.MaskGrow).blur(req.MaskBlur)
		f := m.LatentFormat()
		st.latentMask = st.mask.latent(req.Width/f.Factor, req.Height/f.Factor)
	}
	var sample *rng.Torch
	if conv != ConventionComfy {
		sample = g
	}
	one, err := m.encodeImage(ctx, fit, sample)
	if err != nil {
		return nil, fmt.Errorf("--init-image %s: %w", req.InitImage, err)
	}
	st.latents = make([]float32, 0, len(one)*req.Batch)
	for range req.Batch {
		st.latents = append(st.latents, one...)
	}
	return st, nil
}

// trimPath drops a leading "path: " from err's text, since the field error
// names the file already.
func trimPath(err error, path string) string {
	s := err.Error()
	if p := path + ": "; len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// denoiseRule is the request's img2img step rule: its own, or the
// convention's peer (ComfyUI's, or diffusers' under the diffusers
// convention).
func denoiseRule(req Request, conv Convention) string {
	if req.DenoiseSteps != "" {
		return req.DenoiseSteps
	}
	if conv != ConventionComfy {
		return DenoiseStepsDiffusers
	}
	return DenoiseStepsComfy
}

// img2imgSigmas returns the sigmas a partial run (0 < denoise < 1) samples
// under the step rule; flow marks a flow-matching model, whose diffusers
// pipelines count the steps in floats.
func img2imgSigmas(rule, sampler, scheduler string, s sampling.Schedule, steps int, denoise float64, flow bool) ([]float32, error) {
	if rule == DenoiseStepsComfy || rule == "" {
		return sampling.SamplerSigmasDenoise(sampler, scheduler, s, steps, denoise)
	}
	full, err := sampling.SamplerSigmas(sampler, scheduler, s, steps)
	if err != nil {
		return nil, err
	}
	n := len(full) - 1 // the steps of the schedule (some samplers drop one)
	var run int
	switch {
	case rule == DenoiseStepsA1111:
		run = int(math.Min(denoise, 0.999)*float64(n)) + 1
	case rule == DenoiseStepsDiffusers && flow:
		// The flow pipelines' get_timesteps (Flux, SD3): t_start =
		// int(steps − steps·strength), in floats.
		run = n - int(math.Max(float64(n)-float64(n)*denoise, 0))
	case rule == DenoiseStepsDiffusers:
		run = min(int(float64(n)*denoise), n)
	default:
		return nil, fmt.Errorf("denoise step rule %q: want comfyui, a1111 or diffusers", rule)
	}
	return full[n-run:], nil
}

// orDefault returns v, or def when v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
