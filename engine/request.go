package engine

import (
	"fmt"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// Request is one text-to-image job: every parameter of `darkroom gen`.
type Request struct {
	// Model is a checkpoint path (single .safetensors file or diffusers
	// folder) or a model name found in the engine's model directories.
	// Empty selects the default model.
	Model    string `json:"model"`
	Prompt   string `json:"prompt"`
	Negative string `json:"negative,omitempty"`
	// Seed seeds the initial noise and the sampler's noise; image i of a
	// batch is drawn as part of one [Batch,4,h,w] noise tensor, as ComfyUI does.
	Seed      uint64  `json:"seed"`
	Steps     int     `json:"steps"`
	CFG       float64 `json:"cfg"`
	Sampler   string  `json:"sampler"`
	Scheduler string  `json:"scheduler"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	Batch     int     `json:"batch"`
	// ClipSkip selects the text encoder layer: 1 is the last (default), 2
	// the penultimate (A1111 "Clip skip: 2").
	ClipSkip int `json:"clip_skip,omitempty"`
	// Convention is whose conventions the run reproduces: "comfyui" (or
	// empty) or "diffusers".
	Convention string `json:"convention,omitempty"`
	// Denoise is the img2img strength; 0 means 1 (a full run).
	Denoise float64 `json:"denoise,omitempty"`
}

// DefaultRequest returns a request with the defaults of `darkroom gen`.
func DefaultRequest() Request {
	return Request{Steps: 20, CFG: 7, Sampler: "euler", Scheduler: "normal", Width: 512, Height: 512, Batch: 1, ClipSkip: 1}
}

// Limits on request sizes.
const (
	MinSize  = 8
	MaxSize  = 4096
	MaxBatch = 64
	MaxSteps = 1000
	MaxCFG   = 100
)

// Validate checks a request and returns a one-line error naming the
// offending flag.
func (r *Request) Validate() error {
	switch {
	case r.Width%8 != 0 || r.Width < MinSize || r.Width > MaxSize:
		return fmt.Errorf("--width %d: must be a multiple of 8 between %d and %d", r.Width, MinSize, MaxSize)
	case r.Height%8 != 0 || r.Height < MinSize || r.Height > MaxSize:
		return fmt.Errorf("--height %d: must be a multiple of 8 between %d and %d", r.Height, MinSize, MaxSize)
	case r.Steps < 1 || r.Steps > MaxSteps:
		return fmt.Errorf("--steps %d: must be between 1 and %d", r.Steps, MaxSteps)
	case !(r.CFG >= 0 && r.CFG <= MaxCFG):
		return fmt.Errorf("--cfg %v: must be between 0 and %d", r.CFG, MaxCFG)
	case r.Batch < 1 || r.Batch > MaxBatch:
		return fmt.Errorf("--batch %d: must be between 1 and %d", r.Batch, MaxBatch)
	case r.ClipSkip < 0:
		return fmt.Errorf("--clip-skip %d: must be ≥ 1 (0 means 1)", r.ClipSkip)
	}
	if !slices.Contains(sampling.Samplers(), r.Sampler) {
		return fmt.Errorf("--sampler %q: unknown; valid: %s", r.Sampler, strings.Join(sampling.Samplers(), ", "))
	}
	if !slices.Contains(sampling.Schedulers(), r.Scheduler) {
		return fmt.Errorf("--scheduler %q: unknown; valid: %s", r.Scheduler, strings.Join(sampling.Schedulers(), ", "))
	}
	return nil
}
