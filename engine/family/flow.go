package family

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// FlowMatching is the model sampling of rectified-flow families (SD3,
// Flux, Z-Image, Qwen-Image): one shifted flow schedule as ComfyUI builds
// it (a table the schedulers stride) and, when Diffusers is set, the
// sigmas diffusers' pipelines sample with, which the "simple" scheduler
// then returns under the diffusers conventions.
type FlowMatching struct {
	// F is the shifted flow schedule (sampling.NewFlowSD3, NewFlowFlux).
	F *sampling.Flow
	// Diffusers returns diffusers' sigmas for a number of steps (without
	// the final 0): PipelineSigmas for pipelines that pass their own
	// (Flux), SchedulerSigmas for those that leave them to
	// FlowMatchEulerDiscreteScheduler (SD3); nil uses F's table under every
	// convention.
	Diffusers func(steps int) []float32
}

// Schedule returns the flow schedule; under the diffusers conventions with
// Diffusers set its "simple" sigmas are diffusers' own.
func (f FlowMatching) Schedule(c Convention) sampling.Schedule {
	if c != ConventionComfy && f.Diffusers != nil {
		return diffusersFlowSchedule{flowSchedule{f.F}, f.Diffusers}
	}
	return flowSchedule{f.F}
}

// Timestep is the flow's timestep (sigma·multiplier).
func (f FlowMatching) Timestep(_ Convention, sigma float32) float32 { return f.F.Timestep(sigma) }

// NoiseScale is 1: flow models start from sigma·noise + (1−sigma)·latent.
func (f FlowMatching) NoiseScale(Convention, float32, bool) float32 { return 1 }

// Flow returns the flow schedule.
func (f FlowMatching) Flow() *sampling.Flow { return f.F }

// flowSchedule presents a Flow as a sampling.Schedule for the schedulers.
type flowSchedule struct{ f *sampling.Flow }

func (s flowSchedule) SigmaMin() float32          { return s.f.SigmaMin() }
func (s flowSchedule) SigmaMax() float32          { return s.f.SigmaMax() }
func (s flowSchedule) Table() []float32           { return s.f.Table() }
func (s flowSchedule) Timestep(x float32) float32 { return s.f.Timestep(x) }
func (s flowSchedule) Sigma(t float32) float32    { return s.f.Sigma(t) }

// diffusersFlowSchedule is a flow schedule whose "simple" sigmas are a
// diffusers pipeline's.
type diffusersFlowSchedule struct {
	flowSchedule
	sigmas func(steps int) []float32
}

// SimpleSigmas implements sampling.SimpleSigmaser.
func (s diffusersFlowSchedule) SimpleSigmas(steps int) []float32 { return s.sigmas(steps) }

// linspace is numpy.linspace(start, end, n): start + i·step in float64,
// the last value exactly end.
func linspace(start, end float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		switch {
		case i == n-1 && n > 1:
			out[i] = end
		case n > 1:
			out[i] = start + float64(i)*((end-start)/float64(n-1))
		default:
			out[i] = start
		}
	}
	return out
}

// PipelineSigmas are the sigmas FluxPipeline passes to its scheduler:
// np.linspace(1, 1/steps, steps) cast to float32, then shifted (in the
// scheduler's float32 arithmetic).
func PipelineSigmas(shift func(float32) float32) func(steps int) []float32 {
	return func(steps int) []float32 {
		t := linspace(1, 1/float64(steps), steps)
		out := make([]float32, steps)
		for i := range out {
			out[i] = shift(float32(t[i]))
		}
		return out
	}
}

// SchedulerSigmas are FlowMatchEulerDiscreteScheduler's own sigmas for a
// fixed shift s (what StableDiffusion3Pipeline samples with): timesteps
// np.linspace(1000·σ_max, 1000·σ_min, steps) in float64 over the
// scheduler's training sigmas (σ_max = 1, σ_min the float32 shifted 1/1000,
// so the shift applies to it twice), divided by 1000, shifted in float64
// and cast to float32.
func SchedulerSigmas(shift float64) func(steps int) []float32 {
	s := float32(shift)
	t := float32(1) / 1000
	min := float64(s * t / (1 + (s-1)*t))
	return func(steps int) []float32 {
		ts := linspace(1000, 1000*min, steps)
		out := make([]float32, steps)
		for i, v := range ts {
			x := v / 1000
			out[i] = float32(shift * x / (1 + (shift-1)*x))
		}
		return out
	}
}

// FluxShiftParams are the resolution-dependent shift of Flux-dev:
// μ = Base + (Max − Base)·(tokens − BaseTokens)/(MaxTokens − BaseTokens)
// for an image of tokens 2×2 latent patches (ComfyUI's ModelSamplingFlux
// node, diffusers' use_dynamic_shifting with calculate_shift).
type FluxShiftParams struct {
	Base, Max             float64
	BaseTokens, MaxTokens float64
}

// DefaultFluxShift is Flux-dev's: 0.5 at 256 tokens to 1.15 at 4096
// (1024²).
var DefaultFluxShift = FluxShiftParams{Base: 0.5, Max: 1.15, BaseTokens: 256, MaxTokens: 4096}

// Mu is the shift for an image of tokens patches.
func (p FluxShiftParams) Mu(tokens float64) float64 {
	m := (p.Max - p.Base) / (p.MaxTokens - p.BaseTokens)
	b := p.Base - m*p.BaseTokens
	return tokens*m + b
}

// FluxSampling is the model sampling of Flux.1 before the image size is
// known: a resolution-dependent shift (dev) or a fixed one (schnell).
// The pipeline calls ForImage (the SizedSampling interface) before it
// samples; used as is, it is the 1024² schedule.
type FluxSampling struct {
	// Dynamic selects the resolution-dependent shift (Shift's parameters);
	// otherwise the fixed shift DiffusersShift applies in SD3's form
	// s·t/(1+(s−1)·t): ComfyUI's FLOW model sampling
	// (ModelSamplingDiscreteFlow, schnell's shift 1 and multiplier 1),
	// diffusers' non-dynamic FlowMatchEulerDiscreteScheduler.
	Dynamic        bool
	Shift          FluxShiftParams
	DiffusersShift float64
	// ShiftTerminal, when not 0, stretches diffusers' shifted sigmas so
	// that the last one is ShiftTerminal (the scheduler's shift_terminal:
	// Qwen-Image's 0.02); ComfyUI has no such step.
	ShiftTerminal float64
	// ComfyShift, when not 0, is ComfyUI's side for a model it samples
	// with a fixed linear shift (ModelSamplingAuraFlow, multiplier 1:
	// Qwen-Image) whatever the image size, instead of Flux's rule; a
	// request's shift replaces it there (and is μ under diffusers').
	ComfyShift float64
	def        FlowMatching
}

// SizedSampling is implemented by model samplings whose schedule depends on
// the image size or on a request's shift (Flux): the pipeline samples with
// ForImage's result.
type SizedSampling interface {
	// ForImage returns the model sampling for an image of width × height
	// pixels; shift > 0 replaces the family's rule (Flux: μ).
	ForImage(width, height int, shift float64) (ModelSampling, error)
}

// NewQwenImageSampling returns Qwen-Image's model sampling: ComfyUI's
// fixed shift comfyShift (multiplier 1) and diffusers' resolution-dependent
// exponential shift (μ from 0.5 at 256 to 0.9 at 8192 tokens) stretched to
// a last sigma of 0.02, as Qwen-Image's scheduler_config.json says.
func NewQwenImageSampling(comfyShift float64) (*FluxSampling, error) {
	s := &FluxSampling{Dynamic: true, Shift: FluxShiftParams{Base: 0.5, Max: 0.9, BaseTokens: 256, MaxTokens: 8192},
		DiffusersShift: 1, ShiftTerminal: 0.02, ComfyShift: comfyShift}
	def, err := s.ForImage(1024, 1024, 0)
	if err != nil {
		return nil, err
	}
	s.def = def.(FlowMatching)
	return s, nil
}

// NewFluxSampling returns Flux's model sampling: dev's
// resolution-dependent shift, or schnell's fixed settings (shift 1: σ = t,
// under both peers' conventions).
func NewFluxSampling(dynamic bool) (*FluxSampling, error) {
	s := &FluxSampling{Dynamic: dynamic, Shift: DefaultFluxShift, DiffusersShift: 1}
	def, err := s.ForImage(1024, 1024, 0)
	if err != nil {
		return nil, err
	}
	s.def = def.(FlowMatching)
	return s, nil
}

// ReadDiffusersScheduler takes the shift settings of a diffusers folder's
// scheduler/scheduler_config.json (FlowMatchEulerDiscreteScheduler: shift,
// use_dynamic_shifting, base_shift, max_shift, base_image_seq_len,
// max_image_seq_len) where present.
func (s *FluxSampling) ReadDiffusersScheduler(config []byte) error {
	var c struct {
		Shift         *float64 `json:"shift"`
		Dynamic       *bool    `json:"use_dynamic_shifting"`
		BaseShift     *float64 `json:"base_shift"`
		MaxShift      *float64 `json:"max_shift"`
		BaseSeqLen    *float64 `json:"base_image_seq_len"`
		MaxSeqLen     *float64 `json:"max_image_seq_len"`
		ShiftTerminal *float64 `json:"shift_terminal"`
	}
	if err := json.Unmarshal(config, &c); err != nil {
		return fmt.Errorf("scheduler config: %w", err)
	}
	set := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	if c.Dynamic != nil {
		s.Dynamic = *c.Dynamic
	}
	set(&s.DiffusersShift, c.Shift)
	set(&s.Shift.Base, c.BaseShift)
	set(&s.Shift.Max, c.MaxShift)
	set(&s.Shift.BaseTokens, c.BaseSeqLen)
	set(&s.Shift.MaxTokens, c.MaxSeqLen)
	if c.ShiftTerminal != nil {
		if *c.ShiftTerminal < 0 || *c.ShiftTerminal >= 1 {
			return fmt.Errorf("scheduler config: shift_terminal %g, want 0 (none) or in (0, 1)", *c.ShiftTerminal)
		}
		s.ShiftTerminal = *c.ShiftTerminal
	}
	if s.Shift.MaxTokens == s.Shift.BaseTokens {
		return fmt.Errorf("scheduler config: base_image_seq_len and max_image_seq_len are both %g", s.Shift.MaxTokens)
	}
	def, err := s.ForImage(1024, 1024, 0)
	if err != nil {
		return err
	}
	s.def = def.(FlowMatching)
	return nil
}

// ForImage implements SizedSampling. With the resolution-dependent shift
// (dev), ComfyUI's μ is that of width·height/256 tokens (its
// ModelSamplingFlux node) and diffusers' that of ⌊h/16⌋·⌊w/16⌋ tokens (its
// pipeline floors the size), in the exponential form; otherwise (schnell)
// both use the fixed shift of the FLOW form, ComfyUI over its 1000-entry
// table with multiplier 1. A positive shift is μ for both, as ComfyUI's
// ModelSamplingFlux node sets it.
func (s *FluxSampling) ForImage(width, height int, shift float64) (ModelSampling, error) {
	if width <= 0 || height <= 0 {
		return nil, fmt.Errorf("flux sampling: image %d×%d", width, height)
	}
	var f *sampling.Flow
	var err error
	var diffusers func(float32) float32
	switch {
	case s.ComfyShift > 0:
		comfy := s.ComfyShift
		if shift > 0 {
			comfy = shift
		}
		if f, err = sampling.NewFlowSD3(comfy, 1); err != nil {
			return nil, err
		}
		switch {
		case shift > 0:
			diffusers = expShift(shift)
		case s.Dynamic:
			diffusers = expShift(s.Shift.Mu(float64((height / 16) * (width / 16))))
		default:
			diffusers = linearShift(s.DiffusersShift)
		}
	case shift > 0:
		f, err = sampling.NewFlowFlux(shift)
		diffusers = expShift(shift)
	case s.Dynamic:
		f, err = sampling.NewFlowFlux(s.Shift.Mu(float64(width) * float64(height) / 256))
		diffusers = expShift(s.Shift.Mu(float64((height / 16) * (width / 16))))
	default:
		f, err = sampling.NewFlowSD3(s.DiffusersShift, 1)
		diffusers = linearShift(s.DiffusersShift)
	}
	if err != nil {
		return nil, err
	}
	sig := PipelineSigmas(diffusers)
	if s.ShiftTerminal != 0 {
		sig = StretchToTerminal(sig, s.ShiftTerminal)
	}
	return FlowMatching{F: f, Diffusers: sig}, nil
}

// StretchToTerminal is FlowMatchEulerDiscreteScheduler's
// stretch_shift_to_terminal over sigmas: 1 − (1 − σ)/k with k = (1 −
// σ_last)/(1 − terminal), in numpy's float32 arithmetic, so that the last
// sigma becomes terminal.
func StretchToTerminal(sigmas func(steps int) []float32, terminal float64) func(steps int) []float32 {
	return func(steps int) []float32 {
		out := sigmas(steps)
		if len(out) == 0 {
			return out
		}
		k := (1 - out[len(out)-1]) / float32(1-terminal)
		for i, v := range out {
			out[i] = 1 - (1-v)/k
		}
		return out
	}
}

// expShift is diffusers' time_shift(mu, 1, t) = e^μ/(e^μ + (1/t − 1)) in
// numpy float32 arithmetic.
func expShift(mu float64) func(float32) float32 {
	e := float32(math.Exp(mu))
	return func(t float32) float32 {
		return e / (e + (1/t - 1))
	}
}

// linearShift is diffusers' fixed shift s·t/(1 + (s−1)·t) in float32.
func linearShift(shift float64) func(float32) float32 {
	s := float32(shift)
	return func(t float32) float32 {
		return s * t / (1 + (s-1)*t)
	}
}

// Schedule is the 1024² schedule.
func (s *FluxSampling) Schedule(c Convention) sampling.Schedule { return s.def.Schedule(c) }

// Timestep is sigma (the transformer scales it by 1000 itself).
func (s *FluxSampling) Timestep(c Convention, sigma float32) float32 {
	return s.def.Timestep(c, sigma)
}

// NoiseScale is 1.
func (s *FluxSampling) NoiseScale(Convention, float32, bool) float32 { return 1 }

// Flow returns the 1024² flow schedule.
func (s *FluxSampling) Flow() *sampling.Flow { return s.def.F }

// SD3Shift is SD3's and SD3.5's flow shift (ComfyUI's ModelSamplingSD3
// default, the shift of their scheduler_config.json).
const SD3Shift = 3.0

// ShiftedFlow is the model sampling of flow models with one fixed shift
// s·t/(1+(s−1)·t): ComfyUI's ModelSamplingDiscreteFlow (the model's
// timestep σ·Multiplier) and diffusers' non-dynamic
// FlowMatchEulerDiscreteScheduler, fed its own sigmas (SD3,
// SchedulerSigmas) or the pipeline's linspace (Z-Image, PipelineSigmas).
// A request's shift replaces the model's (ComfyUI's ModelSamplingSD3 and
// ModelSamplingAuraFlow nodes), through ForImage.
type ShiftedFlow struct {
	Shift float64
	// Multiplier scales σ into the model's timestep (SD3 1000, Z-Image 1).
	Multiplier float64
	// Pipeline selects the diffusers pipeline's own sigmas
	// (np.linspace(1, 1/steps, steps), shifted) over the scheduler's.
	Pipeline bool
	def      FlowMatching
}

// NewSD3Sampling returns SD3's model sampling with the given shift:
// multiplier 1000, the scheduler's own sigmas.
func NewSD3Sampling(shift float64) (*ShiftedFlow, error) {
	return NewShiftedFlow(shift, 1000, false)
}

// ZImageShift is Z-Image's flow shift (ComfyUI's ZImage model sampling,
// Z-Image-Turbo's scheduler_config.json).
const ZImageShift = 3.0

// NewShiftedFlow returns a fixed-shift flow sampling (see ShiftedFlow).
func NewShiftedFlow(shift, multiplier float64, pipeline bool) (*ShiftedFlow, error) {
	s := &ShiftedFlow{Shift: shift, Multiplier: multiplier, Pipeline: pipeline}
	def, err := s.ForImage(1024, 1024, 0)
	if err != nil {
		return nil, err
	}
	s.def = def.(FlowMatching)
	return s, nil
}

// ReadDiffusersScheduler takes the shift of a diffusers folder's
// scheduler/scheduler_config.json; a resolution-dependent shift is not
// this model's scheduler and is refused.
func (s *ShiftedFlow) ReadDiffusersScheduler(config []byte) error {
	var c struct {
		Shift         *float64 `json:"shift"`
		Dynamic       *bool    `json:"use_dynamic_shifting"`
		Steps         *int     `json:"num_train_timesteps"`
		ShiftTerminal *float64 `json:"shift_terminal"`
	}
	if err := json.Unmarshal(config, &c); err != nil {
		return fmt.Errorf("scheduler config: %w", err)
	}
	if c.Dynamic != nil && *c.Dynamic {
		return errors.New("scheduler config: use_dynamic_shifting is not this model's scheduler (a fixed shift)")
	}
	if c.Steps != nil && *c.Steps != 1000 {
		return fmt.Errorf("scheduler config: num_train_timesteps %d, want 1000", *c.Steps)
	}
	if c.ShiftTerminal != nil && *c.ShiftTerminal != 0 {
		return fmt.Errorf("scheduler config: shift_terminal %g is not supported", *c.ShiftTerminal)
	}
	if c.Shift != nil {
		s.Shift = *c.Shift
	}
	def, err := s.ForImage(1024, 1024, 0)
	if err != nil {
		return err
	}
	s.def = def.(FlowMatching)
	return nil
}

// ForImage implements SizedSampling: the schedule does not depend on the
// image; shift > 0 replaces the model's.
func (s *ShiftedFlow) ForImage(width, height int, shift float64) (ModelSampling, error) {
	if width <= 0 || height <= 0 {
		return nil, fmt.Errorf("flow sampling: image %d×%d", width, height)
	}
	if shift <= 0 {
		shift = s.Shift
	}
	f, err := sampling.NewFlowSD3(shift, s.Multiplier)
	if err != nil {
		return nil, err
	}
	sig := SchedulerSigmas(shift)
	if s.Pipeline {
		sig = PipelineSigmas(linearShift(shift))
	}
	return FlowMatching{F: f, Diffusers: sig}, nil
}

// Schedule is the model's schedule.
func (s *ShiftedFlow) Schedule(c Convention) sampling.Schedule { return s.def.Schedule(c) }

// Timestep is σ·Multiplier.
func (s *ShiftedFlow) Timestep(c Convention, sigma float32) float32 { return s.def.Timestep(c, sigma) }

// NoiseScale is 1.
func (s *ShiftedFlow) NoiseScale(Convention, float32, bool) float32 { return 1 }

// Flow returns the flow schedule.
func (s *ShiftedFlow) Flow() *sampling.Flow { return s.def.F }
