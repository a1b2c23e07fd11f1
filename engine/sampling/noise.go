package sampling

import (
	"fmt"
	"math"
	"sort"

	"github.com/darkroom-ai/darkroom/engine/rng"
)

// TorchNoise returns a NoiseSource backed by one torch-compatible CPU
// generator seeded with seed: successive calls return successive
// torch.randn draws, as ComfyUI's default noise sampler does for the
// ancestral samplers (a generator seeded with the job seed, one
// torch.randn(x.shape) per call).
//
// ComfyUI draws the initial latent noise from a separate generator seeded
// with the same seed, so the sampler's first draw equals the initial noise:
// use a fresh TorchNoise (or rng.NewTorch) for each. ComfyUI creates the
// sampler's generator on the latent's device, so this matches ComfyUI
// running on CPU; on CUDA its ancestral noise comes from torch's Philox
// generator instead.
func TorchNoise(seed uint64) NoiseSource {
	g := rng.NewTorch(seed)
	return func(n int) []float32 { return g.Randn(n) }
}

// brownianSampler returns, for a step from sigma to sigmaNext, the increment
// W(sigmaNext) - W(sigma) of a Brownian motion W over sigma, divided by
// sqrt(|sigmaNext - sigma|): standard normal per element, and correlated
// between overlapping intervals as a Brownian path requires.
type brownianSampler func(sigma, sigmaNext float32) ([]float32, error)

// brownianPath is a lazily sampled Brownian motion W(t), one independent path
// per element, pinned at W(t0) = 0 (k-diffusion's BrownianTreeNoiseSampler
// also starts at w0 = 0 at sigma_min). Values at new times are drawn from
// the exact conditional law given the known points: a Brownian bridge
// between the neighbours, or a free increment beyond the ends. All normal
// draws come from one NoiseSource in query order, so a run is deterministic
// for a seed. It is not torchsde's BrownianTree (whose tree of splittable
// PRNG seeds is not reproduced); see docs/sampling.md.
type brownianPath struct {
	n     int
	noise NoiseSource
	ts    []float64   // sorted known times
	ws    [][]float64 // W at ts
}

// newBrownianSampler builds the SDE noise sampler over the positive sigmas
// of r, like ComfyUI's BrownianTreeNoiseSampler(x, sigma_min, sigma_max).
func newBrownianSampler(r *run, n int) (brownianSampler, error) {
	if r.noise == nil {
		return nil, fmt.Errorf("sampler %s needs a noise source", r.name)
	}
	lo, hi := math.Inf(1), 0.0
	for _, s := range r.sigmas {
		if s > 0 {
			lo = min(lo, float64(s))
		}
		hi = max(hi, float64(s))
	}
	p := &brownianPath{n: n, noise: r.noise}
	p.ts = []float64{lo}
	p.ws = [][]float64{make([]float64, n)}
	if hi > lo {
		if _, err := p.at(hi); err != nil {
			return nil, err
		}
	}
	return p.increment, nil
}

func (p *brownianPath) draw() ([]float32, error) {
	z := p.noise(p.n)
	if len(z) != p.n {
		return nil, fmt.Errorf("noise source returned %d values, want %d", len(z), p.n)
	}
	return z, nil
}

// at returns W(t), sampling it if t is new.
func (p *brownianPath) at(t float64) ([]float64, error) {
	k := sort.SearchFloat64s(p.ts, t)
	if k < len(p.ts) && p.ts[k] == t {
		return p.ws[k], nil
	}
	z, err := p.draw()
	if err != nil {
		return nil, err
	}
	w := make([]float64, p.n)
	switch {
	case k == 0: // before the first known time
		t1, w1 := p.ts[0], p.ws[0]
		sd := math.Sqrt(t1 - t)
		for i := range w {
			w[i] = w1[i] - sd*float64(z[i])
		}
	case k == len(p.ts): // after the last known time
		t0, w0 := p.ts[k-1], p.ws[k-1]
		sd := math.Sqrt(t - t0)
		for i := range w {
			w[i] = w0[i] + sd*float64(z[i])
		}
	default: // Brownian bridge between neighbours
		t0, t1 := p.ts[k-1], p.ts[k]
		w0, w1 := p.ws[k-1], p.ws[k]
		f := (t - t0) / (t1 - t0)
		sd := math.Sqrt((t - t0) * (t1 - t) / (t1 - t0))
		for i := range w {
			w[i] = w0[i] + f*(w1[i]-w0[i]) + sd*float64(z[i])
		}
	}
	p.ts = append(p.ts, 0)
	copy(p.ts[k+1:], p.ts[k:])
	p.ts[k] = t
	p.ws = append(p.ws, nil)
	copy(p.ws[k+1:], p.ws[k:])
	p.ws[k] = w
	return w, nil
}

func (p *brownianPath) increment(sigma, sigmaNext float32) ([]float32, error) {
	a, b := float64(sigma), float64(sigmaNext)
	if a == b {
		return nil, fmt.Errorf("brownian increment over an empty interval at sigma %g", sigma)
	}
	wa, err := p.at(a)
	if err != nil {
		return nil, err
	}
	wb, err := p.at(b)
	if err != nil {
		return nil, err
	}
	scale := 1 / math.Sqrt(math.Abs(b-a))
	out := make([]float32, p.n)
	for i := range out {
		out[i] = float32((wb[i] - wa[i]) * scale)
	}
	return out, nil
}
