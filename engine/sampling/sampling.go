// Package sampling implements diffusion noise schedules and samplers the way
// ComfyUI and k-diffusion define them.
//
// The package sees the model only as a function (a Denoiser) and works on
// host float32 slices, the flattened [B,C,H,W] latent. Per-element updates
// follow the order of PyTorch's float32 tensor operations in the reference
// code, and scalar coefficients derived from the float32 sigmas tensor are
// computed in float32, as k-diffusion does with 0-dimensional tensors, so that
// the results agree with ComfyUI to float32 rounding.
//
// There are three independent axes, kept apart:
//   - the model's noise schedule (Schedule: Discrete for SD1/SD2/SDXL, Flow
//     for SD3/Flux),
//   - the scheduler, which picks the sigmas to visit (Sigmas),
//   - the sampler, which integrates from sigma to sigma (Sample).
//
// See docs/sampling.md for where darkroom differs from ComfyUI and why.
package sampling

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Denoiser returns the model's estimate of the clean latent x0 for x at noise
// level sigma, with classifier-free guidance already applied (NewDenoiser
// and Guided build one from a network).
// len(out) must equal len(x). It must not modify x, and must return a slice
// it does not reuse: multistep samplers keep earlier outputs.
type Denoiser func(ctx context.Context, x []float32, sigma float32) ([]float32, error)

// NoiseSource returns n fresh standard-normal values. In ComfyUI the default
// noise sampler is a torch CPU generator seeded with the job seed from which
// every call draws torch.randn(x.shape); TorchNoise builds that source.
type NoiseSource func(n int) []float32

// StepInfo is passed to the per-step callback.
type StepInfo struct {
	// Step is the 0-based step index and Total the number of steps.
	Step, Total int
	// Sigma is the noise level the step started from (sigmas[Step]).
	Sigma float32
	// X is the latent after the step; Denoised is the model's x0 estimate
	// at Sigma (k-diffusion's "denoised"). Both are owned by the sampler:
	// copy them to keep them past the callback.
	X, Denoised []float32
}

// Callback receives progress after every step.
type Callback func(StepInfo)

// samplerFunc integrates x along sigmas, for either model family. It may
// overwrite x. Each one builds its per-step update and hands it to
// run.loop (step.go).
type samplerFunc func(r *run, x []float32) ([]float32, error)

// samplers maps ComfyUI sampler names to implementations.
var samplers = map[string]samplerFunc{
	"euler":              sampleEuler,
	"euler_ancestral":    sampleEulerAncestral,
	"heun":               sampleHeun,
	"dpm_2":              sampleDPM2,
	"dpm_2_ancestral":    sampleDPM2Ancestral,
	"lms":                sampleLMS,
	"dpmpp_2s_ancestral": sampleDPMPP2SAncestral,
	"dpmpp_2m":           sampleDPMPP2M,
	"dpmpp_sde":          sampleDPMPPSDE,
	"dpmpp_2m_sde":       sampleDPMPP2MSDEMidpoint,
	"dpmpp_2m_sde_heun":  sampleDPMPP2MSDEHeun,
	"dpmpp_3m_sde":       sampleDPMPP3MSDE,
	"ddpm":               sampleDDPM,
	"ddim":               sampleEuler, // ComfyUI: euler, see docs/sampling.md
	"lcm":                sampleLCM,
	"ipndm":              sampleIPNDM,
	"ipndm_v":            sampleIPNDMV,
	"deis":               sampleDEIS,
	"uni_pc":             sampleUniPCBH1,
	"uni_pc_bh2":         sampleUniPCBH2,
}

// needsNoise lists the stochastic samplers.
var needsNoise = map[string]bool{
	"euler_ancestral": true, "dpm_2_ancestral": true, "dpmpp_2s_ancestral": true,
	"dpmpp_sde": true, "dpmpp_2m_sde": true, "dpmpp_2m_sde_heun": true, "dpmpp_3m_sde": true,
	"ddpm": true, "lcm": true,
}

// Stochastic reports whether a sampler draws fresh noise as it steps (and so
// needs a NoiseSource): the ancestral, SDE, ddpm and lcm samplers.
func Stochastic(sampler string) bool { return needsNoise[sampler] }

// Samplers returns the supported ComfyUI sampler names, sorted.
func Samplers() []string {
	names := make([]string, 0, len(samplers))
	for n := range samplers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// discardPenultimate lists the samplers for which ComfyUI's KSampler computes
// steps+1 sigmas and drops the next-to-last one.
var discardPenultimate = map[string]bool{
	"dpm_2": true, "dpm_2_ancestral": true, "uni_pc": true, "uni_pc_bh2": true,
}

// DiscardsPenultimateSigma reports whether ComfyUI's KSampler node computes
// steps+1 sigmas for this sampler and drops the next-to-last one (dpm_2,
// dpm_2_ancestral, uni_pc, uni_pc_bh2). SamplerSigmas applies the rule.
func DiscardsPenultimateSigma(sampler string) bool { return discardPenultimate[sampler] }

// SamplerSigmas returns the sigmas ComfyUI's KSampler node uses for a
// sampler, scheduler and step count at full denoise: Sigmas, with the
// penultimate-sigma rule of DiscardsPenultimateSigma applied.
func SamplerSigmas(sampler, scheduler string, s Schedule, steps int) ([]float32, error) {
	if _, ok := samplers[sampler]; !ok {
		return nil, unknownSampler(sampler)
	}
	if !discardPenultimate[sampler] {
		return Sigmas(scheduler, s, steps)
	}
	sig, err := Sigmas(scheduler, s, steps+1)
	if err != nil {
		return nil, err
	}
	if len(sig) < 2 {
		return sig, nil
	}
	out := append(sig[:len(sig)-2:len(sig)-2], sig[len(sig)-1])
	return out, nil
}

// SamplerSigmasDenoise is SamplerSigmas for partial denoising (img2img),
// as ComfyUI's KSampler.set_steps: for denoise in (0, 0.9999] it computes
// int(steps/denoise) steps and keeps the last steps+1 sigmas; denoise above
// 0.9999 is a full run and denoise <= 0 returns no sigmas.
func SamplerSigmasDenoise(sampler, scheduler string, s Schedule, steps int, denoise float64) ([]float32, error) {
	switch {
	case denoise != denoise:
		return nil, fmt.Errorf("denoise is NaN")
	case denoise > 0.9999:
		return SamplerSigmas(sampler, scheduler, s, steps)
	case denoise <= 0:
		return []float32{}, nil
	}
	total := float64(steps) / denoise
	if total > maxSteps {
		return nil, fmt.Errorf("denoise %g with %d steps needs %.0f schedule steps, too many", denoise, steps, total)
	}
	sig, err := SamplerSigmas(sampler, scheduler, s, int(total))
	if err != nil {
		return nil, err
	}
	if len(sig) > steps+1 {
		sig = sig[len(sig)-(steps+1):]
	}
	return sig, nil
}

func unknownSampler(name string) error {
	return fmt.Errorf("unknown sampler %q (valid: %s)", name, strings.Join(Samplers(), ", "))
}

// newRun validates the arguments and prepares a run; it returns a nil run
// and the copied input when there is nothing to do.
func newRun(ctx context.Context, sampler string, model Denoiser, x []float32, sigmas []float32, noise NoiseSource, cb Callback) (*run, []float32, error) {
	if _, ok := samplers[sampler]; !ok {
		return nil, nil, unknownSampler(sampler)
	}
	if model == nil {
		return nil, nil, fmt.Errorf("sample %s: nil denoiser", sampler)
	}
	for i, s := range sigmas {
		if !(s >= 0) || s > 1e30 {
			return nil, nil, fmt.Errorf("sample %s: sigma %d is %v, want finite and >= 0", sampler, i, s)
		}
	}
	out := slices.Clone(x)
	if len(sigmas) <= 1 {
		return nil, out, nil
	}
	if needsNoise[sampler] && noise == nil {
		return nil, nil, fmt.Errorf("sample %s: the sampler is stochastic and needs a noise source", sampler)
	}
	r := &run{ctx: ctx, name: sampler, model: model, sigmas: sigmas, noise: noise, cb: cb, brownian: newBrownianSampler}
	return r, out, nil
}

// Sample runs the named sampler (a ComfyUI name, see Samplers) from the
// latent x along sigmas and returns the final latent. x must already hold
// the noisy starting point (see InitialNoiseScale); it is not modified.
// noise may be nil for deterministic samplers; the ancestral, SDE, ddpm and
// lcm samplers return an error without it. cb may be nil.
//
// The ancestral and SDE samplers use eta = 1 and s_noise = 1, ComfyUI's
// defaults. The model is treated as an epsilon/v-prediction (variance
// exploding in sigma) model, as SD1, SD2 and SDXL are; use SampleWith for
// flow-matching models.
func Sample(ctx context.Context, sampler string, model Denoiser, x []float32, sigmas []float32, noise NoiseSource, cb Callback) ([]float32, error) {
	r, out, err := newRun(ctx, sampler, model, x, sigmas, noise, cb)
	if err != nil || r == nil {
		return out, err
	}
	return r.exec(out)
}

// exec runs the sampler on x (which it may overwrite), with the ancestral
// split of the model family r.flow names.
func (r *run) exec(x []float32) ([]float32, error) {
	r.anc = ancestralFor(r.flow)
	res, err := samplers[r.name](r, x)
	if err != nil {
		return nil, fmt.Errorf("sample %s: %w", r.name, err)
	}
	return res, nil
}

// run carries the state shared by one sampling call.
type run struct {
	ctx    context.Context
	name   string
	model  Denoiser
	sigmas []float32
	noise  NoiseSource
	cb     Callback
	// brownian builds the SDE samplers' noise sampler (replaced in tests).
	brownian func(r *run, n int) (brownianSampler, error)
	// flow is set for rectified-flow models (see Options).
	flow *Flow
	// anc is the model family's ancestral split, set by exec from flow.
	anc ancestral
}

// steps returns the number of sampler steps, len(sigmas)-1.
func (r *run) steps() int { return len(r.sigmas) - 1 }

// denoise evaluates the model, checking the context first and the output
// length after.
func (r *run) denoise(x []float32, sigma float32) ([]float32, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	d, err := r.model(r.ctx, x, sigma)
	if err != nil {
		return nil, fmt.Errorf("denoise at sigma %g: %w", sigma, err)
	}
	if len(d) != len(x) {
		return nil, fmt.Errorf("denoise at sigma %g: got %d values, want %d", sigma, len(d), len(x))
	}
	return d, nil
}

// randn draws n standard-normal values from the noise source.
func (r *run) randn(n int) ([]float32, error) {
	if r.noise == nil {
		return nil, fmt.Errorf("sampler %s needs a noise source", r.name)
	}
	v := r.noise(n)
	if len(v) != n {
		return nil, fmt.Errorf("noise source returned %d values, want %d", len(v), n)
	}
	return v, nil
}

// report calls the callback, if any.
func (r *run) report(i int, x, denoised []float32) {
	if r.cb != nil {
		r.cb(StepInfo{Step: i, Total: r.steps(), Sigma: r.sigmas[i], X: x, Denoised: denoised})
	}
}
