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

// rfStep returns the ancestral quantities of the "_RF" samplers with
// eta = 1: sigma_down, the rescaling (1-sigma_next)/(1-sigma_down) and
// the renoise coefficient.
func rfStep(sigma, next float32) (down, rescale, renoise float32) {
	ratio := 1 + float32(div32(next, sigma)-1)
	down = mul32(next, ratio)
	aNext := 1 - next
	aDown := 1 - down
	renoise = sqrt32(sq32(next) - div32(mul32(sq32(down), sq32(aNext)), sq32(aDown)))
	return down, div32(aNext, aDown), renoise
}

// blend returns ratio*x + (1-ratio)*d elementwise.
func blend(x, d []float32, ratio float32) []float32 {
	out := make([]float32, len(x))
	for i := range x {
		out[i] = float32(ratio*x[i]) + float32((1-ratio)*d[i])
	}
	return out
}

// renoiseRF returns rescale*x + noise*renoise.
func renoiseRF(x, noise []float32, rescale, renoise float32) []float32 {
	for i := range x {
		x[i] = float32(rescale*x[i]) + float32(noise[i]*renoise)
	}
	return x
}

func sampleEulerAncestralRF(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		if s[i+1] == 0 {
			return den, nil
		}
		down, rescale, renoise := rfStep(s[i], s[i+1])
		x = blend(x, den, div32(down, s[i]))
		n, err := r.randn(len(x))
		if err != nil {
			return nil, err
		}
		return renoiseRF(x, n, rescale, renoise), nil
	}))
}

func sampleDPM2AncestralRF(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		down, rescale, renoise := rfStep(s[i], s[i+1])
		d := toD(x, den, s[i])
		if down == 0 {
			return axpy(x, d, down-s[i]), nil
		}
		x, err := dpm2Step(r, x, d, s[i], down)
		if err != nil {
			return nil, err
		}
		n, err := r.randn(len(x))
		if err != nil {
			return nil, err
		}
		return renoiseRF(x, n, rescale, renoise), nil
	}))
}

func sampleDPMPP2SAncestralRF(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	lam := func(sg float32) float32 { return log32(div32(1-sg, sg)) }
	sig := func(l float32) float32 { return float32(1 / (exp32(l) + 1)) }
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		down, rescale, renoise := rfStep(s[i], s[i+1])
		if s[i+1] == 0 {
			d := toD(x, den, s[i])
			x = axpy(x, d, down-s[i])
		} else {
			var ss float32
			if s[i] == 1 {
				ss = 0.9999
			} else {
				ti, td := lam(s[i]), lam(down)
				h := td - ti
				ss = sig(ti + mul32(0.5, h))
			}
			u := blend(x, den, div32(ss, s[i]))
			di, err := r.denoise(u, ss)
			if err != nil {
				return nil, err
			}
			x = blend(x, di, div32(down, s[i]))
		}
		if s[i+1] > 0 {
			n, err := r.randn(len(x))
			if err != nil {
				return nil, err
			}
			x = renoiseRF(x, n, rescale, renoise)
		}
		return x, nil
	}))
}

// sampleLCMFlow is lcm for flow models: renoise as sigma*noise +
// (1-sigma)*denoised.
func sampleLCMFlow(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, _, den []float32) ([]float32, error) {
		x := den
		if s[i+1] > 0 {
			n, err := r.randn(len(x))
			if err != nil {
				return nil, err
			}
			if x, err = FlowNoiseLatent(n, den, s[i+1]); err != nil {
				return nil, err
			}
		}
		return x, nil
	}))
}

// flowVariants replaces samplers whose update differs for flow models.
var flowVariants = map[string]samplerFunc{
	"euler_ancestral":    sampleEulerAncestralRF,
	"dpm_2_ancestral":    sampleDPM2AncestralRF,
	"dpmpp_2s_ancestral": sampleDPMPP2SAncestralRF,
	"lcm":                sampleLCMFlow,
}
