package sampling

import (
	"context"
	"fmt"
	"math"
)

// Classifier-free guidance lives here, not in each model family: a
// pipeline supplies one batched network call and gets back the Denoiser
// the samplers need.

// BatchFunc evaluates the network once on a batch. xIn is the latent the
// Denoiser was given, scaled for the network (see Prediction), once per
// half of the batch: with an unconditional half, the unconditional copy
// then the conditional copy (2*len(x) values: the row order darkroom's
// engine batches them in, so each copy spans all the latent's batch
// items); without, the conditional copy alone. t is the timestep of every
// row. The BatchFunc pairs each half with its conditioning and returns the
// raw network outputs (noise, v or velocity) in the same layout. It must
// not modify xIn.
type BatchFunc func(ctx context.Context, xIn []float32, t float32) ([]float32, error)

// GuideSpace is where classifier-free guidance combines the two halves.
// Every Prediction is affine in the network output, so the two spaces
// agree algebraically; in float32 they round differently.
type GuideSpace int

const (
	// GuideDenoised converts each half to a denoised estimate and combines
	// those as uncond + (cond - uncond)*scale, rounding after each
	// operation in that order: ComfyUI's cfg_function, whose model outputs
	// are already denoised. The default.
	GuideDenoised GuideSpace = iota
	// GuideOutput combines the raw network outputs as
	// uncond + scale*(cond - uncond) and converts the guided output once:
	// diffusers' pipelines (noise_pred_uncond + guidance_scale *
	// (noise_pred_text - noise_pred_uncond), then the scheduler's
	// x - sigma*eps) and darkroom's engine for Eps.
	GuideOutput
)

// String returns "denoised" or "output".
func (s GuideSpace) String() string {
	switch s {
	case GuideDenoised:
		return "denoised"
	case GuideOutput:
		return "output"
	}
	return fmt.Sprintf("GuideSpace(%d)", int(s))
}

// GuideOptions configures GuidedWith. The zero value is ComfyUI's order.
type GuideOptions struct {
	// Space is where the halves are combined.
	Space GuideSpace
	// ReciprocalInput scales the Eps and V network input as x*c_in, with
	// c_in = 1/sqrt(sigma^2+1) evaluated in float64 and rounded to float32
	// once, instead of ComfyUI's float32 x / sqrt(sigma^2+1) (diffusers'
	// Euler-family scale_model_input divides the same way). darkroom's
	// engine feeds its networks this way (see EngineGuidance). It does not
	// apply to Velocity, whose input is unscaled.
	ReciprocalInput bool
	// Post, when set, runs after the halves are combined (ComfyUI's
	// post_cfg_function) with the latent x, sigma, the conditional half's
	// raw network output and the guided denoised estimate, which it may
	// change in place (SkipLayerGuidance).
	Post func(ctx context.Context, x []float32, sigma float32, cond, den []float32) error
}

// EngineGuidance returns the options that reproduce darkroom's engine
// denoiser (engine/generate.go's guided) bit for bit for a prediction: the
// input x*c_in for Eps and V; Eps guided on the noise prediction,
// x - sigma*(u + cfg*(c - u)); V and Velocity guided in denoised space as
// ComfyUI. The engine's Go expressions carry no float32 conversions, so a
// build that fuses multiply-adds (GOARCH=arm64, GOAMD64=v3) may round them
// differently; these never fuse, and match the engine as built by default
// on amd64.
func EngineGuidance(pred Prediction) GuideOptions {
	if pred == Eps {
		return GuideOptions{Space: GuideOutput, ReciprocalInput: true}
	}
	return GuideOptions{Space: GuideDenoised, ReciprocalInput: true}
}

// Guided wraps a batched network call as a Denoiser with classifier-free
// guidance at scale, in ComfyUI's order: GuidedWith with the zero
// GuideOptions.
//
// hasUncond says whether the batch has an unconditional half. Without one
// (guidance-distilled models such as Flux-dev, whose guidance strength is a
// network input, or cfg 1) only the conditional half runs, the Denoiser
// returns its denoised estimate as it is, and scale must be 1. ComfyUI
// (and the engine) skip the unconditional pass whenever cfg is 1: pass
// hasUncond = scale != 1 for that.
//
// A pipeline uses it as
//
//	net := func(ctx context.Context, xIn []float32, t float32) ([]float32, error) {
//		// rows: len(xIn)/perRow; the first half with the negative
//		// conditioning, the second with the positive one.
//		return unet(ctx, xIn, t, contexts)
//	}
//	sched := sampling.DefaultDiscrete()
//	ts := func(s float32) float32 { return float32(sched.NearestTimestep(s)) }
//	den, err := sampling.Guided(net, sampling.Eps, ts, 7.5, true)
//	...
//	x, err = sampling.Sample(ctx, "euler", den, x, sigmas, noise, cb)
func Guided(model BatchFunc, pred Prediction, timestep TimestepFunc, scale float32, hasUncond bool) (Denoiser, error) {
	return GuidedWith(model, pred, timestep, scale, hasUncond, GuideOptions{})
}

// GuidedWith is Guided with the guidance order given by opts. Per call the
// Denoiser scales x once for the network (pred), copies it into both
// halves, calls model once with timestep(sigma), and forms
//
//	GuideDenoised: D_u + (D_c - D_u)*scale, D_h the pred's denoised
//	               estimate of half h (ComfyUI);
//	GuideOutput:   the denoised estimate of u + scale*(c - u), u and c the
//	               raw outputs of the two halves (diffusers, the engine's
//	               Eps path).
//
// Without an unconditional half both are the conditional half's denoised
// estimate.
func GuidedWith(model BatchFunc, pred Prediction, timestep TimestepFunc, scale float32, hasUncond bool, opts GuideOptions) (Denoiser, error) {
	switch {
	case model == nil || timestep == nil:
		return nil, fmt.Errorf("guided denoiser: nil model or timestep function")
	case !pred.valid():
		return nil, fmt.Errorf("guided denoiser: unknown prediction %v", pred)
	case opts.Space != GuideDenoised && opts.Space != GuideOutput:
		return nil, fmt.Errorf("guided denoiser: unknown guidance space %v", opts.Space)
	case math.IsNaN(float64(scale)) || math.IsInf(float64(scale), 0):
		return nil, fmt.Errorf("guided denoiser: guidance scale %g, want finite", scale)
	case !hasUncond && scale != 1:
		return nil, fmt.Errorf("guided denoiser: guidance scale %g needs an unconditional half (without one, use 1)", scale)
	}
	halves := 1
	if hasUncond {
		halves = 2
	}
	return func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
		n := len(x)
		in := make([]float32, halves*n)
		pred.scaleInput(in[:n], x, sigma, opts.ReciprocalInput)
		if hasUncond {
			copy(in[n:], in[:n])
		}
		out, err := model(ctx, in, timestep(sigma))
		if err != nil {
			return nil, err
		}
		if len(out) != len(in) {
			return nil, fmt.Errorf("model returned %d values for %d inputs", len(out), len(in))
		}
		den := make([]float32, n)
		c := out[halves*n-n:]
		switch {
		case !hasUncond:
			pred.toDenoised(den, x, out, sigma)
		case opts.Space == GuideOutput:
			u := out[:n]
			g := make([]float32, n)
			for i := range g {
				g[i] = u[i] + float32(scale*float32(c[i]-u[i]))
			}
			pred.toDenoised(den, x, g, sigma)
		default:
			du := make([]float32, n)
			pred.toDenoised(du, x, out[:n], sigma)
			pred.toDenoised(den, x, c, sigma)
			for i := range den {
				den[i] = du[i] + float32(float32(den[i]-du[i])*scale)
			}
		}
		if opts.Post != nil {
			if err := opts.Post(ctx, x, sigma, c, den); err != nil {
				return nil, err
			}
		}
		return den, nil
	}, nil
}

// SkipLayerGuidance returns a GuideOptions.Post function adding Skip-Layer
// Guidance where active(sigma): skipped is the network with some blocks
// left out, run on the conditional rows, and the guided estimate moves by
// scale·(D_c − D_skip), D the denoised estimates of the conditional output
// and of the skipped network's, as ComfyUI's SkipLayerGuidanceSD3
// (post_cfg_function) computes it; diffusers' skip_guidance_layers adds
// scale·(v_c − v_skip) to the guided velocity, the same step.
func SkipLayerGuidance(skipped BatchFunc, pred Prediction, timestep TimestepFunc, scale float32, active func(sigma float32) bool, opts GuideOptions) func(ctx context.Context, x []float32, sigma float32, cond, den []float32) error {
	return func(ctx context.Context, x []float32, sigma float32, cond, den []float32) error {
		if scale == 0 || !active(sigma) {
			return nil
		}
		in := make([]float32, len(x))
		pred.scaleInput(in, x, sigma, opts.ReciprocalInput)
		k, err := skipped(ctx, in, timestep(sigma))
		if err != nil {
			return err
		}
		if len(k) != len(x) || len(cond) != len(x) {
			return fmt.Errorf("skip-layer guidance: %d and %d outputs for %d inputs", len(k), len(cond), len(x))
		}
		dc, dk := make([]float32, len(x)), make([]float32, len(x))
		pred.toDenoised(dc, x, cond, sigma)
		pred.toDenoised(dk, x, k, sigma)
		for i := range den {
			den[i] += float32(float32(dc[i]-dk[i]) * scale)
		}
		return nil
	}
}
