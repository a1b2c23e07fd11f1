package sampling

import (
	"fmt"
	"math"
	"sort"
)

// Schedule is a model's noise schedule, ComfyUI's "model sampling": the map
// between the model's timestep and the noise level sigma. Discrete covers
// SD1, SD2 and SDXL (epsilon and v prediction); flow-matching models
// (SD3, Flux) will bring their own implementation.
type Schedule interface {
	// SigmaMin and SigmaMax are the smallest and largest sigma the model
	// was trained on.
	SigmaMin() float32
	SigmaMax() float32
	// Sigma maps a (possibly fractional) timestep to sigma by log-linear
	// interpolation of the table (ComfyUI ModelSamplingDiscrete.sigma).
	Sigma(t float32) float32
	// Timestep maps sigma to the continuous timestep by interpolation in
	// log sigma (k-diffusion DiscreteSchedule.sigma_to_t, diffusers
	// _sigma_to_t).
	Timestep(sigma float32) float32
	// Table returns sigma at every integer timestep, increasing, as
	// ComfyUI's model_sampling.sigmas (used by the simple, ddim_uniform and
	// beta schedulers). The caller must not modify it.
	Table() []float32
}

// Discrete is the noise schedule of discrete-time DDPM models (SD1, SD2,
// SDXL): sigma_t = sqrt((1-abar_t)/abar_t) for t = 0..N-1, where abar is the
// cumulative product of 1-beta. As in ComfyUI, betas, the cumulative product
// and sigma are computed in float64 and sigma and log sigma are then stored
// as float32.
type Discrete struct {
	sigmas    []float32 // increasing, index = timestep
	logSigmas []float32
	// linear interpolates sigma itself between timesteps (diffusers'
	// interpolation_type "linear", np.interp) instead of log sigma.
	linear bool
}

// NewDiscrete builds a discrete schedule from a beta schedule, computed as
// ComfyUI does (float64 betas, cumulative product and sigma, then stored as
// float32):
//   - "scaled_linear": betas = linspace(sqrt(betaStart), sqrt(betaEnd), steps)^2,
//     what ComfyUI and the LDM configs call "linear" (SD1/SD2/SDXL use
//     0.00085..0.012 over 1000 steps; see DefaultDiscrete);
//   - "linear": betas = linspace(betaStart, betaEnd, steps) (LDM's
//     "sqrt_linear", diffusers' "linear").
func NewDiscrete(betaStart, betaEnd float64, steps int, kind string) (*Discrete, error) {
	return newDiscrete(betaStart, betaEnd, steps, kind, false, false)
}

// NewDiscreteZSNR is NewDiscrete (or, with diffusers, NewDiscreteDiffusers)
// rescaled to zero terminal SNR (Lin et al. 2023), as each peer does it:
// ComfyUI rescales the float64 sigmas (rescale_zero_terminal_snr_sigmas)
// and sets the last alpha_cumprod to 4.8973451890853435e-08; diffusers
// rescales the float32 betas (rescale_zero_terminal_snr) and sets it to
// 2^-24, so that the first sigma is finite (about 4519 and 4096).
func NewDiscreteZSNR(betaStart, betaEnd float64, steps int, kind string, diffusers bool) (*Discrete, error) {
	return newDiscrete(betaStart, betaEnd, steps, kind, diffusers, true)
}

// NewDiscreteDiffusers builds the same schedule as diffusers' DDPM-family
// schedulers compute it: float32 betas, a float32 cumulative product
// (accumulated in float64 by torch's CPU kernel) and float32 sigma and log
// sigma. Its sigmas differ from NewDiscrete's by up to about 1.3e-5
// relative (SD1 sigma_max 14.614647 against ComfyUI's 14.614641); use it to
// reproduce diffusers runs.
func NewDiscreteDiffusers(betaStart, betaEnd float64, steps int, kind string) (*Discrete, error) {
	return newDiscrete(betaStart, betaEnd, steps, kind, true, false)
}

func newDiscrete(betaStart, betaEnd float64, steps int, kind string, diffusers, zsnr bool) (*Discrete, error) {
	if steps < 2 {
		return nil, fmt.Errorf("discrete schedule: %d timesteps, want at least 2", steps)
	}
	if !(betaStart > 0 && betaEnd > 0 && betaStart < 1 && betaEnd < 1) {
		return nil, fmt.Errorf("discrete schedule: betas %g..%g, want in (0, 1)", betaStart, betaEnd)
	}
	var betas []float64
	switch kind {
	case "scaled_linear":
		if diffusers {
			b32 := linspace32(float32(math.Sqrt(betaStart)), float32(math.Sqrt(betaEnd)), steps)
			betas = make([]float64, steps)
			for i, b := range b32 {
				betas[i] = float64(sq32(b))
			}
			break
		}
		betas = linspace64(math.Sqrt(betaStart), math.Sqrt(betaEnd), steps)
		for i, b := range betas {
			betas[i] = b * b
		}
	case "linear":
		if diffusers {
			b32 := linspace32(float32(betaStart), float32(betaEnd), steps)
			betas = make([]float64, steps)
			for i, b := range b32 {
				betas[i] = float64(b)
			}
			break
		}
		betas = linspace64(betaStart, betaEnd, steps)
	default:
		return nil, fmt.Errorf("discrete schedule: unknown beta schedule %q (valid: linear, scaled_linear)", kind)
	}
	if zsnr {
		d := zsnrDiscrete(betas, diffusers)
		d.linear = diffusers
		return d, nil
	}
	d := &Discrete{sigmas: make([]float32, steps), logSigmas: make([]float32, steps), linear: diffusers}
	acp := 1.0
	for i, b := range betas {
		if diffusers {
			acp *= float64(float32(1 - float32(b)))
			a32 := float32(acp)
			s := sqrt32(div32(1-a32, a32))
			d.sigmas[i] = s
			d.logSigmas[i] = log32(s)
			continue
		}
		acp *= 1 - b
		s := math.Sqrt((1 - acp) / acp)
		d.sigmas[i] = float32(s)
		d.logSigmas[i] = float32(math.Log(s))
	}
	for i := 1; i < steps; i++ {
		if !(d.sigmas[i] > d.sigmas[i-1]) {
			return nil, fmt.Errorf("discrete schedule: sigma not increasing at timestep %d", i)
		}
	}
	return d, nil
}

// zsnrDiscrete builds the zero-terminal-SNR schedule from the betas (in
// float32 values when diffusers is set, as diffusers holds them).
func zsnrDiscrete(betas []float64, diffusers bool) *Discrete {
	n := len(betas)
	d := &Discrete{sigmas: make([]float32, n), logSigmas: make([]float32, n)}
	if diffusers {
		// rescale_zero_terminal_snr on float32 betas, then the scheduler's
		// cumulative product with the last value set to 2^-24.
		sq := make([]float32, n)
		acp := 1.0
		for i, b := range betas {
			acp *= float64(float32(1 - float32(b)))
			sq[i] = sqrt32(float32(acp))
		}
		s0, sT := sq[0], sq[n-1]
		scale := div32(s0, s0-sT)
		bar := make([]float32, n)
		for i := range sq {
			v := (sq[i] - sT) * scale
			bar[i] = v * v
		}
		acp = 1
		for i := range bar {
			alpha := bar[0]
			if i > 0 {
				alpha = div32(bar[i], bar[i-1])
			}
			acp *= float64(float32(1 - (1 - alpha)))
			a32 := float32(acp)
			if i == n-1 {
				a32 = 1.0 / (1 << 24)
			}
			s := sqrt32(div32(1-a32, a32))
			d.sigmas[i], d.logSigmas[i] = s, log32(s)
		}
		return d
	}
	// ComfyUI: float64 sigmas, rescaled in alpha-bar-sqrt space.
	sq := make([]float64, n)
	acp := 1.0
	for i, b := range betas {
		acp *= 1 - b
		sq[i] = math.Sqrt(acp)
	}
	s0, sT := sq[0], sq[n-1]
	for i := range sq {
		v := (sq[i] - sT) * (s0 / (s0 - sT))
		bar := v * v
		if i == n-1 {
			bar = 4.8973451890853435e-08
		}
		s := math.Sqrt((1 - bar) / bar)
		d.sigmas[i], d.logSigmas[i] = float32(s), float32(math.Log(s))
	}
	return d
}

// DefaultDiscrete returns the schedule of SD1.x, SD2.x and SDXL:
// scaled_linear betas 0.00085..0.012 over 1000 timesteps.
func DefaultDiscrete() *Discrete {
	d, err := NewDiscrete(0.00085, 0.012, 1000, "scaled_linear")
	if err != nil {
		panic("sampling: default discrete schedule: " + err.Error()) // constant arguments
	}
	return d
}

// linspace64 is torch.linspace in float64: the first half counts up from
// start and the second half down from end.
func linspace64(start, end float64, n int) []float64 {
	out := make([]float64, n)
	if n == 1 {
		out[0] = start
		return out
	}
	step := (end - start) / float64(n-1)
	half := n / 2
	for i := range out {
		if i < half {
			out[i] = start + step*float64(i)
		} else {
			out[i] = end - step*float64(n-1-i)
		}
	}
	return out
}

// linspace32 is torch.linspace in float32.
func linspace32(start, end float32, n int) []float32 {
	out := make([]float32, n)
	if n == 1 {
		out[0] = start
		return out
	}
	step := float32(end-start) / float32(n-1)
	half := n / 2
	for i := range out {
		if i < half {
			out[i] = start + float32(step*float32(i))
		} else {
			out[i] = end - float32(step*float32(n-1-i))
		}
	}
	return out
}

// SigmaMin returns sigma at timestep 0.
func (d *Discrete) SigmaMin() float32 { return d.sigmas[0] }

// SigmaMax returns sigma at the last timestep.
func (d *Discrete) SigmaMax() float32 { return d.sigmas[len(d.sigmas)-1] }

// Table returns sigma at every timestep, increasing. Do not modify it.
func (d *Discrete) Table() []float32 { return d.sigmas }

// Sigma interpolates log sigma linearly between the neighbouring integer
// timesteps, in float32 as ComfyUI does, or for a diffusers-built schedule
// sigma itself in float64 as np.interp does (diffusers' Euler-family
// schedulers with "linspace" spacing); t is clamped to [0, N-1].
func (d *Discrete) Sigma(t float32) float32 {
	n := len(d.sigmas)
	if t != t {
		return t
	}
	t = min(max(t, 0), float32(n-1))
	lo := int(math.Floor(float64(t)))
	hi := int(math.Ceil(float64(t)))
	if d.linear {
		if lo == hi {
			return d.sigmas[lo]
		}
		a, b := float64(d.sigmas[lo]), float64(d.sigmas[hi])
		return float32((b-a)*(float64(t)-float64(lo)) + a)
	}
	w := t - float32(lo)
	ls := float32((1-w)*d.logSigmas[lo]) + float32(w*d.logSigmas[hi])
	return exp32(ls)
}

// Timestep returns the continuous timestep of sigma: the index of an exact
// table entry, otherwise linear interpolation in log sigma between the
// neighbouring entries (clamped to [0, N-1]), as k-diffusion's sigma_to_t
// and diffusers' _sigma_to_t compute it. ComfyUI's own UNet wrapper rounds
// to the nearest entry instead; see NearestTimestep.
func (d *Discrete) Timestep(sigma float32) float32 {
	n := len(d.sigmas)
	k := sort.Search(n, func(i int) bool { return d.sigmas[i] >= sigma })
	if k < n && d.sigmas[k] == sigma {
		return float32(k)
	}
	ls := math.Log(math.Max(float64(sigma), 1e-10))
	// low = last index with logSigmas[low] <= ls, clamped to [0, n-2].
	low := sort.Search(n, func(i int) bool { return float64(d.logSigmas[i]) > ls }) - 1
	low = min(max(low, 0), n-2)
	lo, hi := float64(d.logSigmas[low]), float64(d.logSigmas[low+1])
	w := (lo - ls) / (lo - hi)
	w = min(max(w, 0), 1)
	return float32((1-w)*float64(low) + w*float64(low+1))
}

// InterpolatedTimestep inverts Sigma for a schedule that interpolates
// sigma linearly (a diffusers-built one): the fractional timestep at which
// Sigma gives sigma, which diffusers' linspace-spaced Euler-family
// schedulers pass to the network as it is. It is Timestep for a schedule
// that interpolates log sigma.
func (d *Discrete) InterpolatedTimestep(sigma float32) float32 {
	if !d.linear {
		return d.Timestep(sigma)
	}
	n := len(d.sigmas)
	k := sort.Search(n, func(i int) bool { return d.sigmas[i] >= sigma })
	switch {
	case k < n && d.sigmas[k] == sigma:
		return float32(k)
	case k == 0:
		return 0
	case k == n:
		return float32(n - 1)
	}
	a, b := float64(d.sigmas[k-1]), float64(d.sigmas[k])
	return float32(float64(k-1) + (float64(sigma)-a)/(b-a))
}

// NearestTimestep returns the integer timestep whose log sigma is nearest to
// log(sigma), ComfyUI ModelSamplingDiscrete.timestep (argmin; the first of
// equals).
func (d *Discrete) NearestTimestep(sigma float32) int {
	ls := log32(sigma)
	best, bestDist := 0, float32(math.Inf(1))
	for i, l := range d.logSigmas {
		if dist := float32(math.Abs(float64(ls - l))); dist < bestDist {
			best, bestDist = i, dist
		}
	}
	return best
}

// InitialNoiseScale returns the factor by which ComfyUI scales unit noise to
// form the starting latent (EPS noise_scaling): sqrt(1+sigma0^2) when sigma0
// is at least the schedule's sigma_max (within a relative 1e-5; ComfyUI's
// "max_denoise", i.e. txt2img at full denoise), sigma0 otherwise. The latent
// is then noise*scale + latent_image.
//
// k-diffusion's own scripts and diffusers' Euler-family schedulers with
// "linspace"/"trailing" spacing start from noise*sigma_max instead;
// diffusers' init_noise_sigma is sqrt(sigma_max^2+1) for "leading" spacing.
// The two conventions differ by about 0.2% at sigma_max = 14.6.
func InitialNoiseScale(sigma0, sigmaMax float32) float32 {
	s, m := float64(sigma0), float64(sigmaMax)
	if s > m || math.Abs(s-m) <= 1e-5*math.Max(math.Abs(s), math.Abs(m)) {
		return sqrt32(1 + sq32(sigma0))
	}
	return sigma0
}

// NoiseLatent returns latent + noise*scale elementwise (noise*scale rounded
// first, as torch does); latent may be nil for an all-zero latent.
func NoiseLatent(noise, latent []float32, scale float32) ([]float32, error) {
	if latent != nil && len(latent) != len(noise) {
		return nil, fmt.Errorf("noise latent: %d noise values for a latent of %d", len(noise), len(latent))
	}
	out := make([]float32, len(noise))
	for i, z := range noise {
		out[i] = float32(z * scale)
		if latent != nil {
			out[i] += latent[i]
		}
	}
	return out, nil
}
