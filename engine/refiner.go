package engine

import (
	"context"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// parameterization is the model sampling and prediction type of a run:
// the model's, with the request's zero-terminal-SNR rescaling and
// prediction override applied, and under diffusers' convention bound to
// the run's scheduler (family.Discrete.ForScheduler). An override contradicting what the file
// declares is refused.
func (m *Model) parameterization(p SampleParams) (family.ModelSampling, sampling.Prediction, error) {
	ms, pred := m.c.Sampling, m.c.Denoiser.Prediction()
	if p.ZSNR {
		z, ok := ms.(interface {
			ZeroTerminalSNR() (family.ModelSampling, error)
		})
		if !ok {
			return nil, 0, &FieldError{Field: "zsnr", Value: true, Msg: "only discrete (ε or v) models have a schedule to rescale"}
		}
		var err error
		if ms, err = z.ZeroTerminalSNR(); err != nil {
			return nil, 0, err
		}
	}
	if p.Prediction != "" {
		want, err := sampling.ParsePrediction(p.Prediction)
		if err != nil {
			return nil, 0, &FieldError{Field: "prediction", Value: p.Prediction, Msg: "want eps or v"}
		}
		switch {
		case pred == sampling.Velocity:
			return nil, 0, &FieldError{Field: "prediction", Value: p.Prediction, Msg: "this is a flow-matching model; it predicts a velocity"}
		case want != pred && m.c.PredictionEvidence != "":
			return nil, 0, &FieldError{Field: "prediction", Value: p.Prediction, Msg: fmt.Sprintf("the model declares %v-prediction (%s)", pred, m.c.PredictionEvidence)}
		}
		pred = want
	}
	if f, ok := ms.(interface {
		ForScheduler(string) family.ModelSampling
	}); ok && p.Convention != ConventionComfy {
		ms = f.ForScheduler(p.Scheduler)
	}
	sized, ok := ms.(family.SizedSampling)
	switch {
	case ok:
		w, h := m.imageSize(p)
		var err error
		if ms, err = sized.ForImage(w, h, p.Shift); err != nil {
			return nil, 0, err
		}
	case p.Shift != 0:
		return nil, 0, &FieldError{Field: "shift", Value: p.Shift, Msg: "only flow-matching models with a shift rule (Flux) take a shift"}
	}
	return ms, pred, nil
}

// imageSize is the request's image size, or the latent shape's times the
// latent factor.
func (m *Model) imageSize(p SampleParams) (w, h int) {
	if p.Width > 0 && p.Height > 0 {
		return p.Width, p.Height
	}
	f := m.LatentFormat().Factor
	if len(p.Shape) < 4 {
		return 0, 0
	}
	return p.Shape[len(p.Shape)-1] * f, p.Shape[len(p.Shape)-2] * f
}

// Default refiner switch point: the base runs 80% of the steps, as
// A1111's default and diffusers' documented denoising_end=0.8.
const defaultRefinerSwitch = 0.8

// switchStep is the number of steps the base runs before the refiner: under
// ComfyUI's convention round(steps·switch), as a KSamplerAdvanced pair is
// set up (end_at_step / start_at_step); under diffusers' the steps whose
// timestep is at or above round(1000 − switch·1000), as denoising_end
// counts them. At least one step each.
func (m *Model) switchStep(sigmas []float32, ms family.ModelSampling, conv Convention, frac float64) int {
	steps := len(sigmas) - 1
	k := int(math.Round(float64(steps) * frac))
	if conv != ConventionComfy {
		cutoff := math.Round(1000 - frac*1000)
		k = 0
		for _, s := range sigmas[:steps] {
			if float64(ms.Timestep(conv, s)) >= cutoff {
				k++
			}
		}
	}
	return min(max(k, 1), steps-1)
}

// sampleWithRefiner runs the base on the first part of the schedule and
// the refiner on the rest, on one latent (A1111's refiner, diffusers'
// denoising_end / denoising_start, two KSamplerAdvanced in ComfyUI). The
// refiner encodes the prompts with its own text encoder. Both models stay
// loaded.
func (m *Model) sampleWithRefiner(ctx context.Context, req Request, p SampleParams, ref *Model, onEvent func(Event)) ([]float32, error) {
	if err := m.checkRefiner(req, ref); err != nil {
		return nil, err
	}
	if steps := req.Steps; steps < 2 {
		return nil, &FieldError{Field: "steps", Value: steps, Msg: "a refiner needs at least 2 steps (one each)"}
	}
	ms, _, err := m.parameterization(p)
	if err != nil {
		return nil, err
	}
	sigmas, err := sampling.SamplerSigmas(p.Sampler, p.Scheduler, ms.Schedule(p.Convention), p.Steps)
	if err != nil {
		return nil, err
	}
	frac := req.RefinerSwitch
	if frac == 0 {
		frac = defaultRefinerSwitch
	}
	k := m.switchStep(sigmas, ms, p.Convention, frac)
	total := len(sigmas) - 1
	base := p
	base.Sigmas = sigmas[:k+1]
	x, err := m.sample(ctx, base, func(ev Event) {
		ev.Total = total
		onEvent(ev)
	})
	m.c.Denoiser.Reset()
	if err != nil {
		return nil, err
	}

	rp := p
	rp.Sigmas, rp.Start = sigmas[k:], x
	if p.Mask == nil {
		rp.Noise, rp.Latent = nil, nil
	}
	return ref.refine(ctx, req, rp, func(ev Event) {
		ev.Step += k
		ev.Total = total
		onEvent(ev)
	})
}

// checkRefiner refuses a refiner that is the model itself or works in
// another latent space.
func (m *Model) checkRefiner(req Request, ref *Model) error {
	if ref == m {
		return &FieldError{Field: "refiner", Value: req.Refiner, Msg: "is the model itself"}
	}
	bf, rf := m.LatentFormat(), ref.LatentFormat()
	if bf.Channels != rf.Channels || bf.Factor != rf.Factor || bf.Scale != rf.Scale || bf.Shift != rf.Shift {
		return &FieldError{Field: "refiner", Value: req.Refiner, Msg: fmt.Sprintf("works in another latent space (%d channels, scale %g; the model: %d, %g): it needs the same one", rf.Channels, rf.Scale, bf.Channels, bf.Scale)}
	}
	return nil
}

// refine runs the refiner ref on p with its own text encoder (the
// request's prompts, re-encoded) and its own model sampling: the model's
// prediction override and zsnr do not apply to it.
func (ref *Model) refine(ctx context.Context, req Request, p SampleParams, onEvent func(Event)) ([]float32, error) {
	ref.mu.Lock()
	defer ref.mu.Unlock()
	defer ref.c.Denoiser.Reset()
	opt := family.PromptOptions{ClipSkip: req.ClipSkip, Convention: p.Convention}
	if err := ref.c.Text.Check(opt); err != nil {
		return nil, err
	}
	p.Prediction, p.ZSNR = "", false
	if ref.c.InpaintChannels == 0 {
		p.Concat = nil
	}
	var err error
	if p.Cond, err = ref.encodePrompt(ctx, req.Prompt, opt); err != nil {
		return nil, fmt.Errorf("refiner: %w", err)
	}
	p.Uncond = nil
	if p.CFG != 1 {
		neg := opt
		neg.Negative = true
		if p.Uncond, err = ref.encodePrompt(ctx, req.Negative, neg); err != nil {
			return nil, fmt.Errorf("refiner: %w", err)
		}
	}
	out, err := ref.sample(ctx, p, onEvent)
	if err != nil {
		return nil, fmt.Errorf("refiner: %w", err)
	}
	return out, nil
}

// sampleThenRefine runs the model's whole schedule, then the refiner as an
// img2img pass over the finished latent with strength req.RefinerDenoise
// (a second KSampler with the refiner in ComfyUI; diffusers'
// StableDiffusionXLImg2ImgPipeline given the latents): fresh noise from
// the request's seed, added at the start sigma of the denoised part.
func (m *Model) sampleThenRefine(ctx context.Context, req Request, p SampleParams, ref *Model, onEvent func(Event)) ([]float32, error) {
	if err := m.checkRefiner(req, ref); err != nil {
		return nil, err
	}
	x, err := m.sample(ctx, p, onEvent)
	m.c.Denoiser.Reset()
	if err != nil {
		return nil, err
	}
	rp := p
	rp.Latent, rp.Start, rp.Sigmas = x, nil, nil
	rp.Noise = rng.NewTorch(req.Seed).Randn(len(x))
	rp.Denoise = req.RefinerDenoise
	return ref.refine(ctx, req, rp, onEvent)
}
