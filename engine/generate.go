package engine

import (
	"context"
	"fmt"
	"image"
	"math"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// Phase names the stage of a job an Event reports.
type Phase string

// Job phases, in order.
const (
	PhaseEncode Phase = "encode"
	PhaseSample Phase = "sample"
	PhaseDecode Phase = "decode"
	PhaseDone   Phase = "done"
)

// Event reports progress of a generation.
type Event struct {
	Phase Phase
	// Step (1-based, after the step) and Total during PhaseSample.
	Step, Total int
	Sigma       float32
	Elapsed     time.Duration
	// Denoised is the model's current estimate of the clean latents
	// [Batch, C, h, w] (a copy, set during PhaseSample); LatentPreview turns
	// it into a small RGB image.
	Denoised []float32
	// Latent is the sampler's latent after the step (a copy, PhaseSample).
	Latent []float32
	// LatentShape is the shape of Denoised and Latent.
	LatentShape [4]int
}

// Result is a finished generation.
type Result struct {
	Request Request
	// Images are the decoded images, one per batch item.
	Images []*image.NRGBA
	// Latents are the final latents [Batch, C, h, w].
	Latents []float32
	// Timings of each phase.
	EncodeTime, SampleTime, DecodeTime time.Duration
	// PeakMemory is the most device memory the job's tensors held at once,
	// in bytes, on devices that track it (CUDA); 0 otherwise. Weights
	// uploaded before the job count too.
	PeakMemory uint64
}

// Generate runs one text-to-image request on the model. onEvent (may be nil)
// is called synchronously on the generating goroutine. Cancelling ctx stops
// the job between UNet blocks and sampler steps.
func (m *Model) Generate(ctx context.Context, req Request, onEvent func(Event)) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkRequest(req); err != nil {
		return nil, err
	}
	// The UNet's recorded step (a CUDA graph and the memory it owns) lives
	// for this job: the memory returns to the pool when the job ends,
	// finished or cancelled.
	defer m.unet.ResetGraphs()
	if onEvent == nil {
		onEvent = func(Event) {}
	}
	start := time.Now()
	res := &Result{Request: req}
	peak, hasPeak := m.dev.(backend.PeakMemoryReporter)
	if hasPeak {
		peak.ResetPeakMemory()
		defer func() { res.PeakMemory = peak.PeakMemory() }()
	}
	onEvent(Event{Phase: PhaseEncode})
	cond, err := m.encodePrompt(ctx, req.Prompt, req.ClipSkip)
	if err != nil {
		return nil, err
	}
	uncond, err := m.encodePrompt(ctx, req.Negative, req.ClipSkip)
	if err != nil {
		return nil, err
	}
	res.EncodeTime = time.Since(start)

	f, c := m.LatentFactor(), m.LatentChannels()
	shape := [4]int{req.Batch, c, req.Height / f, req.Width / f}
	noise := rng.NewTorch(req.Seed).Randn(shape[0] * shape[1] * shape[2] * shape[3])
	t0 := time.Now()
	latents, err := m.sample(ctx, SampleParams{
		Cond: cond, Uncond: uncond, CFG: req.CFG,
		Sampler: req.Sampler, Scheduler: req.Scheduler, Steps: req.Steps,
		Seed: req.Seed, Noise: noise, Shape: shape,
	}, func(ev Event) {
		ev.Elapsed = time.Since(start)
		onEvent(ev)
	})
	if err != nil {
		return nil, err
	}
	res.SampleTime = time.Since(t0)
	res.Latents = latents
	for _, v := range latents {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("sampling produced non-finite values (NaN or Inf): the model's weights or the settings are broken")
		}
	}

	// The recorded step's memory is free for the decoder.
	m.unet.ResetGraphs()
	t0 = time.Now()
	onEvent(Event{Phase: PhaseDecode, Elapsed: time.Since(start)})
	res.Images, err = m.decodeImages(ctx, latents, shape)
	if err != nil {
		return nil, err
	}
	res.DecodeTime = time.Since(t0)
	onEvent(Event{Phase: PhaseDone, Elapsed: time.Since(start)})
	return res, nil
}

// SampleParams configure Model.Sample.
type SampleParams struct {
	Cond, Uncond *Conditioning
	CFG          float64
	Sampler      string
	Scheduler    string
	Steps        int
	// Sigmas overrides Scheduler/Steps when set.
	Sigmas []float32
	// Seed seeds the sampler's own noise (ancestral and SDE samplers).
	Seed uint64
	// Noise is the unit initial noise [Shape]; Latent (optional) is a clean
	// starting latent it is added to (img2img).
	Noise, Latent []float32
	Shape         [4]int
	// Convention selects the numerical conventions; the zero value is
	// ComfyUI's.
	Convention Convention
}

// Convention is a set of numerical conventions for the discrete schedule
// that differ between ComfyUI and diffusers. They change results by about
// 1e-3 relative — invisible in an image, but not what "same seed, same
// image" means.
type Convention uint8

// Conventions.
const (
	// ConventionComfy is ComfyUI's: the schedule built in float64, the UNet
	// fed the nearest integer timestep in log-sigma, and txt2img noise scaled
	// by sqrt(1+σ_max²).
	ConventionComfy Convention = iota
	// ConventionDiffusers is diffusers' Euler-family schedulers': the
	// schedule in float32, continuous (log-sigma interpolated) timesteps, and
	// noise scaled by σ_max (linspace/trailing spacing).
	ConventionDiffusers
	// ConventionDiffusersRounded is diffusers' DDIM/DPM-Solver/UniPC
	// schedulers': the float32 schedule, timesteps rounded to integers, and
	// unit noise in the variance-preserving space, i.e. sqrt(1+σ₀²) here.
	ConventionDiffusersRounded
)

// Sample runs the sampler loop with classifier-free guidance and returns the
// final latents. onEvent (may be nil) receives a PhaseSample event per step.
func (m *Model) Sample(ctx context.Context, p SampleParams, onEvent func(Event)) ([]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sample(ctx, p, onEvent)
}

// checkRequest checks what depends on the model: the image size against the
// VAE's factor, and clip skip against the text encoder's depth.
func (m *Model) checkRequest(req Request) error {
	f := m.LatentFactor()
	if req.Width%f != 0 {
		return fmt.Errorf("--width %d: this model needs a multiple of %d", req.Width, f)
	}
	if req.Height%f != 0 {
		return fmt.Errorf("--height %d: this model needs a multiple of %d", req.Height, f)
	}
	if req.ClipSkip > m.text.Config.Layers {
		return fmt.Errorf("--clip-skip %d: the text encoder has %d layers", req.ClipSkip, m.text.Config.Layers)
	}
	return nil
}

func (m *Model) checkShape(shape [4]int) error {
	if shape[0] < 1 || shape[1] != m.LatentChannels() || shape[2] < 1 || shape[3] < 1 {
		return fmt.Errorf("latent shape %v: want [batch ≥ 1, %d, h ≥ 1, w ≥ 1]", shape, m.LatentChannels())
	}
	return nil
}

func (m *Model) sample(ctx context.Context, p SampleParams, onEvent func(Event)) ([]float32, error) {
	if err := m.checkShape(p.Shape); err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	if p.Cond == nil || (p.Uncond == nil && p.CFG != 1) {
		return nil, fmt.Errorf("sample: a conditioning is missing (the negative one is needed unless cfg is 1)")
	}
	if p.Sigmas != nil && len(p.Sigmas) < 2 {
		return nil, fmt.Errorf("sample: %d sigmas; want at least a start and an end", len(p.Sigmas))
	}
	n := p.Shape[0] * p.Shape[1] * p.Shape[2] * p.Shape[3]
	if len(p.Noise) != n {
		return nil, fmt.Errorf("sample: %d noise values for latents %v", len(p.Noise), p.Shape)
	}
	sched := m.schedule
	if p.Convention != ConventionComfy {
		sched = m.scheduleDiffusers
	}
	sigmas := p.Sigmas
	if sigmas == nil {
		var err error
		sigmas, err = sampling.SamplerSigmas(p.Sampler, p.Scheduler, sched, p.Steps)
		if err != nil {
			return nil, err
		}
	}
	var scale float32
	switch p.Convention {
	case ConventionComfy:
		scale = sampling.InitialNoiseScale(sigmas[0], sched.SigmaMax())
	case ConventionDiffusers:
		scale = sigmas[0]
	case ConventionDiffusersRounded:
		// Unit noise in the variance-preserving space at any σ₀.
		scale = float32(math.Sqrt(1 + float64(sigmas[0])*float64(sigmas[0])))
	}
	x, err := sampling.NoiseLatent(p.Noise, p.Latent, scale)
	if err != nil {
		return nil, err
	}
	den := m.denoiser(p.Cond, p.Uncond, float32(p.CFG), p.Shape, sched, p.Convention)
	total := len(sigmas) - 1
	cb := func(s sampling.StepInfo) {
		if onEvent != nil {
			onEvent(Event{Phase: PhaseSample, Step: s.Step + 1, Total: total, Sigma: s.Sigma,
				Denoised: append([]float32(nil), s.Denoised...), Latent: append([]float32(nil), s.X...), LatentShape: p.Shape})
		}
	}
	return sampling.Sample(ctx, p.Sampler, den, x, sigmas, sampling.TorchNoise(p.Seed), cb)
}

// denoiser wraps the UNet as a k-diffusion style ε-prediction denoiser with
// classifier-free guidance: D(x, σ) = x − σ·ε̂, where the UNet sees
// x/sqrt(σ²+1) at timestep t(σ) (per the convention) and
// ε̂ = ε_u + cfg·(ε_c − ε_u). The conditional and unconditional halves run as
// one batch; with cfg = 1 only the conditional half runs.
func (m *Model) denoiser(cond, uncond *Conditioning, cfg float32, shape [4]int, sched *sampling.Discrete, conv Convention) sampling.Denoiser {
	dev := m.dev
	b := shape[0]
	per := shape[1] * shape[2] * shape[3]
	useUncond := cfg != 1
	// Contexts of different lengths are repeated to their least common multiple.
	ct := cond.Tensor()
	var parts []*backend.Tensor
	if useUncond {
		ut := uncond.Tensor()
		l := ct.Shape[1] / gcd(ct.Shape[1], ut.Shape[1]) * ut.Shape[1]
		ct, ut = repeatTo(dev, ct, l), repeatTo(dev, ut, l)
		for range b {
			parts = append(parts, ut)
		}
	}
	for range b {
		parts = append(parts, ct)
	}
	ctxLen, width := ct.Shape[1], ct.Shape[2]
	ctxT := dev.Alloc(len(parts), ctxLen, width)
	dev.Concat(ctxT, 0, parts...)
	rows := len(parts)

	return func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
		cIn := float32(1 / sqrt64(float64(sigma)*float64(sigma)+1))
		in := make([]float32, rows*per)
		for r := range rows {
			src := x[(r%b)*per : (r%b+1)*per]
			dst := in[r*per : (r+1)*per]
			for i, v := range src {
				dst[i] = v * cIn
			}
		}
		var t float32
		switch conv {
		case ConventionComfy:
			t = float32(sched.NearestTimestep(sigma))
		case ConventionDiffusers:
			t = sched.Timestep(sigma)
		case ConventionDiffusersRounded:
			t = float32(math.RoundToEven(float64(sched.Timestep(sigma))))
		}
		ts := make([]float32, rows)
		for i := range ts {
			ts[i] = t
		}
		xt := dev.Upload(in, rows, shape[1], shape[2], shape[3])
		eps, err := m.unet.Forward(ctx, dev, xt, ts, ctxT)
		if err != nil {
			return nil, err
		}
		e, err := dev.Download(eps)
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(x))
		for i := range out {
			var ev float32
			if useUncond {
				u, c := e[i], e[b*per+i]
				ev = u + cfg*(c-u)
			} else {
				ev = e[i]
			}
			out[i] = x[i] - sigma*ev
		}
		return out, nil
	}
}
