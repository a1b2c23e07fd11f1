package engine

import (
	"context"
	"fmt"
	"image"
	"math"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tensor"
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
	// LatentShape is the shape of Denoised and Latent: [B, C, h, w], or
	// [B, C, T, h, w] for video.
	LatentShape []int
	// Format is the model's latent format (for LatentPreview and TAESD).
	Format LatentFormat
	// Preview is a ready preview image of the first batch item, set by
	// remote runs (server.Client passes on the server's latent preview,
	// which carries no latents); nil otherwise.
	Preview *image.NRGBA
}

// Result is a finished generation.
type Result struct {
	Request Request
	// Images are the decoded images, one per batch item.
	Images []*image.NRGBA
	// Latents are the final latents, of shape LatentShape.
	Latents     []float32
	LatentShape []int
	// Timings of each phase.
	EncodeTime, SampleTime, DecodeTime time.Duration
	// PeakMemory is the most device memory the job's tensors held at once,
	// in bytes, on devices that track it (CUDA); 0 otherwise. Weights
	// uploaded before the job count too.
	PeakMemory uint64
	// Notices are one-line messages about how the job ran that the user
	// should see (a VAE decode redone in float32 after a 16-bit overflow).
	Notices []string
}

// Generate runs one text-to-image request on the model with the generic
// pipeline every family shares: encode the prompts with the family's
// conditioner, sample with its denoiser and model sampling (guidance in
// package sampling), decode with its VAE. onEvent (may be nil) is called
// synchronously on the generating goroutine. Cancelling ctx stops the job
// between network blocks and sampler steps.
func (m *Model) Generate(ctx context.Context, req Request, onEvent func(Event)) (*Result, error) {
	if err := initSize(&req); err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.Refiner != "" {
		return nil, &FieldError{Field: "refiner", Value: req.Refiner, Msg: "a refiner is loaded by the engine: run the request with Engine.Generate"}
	}
	var up *Upscaler
	if req.Hires > 1 && IsUpscalerModel(req.HiresUpscaler) {
		// Without an engine there are no model folders: a file only.
		if !fileExists(req.HiresUpscaler) {
			return nil, &FieldError{Field: "hires_upscaler", Value: req.HiresUpscaler, Msg: "no such file (Engine.Generate also finds upscaler names in the upscale_models folders)"}
		}
		var err error
		if up, err = LoadUpscaler(ctx, req.HiresUpscaler, m.dev); err != nil {
			return nil, &FieldError{Field: "hires_upscaler", Value: req.HiresUpscaler, Msg: err.Error()}
		}
	}
	return m.generate(ctx, req, onEvent, nil, up)
}

// generate runs a validated request; ref, when set, is the refiner that
// takes over the last steps, up the hires fix's upscaler model.
func (m *Model) generate(ctx context.Context, req Request, onEvent func(Event), ref *Model, up *Upscaler) (*Result, error) {
	if m.c.RefineOnly != "" && req.InitImage == "" {
		return nil, &FieldError{Field: "model", Value: req.Model, Msg: m.c.RefineOnly}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	conv, err := requestConvention(req)
	if err != nil {
		return nil, err
	}
	if req.Denoise > 0 && req.Denoise < 1 && req.InitImage == "" {
		// A partial run needs a starting image; txt2img has none.
		return nil, &FieldError{Field: "denoise", Value: req.Denoise, Msg: "below 1 needs an init image (--init-image)"}
	}
	if req.Hires > 1 && (req.Mask != "" || req.Outpaint != "") {
		return nil, &FieldError{Field: "hires", Value: req.Hires, Msg: "a hires fix of an inpainting run is not supported: inpaint at the final size"}
	}
	if req.RefinerDenoise > 0 && ref == nil {
		return nil, &FieldError{Field: "refiner_denoise", Value: req.RefinerDenoise, Msg: "needs a refiner (--refiner)"}
	}
	d := m.c.Defaults
	switch {
	case req.Guidance != 0 && d.Guidance == 0:
		return nil, &FieldError{Field: "guidance", Value: req.Guidance, Msg: "this model has no embedded guidance (only guidance-distilled models such as Flux dev take it); use --cfg"}
	case req.MaxSequenceLength != 0 && d.MaxSequenceLength == 0:
		return nil, &FieldError{Field: "max_sequence_length", Value: req.MaxSequenceLength, Msg: "this model has no T5 text encoder"}
	case req.Guidance == 0:
		req.Guidance = d.Guidance
	}
	opt := family.PromptOptions{ClipSkip: req.ClipSkip, Convention: conv, MaxSequenceLength: req.MaxSequenceLength}
	if err := m.checkRequest(req, opt); err != nil {
		return nil, err
	}
	// The denoiser's recorded step (a CUDA graph and the memory it owns)
	// lives for this job: the memory returns to the pool when the job
	// ends, finished or cancelled.
	defer m.c.Denoiser.Reset()
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
	cond, err := m.encodePrompt(ctx, req.Prompt, opt)
	if err != nil {
		return nil, err
	}
	var uncond *Conditioning
	if req.CFG != 1 {
		neg := opt
		neg.Negative = true
		if uncond, err = m.encodePrompt(ctx, req.Negative, neg); err != nil {
			return nil, err
		}
	}
	res.EncodeTime = time.Since(start)

	shape := m.LatentFormat().Shape(req.Batch, req.Width, req.Height, 0)
	g := rng.NewTorch(req.Seed)
	var init *initState
	var initLatents, latentMask []float32
	if req.InitImage != "" {
		// Under diffusers' convention the encoder's sample draws from g
		// first, then the noise (its img2img pipelines' order).
		if init, err = m.prepareInit(ctx, req, conv, g); err != nil {
			return nil, err
		}
		initLatents, latentMask = init.latents, init.latentMask
	}
	var concat []float32
	if m.c.InpaintChannels > 0 {
		if concat, err = m.inpaintConcat(ctx, shape, init); err != nil {
			return nil, err
		}
	}
	noise := initialNoise(req, shape, g)
	t0 := time.Now()
	params := SampleParams{
		Cond: cond, Uncond: uncond, CFG: req.CFG,
		Sampler: req.Sampler, Scheduler: req.Scheduler, Steps: req.Steps,
		Denoise: req.Denoise, DenoiseSteps: denoiseRule(req, conv), Latent: initLatents, Mask: latentMask, Concat: concat,
		Seed: req.Seed, Noise: noise, Shape: shape, Convention: conv,
		Width: req.Width, Height: req.Height,
		Prediction: req.Prediction, ZSNR: req.ZSNR, Size: sizeConditioning(req),
		Guidance: req.Guidance, Shift: req.Shift,
		SLGLayers: req.SLGLayers, SLGScale: orDefault(req.SLGScale, DefaultSLGScale), SLGStart: orDefault(req.SLGStart, DefaultSLGStart), SLGEnd: orDefault(req.SLGEnd, DefaultSLGEnd),
	}
	progress := func(ev Event) {
		ev.Elapsed = time.Since(start)
		onEvent(ev)
	}
	var latents []float32
	switch {
	case ref != nil && req.RefinerDenoise > 0:
		latents, err = m.sampleThenRefine(ctx, req, params, ref, progress)
	case ref != nil:
		latents, err = m.sampleWithRefiner(ctx, req, params, ref, progress)
	default:
		latents, err = m.sample(ctx, params, progress)
	}
	if err != nil {
		return nil, err
	}
	if req.Hires > 1 {
		if init != nil && init.mask != nil {
			return nil, &FieldError{Field: "hires", Value: req.Hires, Msg: "a hires fix of an inpainting run is not supported: inpaint at the final size"}
		}
		if latents, shape, err = m.hiresPass(ctx, req, params, latents, progress, up); err != nil {
			return nil, err
		}
	}
	res.SampleTime = time.Since(t0)
	res.Latents, res.LatentShape = latents, shape
	for _, v := range latents {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("sampling produced non-finite values (NaN or Inf): the model's weights or the settings are broken")
		}
	}

	// The recorded step's memory is free for the decoder.
	m.c.Denoiser.Reset()
	t0 = time.Now()
	onEvent(Event{Phase: PhaseDecode, Elapsed: time.Since(start)})
	m.notices = nil
	res.Images, err = m.decodeImages(ctx, latents, shape)
	res.Notices, m.notices = m.notices, nil
	if init != nil {
		res.Notices = append(init.notes, res.Notices...)
	}
	if err != nil {
		return nil, err
	}
	if init != nil && init.mask != nil {
		for i, img := range res.Images {
			res.Images[i] = composite(img, init.img, init.mask)
		}
	}
	res.DecodeTime = time.Since(t0)
	onEvent(Event{Phase: PhaseDone, Elapsed: time.Since(start)})
	return res, nil
}

// requestConvention maps the request's convention name.
func requestConvention(req Request) (Convention, error) {
	c, err := family.ParseConvention(req.Convention, req.Sampler)
	if err != nil {
		return 0, &FieldError{Field: "convention", Value: req.Convention, Msg: "want comfyui or diffusers"}
	}
	return c, nil
}

// SampleParams configure Model.Sample.
type SampleParams struct {
	Cond, Uncond *Conditioning
	CFG          float64
	Sampler      string
	Scheduler    string
	Steps        int
	// Denoise is the fraction of the schedule run (img2img strength), by
	// the DenoiseSteps rule (ComfyUI's KSampler by default: the last Steps
	// steps of a Steps/Denoise schedule); 0 or 1 is a full run.
	Denoise float64
	// DenoiseSteps is the rule of a partial run: DenoiseStepsComfy ("" too),
	// DenoiseStepsA1111 or DenoiseStepsDiffusers.
	DenoiseSteps string
	// Sigmas overrides Scheduler/Steps/Denoise when set.
	Sigmas []float32
	// Seed seeds the sampler's own noise (ancestral and SDE samplers).
	Seed uint64
	// Noise is the unit initial noise [Shape]; Latent (optional) is a clean
	// starting latent it is added to (img2img).
	Noise, Latent []float32
	// Concat holds an inpainting model's extra input channels per image,
	// [B, InpaintChannels, h, w] (the mask, then the masked image's
	// latents); nil for other models (see inpaintConcat).
	Concat []float32
	// Mask (optional, with Latent) restricts the run to where it is 1: one
	// value per latent pixel [h·w], shared by the batch and the channels
	// (inpainting; see inpaintDenoiser).
	Mask []float32
	// Shape is the latent shape [B, C, h, w] (or [B, C, T, h, w]).
	Shape []int
	// Width and Height are the image size in pixels, for families whose
	// denoiser is conditioned on it; 0 means Shape's size × the factor.
	Width, Height int
	// Convention selects the numerical conventions; the zero value is
	// ComfyUI's.
	Convention Convention
	// Start, when set, is the latent already at Sigmas[0] (a run that
	// continues another, such as a refiner's): Noise and Latent are not
	// used.
	Start []float32
	// Prediction overrides what an ε/v model predicts when its file does
	// not say ("eps" or "v"; "" keeps the model's).
	Prediction string
	// ZSNR rescales a discrete schedule to zero terminal SNR.
	ZSNR bool
	// Size is SDXL-style micro-conditioning (zero fields: defaults).
	Size family.SizeConditioning
	// Guidance is a guidance-distilled model's embedded guidance (Flux
	// dev); 0 takes the model's default.
	Guidance float64
	// Shift replaces a flow model's shift rule when positive (Flux: μ).
	Shift float64
	// SLGLayers, SLGScale, SLGStart and SLGEnd are Skip-Layer Guidance
	// (see slg.go): the blocks to skip ("" is off), the scale and the
	// active fraction of the schedule.
	SLGLayers                  string
	SLGScale, SLGStart, SLGEnd float64
}

// sizeConditioning gathers a request's micro-conditioning fields.
func sizeConditioning(r Request) family.SizeConditioning {
	return family.SizeConditioning{
		OriginalWidth: r.OriginalWidth, OriginalHeight: r.OriginalHeight,
		CropTop: r.CropTop, CropLeft: r.CropLeft,
		TargetWidth: r.TargetWidth, TargetHeight: r.TargetHeight,
		Aesthetic: r.AestheticScore, NegativeAesthetic: r.NegativeAestheticScore,
	}
}

// Sample runs the sampler loop with classifier-free guidance and returns the
// final latents. onEvent (may be nil) receives a PhaseSample event per step.
func (m *Model) Sample(ctx context.Context, p SampleParams, onEvent func(Event)) ([]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.c.Denoiser.Reset()
	return m.sample(ctx, p, onEvent)
}

// checkRequest checks what depends on the model: the image size against the
// latent factor, and the prompt options against the text encoders.
func (m *Model) checkRequest(req Request, opt family.PromptOptions) error {
	f := m.LatentFormat().Factor
	if req.Width%f != 0 {
		return &FieldError{Field: "width", Value: req.Width, Msg: fmt.Sprintf("this model needs a multiple of %d", f)}
	}
	if req.Height%f != 0 {
		return &FieldError{Field: "height", Value: req.Height, Msg: fmt.Sprintf("this model needs a multiple of %d", f)}
	}
	if err := m.c.Text.Check(opt); err != nil {
		return err
	}
	return m.checkLoRAs(req)
}

func (m *Model) checkShape(shape []int) error {
	f := m.LatentFormat()
	want := 4
	if f.TemporalFactor > 0 {
		want = 5
	}
	ok := len(shape) == want && shape[1] == f.Channels
	for _, d := range shape {
		ok = ok && d >= 1
	}
	if !ok {
		if want == 5 {
			return fmt.Errorf("latent shape %v: want [batch ≥ 1, %d, frames ≥ 1, h ≥ 1, w ≥ 1]", shape, f.Channels)
		}
		return fmt.Errorf("latent shape %v: want [batch ≥ 1, %d, h ≥ 1, w ≥ 1]", shape, f.Channels)
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
	if p.Start != nil && (len(p.Start) != tensor.Shape(p.Shape).NumElements() || p.Sigmas == nil) {
		return nil, fmt.Errorf("sample: a start latent needs its sigmas and %d values for latents %v", tensor.Shape(p.Shape).NumElements(), p.Shape)
	}
	if p.Start == nil && len(p.Noise) != tensor.Shape(p.Shape).NumElements() {
		return nil, fmt.Errorf("sample: %d noise values for latents %v", len(p.Noise), p.Shape)
	}
	ms, pred, err := m.parameterization(p)
	if err != nil {
		return nil, err
	}
	sched := ms.Schedule(p.Convention)
	sigmas := p.Sigmas
	if sigmas == nil {
		var err error
		if p.Denoise > 0 && p.Denoise < 1 {
			sigmas, err = img2imgSigmas(p.DenoiseSteps, p.Sampler, p.Scheduler, sched, p.Steps, p.Denoise, ms.Flow() != nil)
		} else {
			sigmas, err = sampling.SamplerSigmas(p.Sampler, p.Scheduler, sched, p.Steps)
		}
		if err != nil {
			return nil, err
		}
		if len(sigmas) < 2 {
			return nil, fmt.Errorf("sample: denoise %g leaves no step to run", p.Denoise)
		}
	}
	flow := ms.Flow()
	var x []float32
	switch {
	case p.Start != nil:
		x = append([]float32(nil), p.Start...)
	case flow != nil:
		x, err = sampling.FlowNoiseLatent(p.Noise, p.Latent, sigmas[0])
	default:
		scale := ms.NoiseScale(p.Convention, sigmas[0], p.Latent != nil)
		x, err = sampling.NoiseLatent(p.Noise, p.Latent, scale)
	}
	if err != nil {
		return nil, err
	}
	f := m.LatentFormat()
	w, h := m.imageSize(p)
	in := family.Inputs{Width: w, Height: h, Size: p.Size, Guidance: float32(p.Guidance)}
	if m.c.InpaintChannels > 0 {
		if p.Concat == nil {
			if p.Concat, err = m.inpaintConcat(ctx, p.Shape, nil); err != nil {
				return nil, err
			}
		}
		cs := append([]int{p.Shape[0], m.c.InpaintChannels}, p.Shape[2:]...)
		if len(p.Concat) != tensor.Shape(cs).NumElements() {
			return nil, fmt.Errorf("sample: %d inpainting values for %v", len(p.Concat), cs)
		}
		in.Concat = m.dev.Upload(p.Concat, cs...)
		defer m.dev.Free(in.Concat)
	}
	den, err := m.denoiser(ctx, p, ms, pred, in, sigmas)
	if err != nil {
		return nil, err
	}
	if p.Mask != nil {
		n := tensor.Shape(p.Shape).NumElements()
		plane := p.Shape[len(p.Shape)-1] * p.Shape[len(p.Shape)-2]
		if len(p.Mask) != plane || len(p.Latent) != n || len(p.Noise) != n {
			return nil, fmt.Errorf("sample: a mask needs %d values, the init latent and its noise (%d values each)", plane, n)
		}
		den = inpaintDenoiser(den, p.Latent, p.Noise, p.Mask, flow != nil)
	}
	total := len(sigmas) - 1
	cb := func(s sampling.StepInfo) {
		if onEvent != nil {
			onEvent(Event{Phase: PhaseSample, Step: s.Step + 1, Total: total, Sigma: s.Sigma,
				Denoised: append([]float32(nil), s.Denoised...), Latent: append([]float32(nil), s.X...),
				LatentShape: append([]int(nil), p.Shape...), Format: f})
		}
	}
	return sampling.SampleWith(ctx, p.Sampler, den, x, sigmas, sampling.TorchNoise(p.Seed), cb, sampling.Options{Flow: flow})
}

// denoiser binds the conditioning rows (the negative prompt's for every
// image, then the prompt's, when cfg ≠ 1) and wraps the family's network
// as a k-diffusion denoiser with classifier-free guidance.
//
// With Skip-Layer Guidance (p.SLGLayers) the prompt's rows are bound once
// more with those blocks skipped, for the guidance hook (slgPost).
func (m *Model) denoiser(ctx context.Context, p SampleParams, ms family.ModelSampling, pred sampling.Prediction, in family.Inputs, sigmas []float32) (sampling.Denoiser, error) {
	b := p.Shape[0]
	useUncond := p.CFG != 1
	var rows []*family.Cond
	if useUncond {
		for range b {
			rows = append(rows, p.Uncond.c)
		}
		in.NegativeRows = b
	}
	for range b {
		rows = append(rows, p.Cond.c)
	}
	step, err := m.c.Denoiser.Bind(ctx, rows, in)
	if err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	post, err := m.slgPost(ctx, p, ms, pred, in, sigmas)
	if err != nil {
		return nil, err
	}
	if r, ok := m.c.Denoiser.(family.NormRescaler); ok && useUncond && p.Convention != ConventionComfy {
		if post != nil {
			return nil, &FieldError{Field: "slg_layers", Value: p.SLGLayers, Msg: "skip-layer guidance does not combine with this model's rescaled CFG"}
		}
		post = normRescale(p.Shape, r.RescalePatch())
	}
	den, err := guided(m.dev, step, pred, ms, p.Convention, float32(p.CFG), p.Shape, useUncond, post)
	if err != nil {
		return nil, fmt.Errorf("sample: %w", err)
	}
	return den, nil
}

// batchStep presents a network step as a sampling.BatchFunc: the host
// latents of some rows (each of shape[1:]) are uploaded and run at one
// timestep per row, and the raw output comes back to the host.
func batchStep(dev backend.Device, step family.Step, shape []int) sampling.BatchFunc {
	per := tensor.Shape(shape).NumElements() / shape[0]
	return func(ctx context.Context, xIn []float32, t float32) ([]float32, error) {
		rows := len(xIn) / per
		ts := make([]float32, rows)
		for i := range ts {
			ts[i] = t
		}
		raw, err := step(ctx, dev.Upload(xIn, append([]int{rows}, shape[1:]...)...), ts)
		if err != nil {
			return nil, err
		}
		return dev.Download(raw)
	}
}

// guided wraps a network step as a denoiser D(x, σ) with classifier-free
// guidance, by sampling.GuidedWith with the engine's order
// (sampling.EngineGuidance): the latent is fed as x·c_in (c_in =
// 1/sqrt(σ²+1) in float64) for ε and v models and unscaled for flow
// velocity, the negative rows first; ε models are guided on the network
// output (ε_u + cfg·(ε_c − ε_u), then x − σ·ε̂), v and flow models on the
// denoised estimates as ComfyUI's cfg_function does.
func guided(dev backend.Device, step family.Step, pred sampling.Prediction, ms family.ModelSampling, conv Convention, cfg float32, shape []int, useUncond bool,
	post func(context.Context, []float32, float32, []float32, []float32) error) (sampling.Denoiser, error) {
	net := batchStep(dev, step, shape)
	timestep := func(sigma float32) float32 { return ms.Timestep(conv, sigma) }
	opts := sampling.EngineGuidance(pred)
	opts.Post = post
	return sampling.GuidedWith(net, pred, timestep, cfg, useUncond, opts)
}
