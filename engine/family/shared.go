package family

import (
	"context"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// Discrete is the model sampling of discrete-time DDPM families (SD1,
// SD2, SDXL): one schedule built as ComfyUI builds it and one as diffusers
// does.
type Discrete struct {
	comfy, diffusers *sampling.Discrete
	betaStart        float64
	betaEnd          float64
	steps            int
	kind             string
	zsnr             bool
}

// NewDiscrete builds the discrete model sampling of a beta schedule
// (sampling.NewDiscrete's arguments; SD1/SD2/SDXL: 0.00085, 0.012, 1000,
// "scaled_linear").
func NewDiscrete(betaStart, betaEnd float64, steps int, kind string) (*Discrete, error) {
	c, err := sampling.NewDiscrete(betaStart, betaEnd, steps, kind)
	if err != nil {
		return nil, err
	}
	d, err := sampling.NewDiscreteDiffusers(betaStart, betaEnd, steps, kind)
	if err != nil {
		return nil, err
	}
	return &Discrete{comfy: c, diffusers: d, betaStart: betaStart, betaEnd: betaEnd, steps: steps, kind: kind}, nil
}

// ZeroTerminalSNR returns the same schedule rescaled to zero terminal SNR
// (ComfyUI's ModelSamplingDiscrete zsnr option, diffusers'
// rescale_betas_zero_snr), for models trained that way.
func (d *Discrete) ZeroTerminalSNR() (ModelSampling, error) {
	if d.zsnr {
		return d, nil
	}
	c, err := sampling.NewDiscreteZSNR(d.betaStart, d.betaEnd, d.steps, d.kind, false)
	if err != nil {
		return nil, err
	}
	df, err := sampling.NewDiscreteZSNR(d.betaStart, d.betaEnd, d.steps, d.kind, true)
	if err != nil {
		return nil, err
	}
	return &Discrete{comfy: c, diffusers: df, betaStart: d.betaStart, betaEnd: d.betaEnd, steps: d.steps, kind: d.kind, zsnr: true}, nil
}

func (d *Discrete) sched(c Convention) *sampling.Discrete {
	if c == ConventionComfy {
		return d.comfy
	}
	return d.diffusers
}

// Schedule returns ComfyUI's float64-built schedule or diffusers' float32 one.
func (d *Discrete) Schedule(c Convention) sampling.Schedule { return d.sched(c) }

// Timestep is ComfyUI's nearest integer timestep in log sigma, diffusers'
// continuous interpolation, or its integer rounding (half to even, as
// numpy rounds).
func (d *Discrete) Timestep(c Convention, sigma float32) float32 {
	s := d.sched(c)
	switch c {
	case ConventionDiffusers:
		return s.Timestep(sigma)
	case ConventionDiffusersRounded:
		return float32(math.RoundToEven(float64(s.Timestep(sigma))))
	}
	return float32(s.NearestTimestep(sigma))
}

// NoiseScale is ComfyUI's sqrt(1+σ₀²) at full denoise (σ₀ otherwise,
// with or without an image, as its max_denoise test), diffusers'
// Euler-family σ₀, or diffusers' variance-preserving schedulers' unit
// noise, sqrt(1+σ₀²), from pure noise and σ₀ added to an image (their
// add_noise at the first timestep, in this space).
func (d *Discrete) NoiseScale(c Convention, sigma0 float32, fromImage bool) float32 {
	switch c {
	case ConventionDiffusers:
		return sigma0
	case ConventionDiffusersRounded:
		if fromImage {
			return sigma0
		}
		return float32(math.Sqrt(1 + float64(sigma0)*float64(sigma0)))
	}
	return sampling.InitialNoiseScale(sigma0, d.comfy.SigmaMax())
}

// Flow returns nil: discrete models are variance exploding in sigma.
func (d *Discrete) Flow() *sampling.Flow { return nil }

// ForScheduler returns the model sampling as diffusers' scheduler that
// implements the named ComfyUI scheduler uses it, where that differs from
// Timestep and NoiseScale: "normal" is diffusers' "linspace" spacing,
// whose Euler-family schedulers interpolate sigma linearly at fractional
// timesteps and feed the network those timesteps (not the log-sigma
// inverse of the sigma); "ddim_uniform" is its "leading" spacing, whose
// runs from pure noise start at sqrt(σ₀²+1)·noise. Under ComfyUI's
// convention it is d itself.
func (d *Discrete) ForScheduler(scheduler string) ModelSampling {
	return scheduledDiscrete{d, scheduler}
}

// scheduledDiscrete is a Discrete bound to the scheduler of a run.
type scheduledDiscrete struct {
	*Discrete
	scheduler string
}

// Timestep is diffusers' linspace timestep for the sigmas of "normal" and
// "sgm_uniform" under the continuous diffusers convention, and Discrete's
// otherwise.
func (s scheduledDiscrete) Timestep(c Convention, sigma float32) float32 {
	if c == ConventionDiffusers && (s.scheduler == "normal" || s.scheduler == "sgm_uniform") {
		return s.diffusers.InterpolatedTimestep(sigma)
	}
	return s.Discrete.Timestep(c, sigma)
}

// NoiseScale is sqrt(σ₀²+1) from pure noise for "ddim_uniform" under
// either diffusers convention (leading spacing's init_noise_sigma), and
// Discrete's otherwise.
func (s scheduledDiscrete) NoiseScale(c Convention, sigma0 float32, fromImage bool) float32 {
	if c != ConventionComfy && !fromImage && s.scheduler == "ddim_uniform" {
		return float32(math.Sqrt(1 + float64(sigma0)*float64(sigma0)))
	}
	return s.Discrete.NoiseScale(c, sigma0, fromImage)
}

// BatchContexts stacks the rows' contexts into one [rows, T, D] tensor.
// Contexts of different lengths (prompts of different window counts) are
// repeated along T to their least common multiple, as ComfyUI does when it
// batches cond and uncond.
func BatchContexts(dev backend.Device, rows []*Cond) (*backend.Tensor, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("batch contexts: no rows")
	}
	l, width := 1, 0
	for i, r := range rows {
		if r == nil || r.Context == nil {
			return nil, fmt.Errorf("batch contexts: row %d has no context", i)
		}
		s := r.Context.Shape
		if len(s) != 3 || s[0] != 1 {
			return nil, fmt.Errorf("batch contexts: row %d context %v, want [1, T, D]", i, s)
		}
		if i == 0 {
			width = s[2]
		} else if s[2] != width {
			return nil, fmt.Errorf("batch contexts: row %d context width %d, row 0 %d", i, s[2], width)
		}
		l = l / gcd(l, s[1]) * s[1]
	}
	repeated := map[*backend.Tensor]*backend.Tensor{}
	parts := make([]*backend.Tensor, len(rows))
	for i, r := range rows {
		t, ok := repeated[r.Context]
		if !ok {
			t = repeatTo(dev, r.Context, l)
			repeated[r.Context] = t
		}
		parts[i] = t
	}
	out := dev.Alloc(len(rows), l, width)
	dev.Concat(out, 0, parts...)
	return out, nil
}

// repeatTo repeats a [1, T, D] context along T to length n (a multiple of T).
func repeatTo(dev backend.Device, t *backend.Tensor, n int) *backend.Tensor {
	if t.Shape[1] == n {
		return t
	}
	parts := make([]*backend.Tensor, n/t.Shape[1])
	for i := range parts {
		parts[i] = t
	}
	out := dev.Alloc(1, n, t.Shape[2])
	dev.Concat(out, 1, parts...)
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Codec is an autoencoder's pair of maps, in sampler latents (the
// engine/models VAEs have this shape).
type Codec interface {
	// Decode maps sampler latents to pixels in [-1, 1].
	Decode(ctx context.Context, dev backend.Device, latents *backend.Tensor) (*backend.Tensor, error)
	// Encode maps pixels in [-1, 1] to sampler latents.
	Encode(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error)
}

// NewVAE pairs a codec with its latent format.
func NewVAE(c Codec, f LatentFormat) VAE { return codecVAE{c, f} }

type codecVAE struct {
	Codec
	f LatentFormat
}

func (v codecVAE) Format() LatentFormat { return v.f }

// SampledEncoder is implemented by VAEs whose encoder outputs a Gaussian:
// EncodeSample draws the latents (mean + std·eps, then the latent format's
// scaling) where Encode takes the mean, as diffusers' img2img pipelines do
// with their generator. eps holds one unit normal per latent value.
type SampledEncoder interface {
	EncodeSample(ctx context.Context, dev backend.Device, img *backend.Tensor, eps []float32) (*backend.Tensor, error)
}

// EncodeSample forwards to the codec when it samples its latents, and
// fails otherwise.
func (v codecVAE) EncodeSample(ctx context.Context, dev backend.Device, img *backend.Tensor, eps []float32) (*backend.Tensor, error) {
	s, ok := v.Codec.(SampledEncoder)
	if !ok {
		return nil, fmt.Errorf("vae encode: this VAE has no latent distribution to sample")
	}
	return s.EncodeSample(ctx, dev, img, eps)
}

// RowGroup is a run of consecutive conditioning rows [From, To) whose text
// states have one length, stacked for one transformer call: Context
// [n, T, D] and Pooled [n, P].
type RowGroup struct {
	From, To        int
	Context, Pooled *backend.Tensor
}

// GroupByLength stacks each run of consecutive rows whose contexts have
// the same length: a prompt and a negative prompt of different lengths
// become two groups, as ComfyUI runs conditions it cannot concatenate
// (the DiT families, whose text states are part of the joint sequence).
// Every row needs a context, and all rows a pooled vector or none (the
// group's Pooled is nil then: Z-Image has none); what names the model in
// errors.
func GroupByLength(dev backend.Device, rows []*Cond, what string) ([]*RowGroup, error) {
	var groups []*RowGroup
	for i, r := range rows {
		if r == nil || r.Context == nil {
			return nil, fmt.Errorf("%s: row %d has no text states", what, i)
		}
		if (r.Pooled == nil) != (rows[0].Pooled == nil) {
			return nil, fmt.Errorf("%s: row %d has a pooled vector and row 0 not, or the other way round", what, i)
		}
		if n := len(groups); n > 0 && rows[groups[n-1].From].Context.Shape[1] == r.Context.Shape[1] {
			groups[n-1].To = i + 1
			continue
		}
		groups = append(groups, &RowGroup{From: i, To: i + 1})
	}
	for _, g := range groups {
		ctx, pooled := make([]*backend.Tensor, 0, g.To-g.From), make([]*backend.Tensor, 0, g.To-g.From)
		for _, r := range rows[g.From:g.To] {
			ctx, pooled = append(ctx, r.Context), append(pooled, r.Pooled)
		}
		g.Context = nn.Concat(dev, 0, ctx...)
		if rows[0].Pooled != nil {
			g.Pooled = nn.Concat(dev, 0, pooled...)
		}
	}
	return groups, nil
}

// RunGroups runs run on each group's slice of x (rows along axis 0; the
// whole x for a single group) and joins the outputs along axis 0.
func RunGroups(dev backend.Device, groups []*RowGroup, x *backend.Tensor, run func(g *RowGroup, x *backend.Tensor) (*backend.Tensor, error)) (*backend.Tensor, error) {
	if len(groups) == 1 {
		return run(groups[0], x)
	}
	outs := make([]*backend.Tensor, 0, len(groups))
	free := func() {
		for _, o := range outs {
			dev.Free(o)
		}
	}
	for _, g := range groups {
		part := dev.Alloc(append([]int{g.To - g.From}, x.Shape[1:]...)...)
		dev.Slice(part, x, 0, g.From)
		out, err := run(g, part)
		dev.Free(part)
		if err != nil {
			free()
			return nil, err
		}
		outs = append(outs, out)
	}
	all := nn.Concat(dev, 0, outs...)
	free()
	return all, nil
}
