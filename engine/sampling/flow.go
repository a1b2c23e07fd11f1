package sampling

import (
	"context"
	"fmt"
	"math"
)

// Flow is the noise schedule of rectified-flow models (ComfyUI's "CONST"
// model sampling): x_sigma = (1-sigma)*x0 + sigma*noise with sigma in
// (0, 1]. Two timestep maps exist in ComfyUI:
//   - SD3 (ModelSamplingDiscreteFlow): sigma(t) = shift*u/(1+(shift-1)*u),
//     u = t/multiplier, timestep = sigma*multiplier, a 1000-entry table;
//   - Flux (ModelSamplingFlux): sigma(t) = e^mu/(e^mu + 1/t - 1),
//     timestep = sigma, a 10000-entry table.
type Flow struct {
	flux       bool
	shift      float64 // SD3 shift, or Flux mu
	multiplier float32
	sigmas     []float32
}

// NewFlowSD3 returns ComfyUI's ModelSamplingDiscreteFlow with the given
// shift (SD3 uses 3.0) and timestep multiplier (1000).
func NewFlowSD3(shift, multiplier float64) (*Flow, error) {
	if !(shift > 0) || !(multiplier > 0) {
		return nil, fmt.Errorf("flow schedule: shift %g and multiplier %g must be positive", shift, multiplier)
	}
	f := &Flow{shift: shift, multiplier: float32(multiplier), sigmas: make([]float32, 1000)}
	for i := range f.sigmas {
		u := float32(i+1) / 1000
		f.sigmas[i] = f.Sigma(float32(u * f.multiplier))
	}
	return f, nil
}

// NewFlowFlux returns ComfyUI's ModelSamplingFlux with shift mu (1.15 by
// default; Flux-dev pipelines derive mu from the image size).
func NewFlowFlux(mu float64) (*Flow, error) {
	if math.IsNaN(mu) || math.IsInf(mu, 0) {
		return nil, fmt.Errorf("flow schedule: mu %g must be finite", mu)
	}
	f := &Flow{flux: true, shift: mu, multiplier: 1, sigmas: make([]float32, 10000)}
	for i := range f.sigmas {
		f.sigmas[i] = f.Sigma(float32(i+1) / 10000)
	}
	return f, nil
}

// SigmaMin returns the first table entry.
func (f *Flow) SigmaMin() float32 { return f.sigmas[0] }

// SigmaMax returns the last table entry (1).
func (f *Flow) SigmaMax() float32 { return f.sigmas[len(f.sigmas)-1] }

// Table returns the sigma table, increasing. Do not modify it.
func (f *Flow) Table() []float32 { return f.sigmas }

// Sigma maps a timestep to sigma (time_snr_shift or flux_time_shift), in
// float32 like ComfyUI's tensor arithmetic.
func (f *Flow) Sigma(t float32) float32 {
	if f.flux {
		e := math.Exp(f.shift)
		return float32(e / (e + (1/float64(t) - 1)))
	}
	u := t / f.multiplier
	if f.shift == 1 {
		return u
	}
	a := float32(f.shift)
	return float32(a*u) / (1 + float32(float32(a-1)*u))
}

// Timestep maps sigma to the model's timestep: sigma*multiplier (SD3) or
// sigma itself (Flux).
func (f *Flow) Timestep(sigma float32) float32 { return sigma * f.multiplier }

// PercentToSigma is ComfyUI's percent_to_sigma: the sigma at a fraction of
// the way through sampling (1 at 0 %, 0 at 100 %).
func (f *Flow) PercentToSigma(p float64) float32 {
	switch {
	case p <= 0:
		return 1
	case p >= 1:
		return 0
	}
	t := 1 - p
	if f.flux {
		e := math.Exp(f.shift)
		return float32(e / (e + (1/t - 1)))
	}
	if f.shift == 1 {
		return float32(t)
	}
	return float32(f.shift * t / (1 + (f.shift-1)*t))
}

// FlowNoiseLatent forms a flow model's starting point, ComfyUI's CONST
// noise_scaling: sigma*noise + (1-sigma)*latent (latent nil for zeros).
func FlowNoiseLatent(noise, latent []float32, sigma float32) ([]float32, error) {
	if latent != nil && len(latent) != len(noise) {
		return nil, fmt.Errorf("flow noise latent: %d noise values for a latent of %d", len(noise), len(latent))
	}
	out := make([]float32, len(noise))
	for i, z := range noise {
		out[i] = float32(sigma * z)
		if latent != nil {
			out[i] += float32((1 - sigma) * latent[i])
		}
	}
	return out, nil
}

// Options configures SampleWith.
type Options struct {
	// Flow marks a rectified-flow model (ComfyUI's CONST sampling: SD3,
	// Flux) and gives its schedule. The ancestral samplers then use
	// ComfyUI's "_RF" variants, the SDE samplers the flow half-log-SNR
	// log((1-sigma)/sigma) (with a first sigma of 1 moved to
	// PercentToSigma(1e-4)), and lcm renoises as sigma*noise +
	// (1-sigma)*x. nil means a variance-exploding (eps/v) model.
	Flow *Flow
}

// SampleWith is Sample with options.
func SampleWith(ctx context.Context, sampler string, model Denoiser, x []float32, sigmas []float32, noise NoiseSource, cb Callback, opts Options) ([]float32, error) {
	r, out, err := newRun(ctx, sampler, model, x, sigmas, noise, cb)
	if err != nil || r == nil {
		return out, err
	}
	r.flow = opts.Flow
	if r.flow != nil {
		for i, s := range sigmas {
			if s > 1 {
				return nil, fmt.Errorf("sample %s: flow sigma %d is %g, want <= 1", sampler, i, s)
			}
		}
	}
	return r.exec(out)
}

// halfLogSNR returns lambda = log(alpha/sigma) for the run's model type:
// -log(sigma), or -logit(sigma) for flow models (k-diffusion
// sigma_to_half_log_snr), in float32.
func (r *run) halfLogSNR(sigma float32) float32 {
	if r.flow == nil {
		return -log32(sigma)
	}
	return -log32(div32(sigma, 1-sigma))
}

// sigmaOfLambda inverts halfLogSNR: exp(-lambda), or sigmoid(-lambda).
func (r *run) sigmaOfLambda(lambda float32) float32 {
	if r.flow == nil {
		return exp32(-lambda)
	}
	return float32(1 / (1 + math.Exp(float64(lambda))))
}

// sdeSigmas returns the sigmas an SDE sampler integrates over: for flow
// models a first sigma of 1 (infinite SNR) is moved to PercentToSigma(1e-4)
// (k-diffusion offset_first_sigma_for_snr).
func (r *run) sdeSigmas() []float32 {
	if r.flow == nil || len(r.sigmas) <= 1 || r.sigmas[0] < 1 {
		return r.sigmas
	}
	s := append([]float32(nil), r.sigmas...)
	s[0] = r.flow.PercentToSigma(1e-4)
	return s
}
