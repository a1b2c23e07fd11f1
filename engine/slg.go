package engine

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// Skip-Layer Guidance (SLG), as ComfyUI's SkipLayerGuidanceSD3 node and
// diffusers' StableDiffusion3Pipeline(skip_guidance_layers=…) run it: while
// it is active, the network runs once more on the prompt's rows with some
// blocks left out, and the guided estimate moves away from that output by
// slg_scale·(cond − skipped). ComfyUI applies it where the step's sigma
// lies between the sigmas of slg_start and slg_end (percent_to_sigma);
// diffusers where the step index i has steps·start < i < steps·end.

// Defaults of ComfyUI's SkipLayerGuidanceSD3 node (layers "7, 8, 9", the
// ones recommended for SD3.5 Medium).
const (
	DefaultSLGScale = 3.0
	DefaultSLGStart = 0.01
	DefaultSLGEnd   = 0.15
)

var digits = regexp.MustCompile(`\d+`)

// ParseSLGLayers reads block numbers the way ComfyUI's node does: every
// run of digits ("7, 8, 9", "7 8 9", "[7,8,9]").
func ParseSLGLayers(s string) ([]int, error) {
	var out []int
	for _, d := range digits.FindAllString(s, -1) {
		n, err := strconv.Atoi(d)
		if err != nil || n > 1<<16 {
			return nil, fmt.Errorf("block %q: not a block number", d)
		}
		out = append(out, n)
	}
	if s != "" && len(out) == 0 {
		return nil, fmt.Errorf("%q names no block (want numbers, e.g. \"7, 8, 9\")", s)
	}
	return out, nil
}

// slgPost builds the guidance hook of a run with SLG, or nil without.
func (m *Model) slgPost(ctx context.Context, p SampleParams, ms family.ModelSampling, pred sampling.Prediction, in family.Inputs, sigmas []float32) (func(context.Context, []float32, float32, []float32, []float32) error, error) {
	layers, err := ParseSLGLayers(p.SLGLayers)
	if err != nil || len(layers) == 0 {
		if err != nil {
			return nil, &FieldError{Field: "slg_layers", Value: p.SLGLayers, Msg: err.Error()}
		}
		return nil, nil
	}
	if p.SLGStart > p.SLGEnd {
		return nil, &FieldError{Field: "slg_end", Value: p.SLGEnd, Msg: fmt.Sprintf("ends before slg_start %g", p.SLGStart)}
	}
	skipper, ok := m.c.Denoiser.(family.LayerSkipper)
	if !ok {
		return nil, &FieldError{Field: "slg_layers", Value: p.SLGLayers, Msg: "skip-layer guidance needs a transformer whose blocks can be skipped (SD3, SD3.5)"}
	}
	for _, l := range layers {
		if l >= skipper.Blocks() {
			return nil, &FieldError{Field: "slg_layers", Value: p.SLGLayers, Msg: fmt.Sprintf("block %d: the model has blocks 0–%d", l, skipper.Blocks()-1)}
		}
	}
	if p.Convention != ConventionComfy && p.CFG == 1 {
		return nil, nil // diffusers runs SLG only with classifier-free guidance
	}
	rows := make([]*family.Cond, p.Shape[0])
	for i := range rows {
		rows[i] = p.Cond.c
	}
	in.SkipLayers, in.NegativeRows = layers, 0
	step, err := m.c.Denoiser.Bind(ctx, rows, in)
	if err != nil {
		return nil, fmt.Errorf("sample: skip-layer guidance: %w", err)
	}
	net := batchStep(m.dev, step, p.Shape)
	var active func(float32) bool
	if p.Convention == ConventionComfy {
		hi, lo := float32(1), float32(0)
		if f := ms.Flow(); f != nil {
			hi, lo = f.PercentToSigma(p.SLGStart), f.PercentToSigma(p.SLGEnd)
		}
		active = func(s float32) bool { return s >= lo && s <= hi }
	} else {
		n := float64(len(sigmas) - 1)
		active = func(s float32) bool {
			i := 0
			for i+1 < len(sigmas)-1 && sigmas[i+1] >= s {
				i++
			}
			return float64(i) > n*p.SLGStart && float64(i) < n*p.SLGEnd
		}
	}
	timestep := func(sigma float32) float32 { return ms.Timestep(p.Convention, sigma) }
	return sampling.SkipLayerGuidance(net, pred, timestep, float32(p.SLGScale), active, sampling.EngineGuidance(pred)), nil
}
