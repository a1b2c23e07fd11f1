package sampling

import (
	"context"
	"fmt"
	"math"
	"strings"
)

// Prediction is what a diffusion network predicts (its parameterization).
type Prediction int

const (
	// Eps: the network predicts the added noise (SD1, SD2-base, SDXL).
	Eps Prediction = iota
	// V: the network predicts v = alpha*eps - sigma_vp*x0 (SD2 768-v).
	V
	// Velocity: the network of a rectified-flow model predicts the
	// velocity v = noise - x0 of x = (1-sigma)*x0 + sigma*noise (SD3,
	// Flux: ComfyUI's CONST model sampling). It sees x unscaled.
	Velocity
)

// String returns "eps", "v" or "flow".
func (p Prediction) String() string {
	switch p {
	case Eps:
		return "eps"
	case V:
		return "v"
	case Velocity:
		return "flow"
	}
	return fmt.Sprintf("Prediction(%d)", int(p))
}

func (p Prediction) valid() bool { return p == Eps || p == V || p == Velocity }

// ParsePrediction maps the names checkpoints, configs and users give a
// discrete model's parameterization ("eps", "epsilon", "v",
// "v_prediction", "v-prediction") to Eps or V.
func ParsePrediction(s string) (Prediction, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "eps", "epsilon", "ε":
		return Eps, nil
	case "v", "v_prediction", "v-prediction", "vpred", "v_pred":
		return V, nil
	}
	return 0, fmt.Errorf("unknown prediction type %q (want eps or v)", s)
}

// ModelFunc is a raw network call: its output (noise, v or velocity) for
// the scaled input xIn at model timestep t. It must not modify xIn.
type ModelFunc func(ctx context.Context, xIn []float32, t float32) ([]float32, error)

// TimestepFunc maps sigma to the timestep the network is fed: a Schedule's
// Timestep (continuous, as diffusers and k-diffusion), or NearestTimestep
// (integer, as ComfyUI's ModelSamplingDiscrete), or Flow.Timestep.
type TimestepFunc func(sigma float32) float32

// NewDenoiser wraps a network as a Denoiser the way ComfyUI's EPS,
// V_PREDICTION and CONST model sampling do, in the same float32 order:
// for Eps and V xIn = x / sqrt(sigma^2+1), for Velocity xIn = x; then for
// Eps and Velocity denoised = x - out*sigma and for V
// denoised = x/(sigma^2+1) - out*sigma/sqrt(sigma^2+1).
// It runs no classifier-free guidance: Guided wraps a network called on
// the unconditional and conditional halves of a batch.
func NewDenoiser(m ModelFunc, pred Prediction, timestep TimestepFunc) (Denoiser, error) {
	if m == nil || timestep == nil {
		return nil, fmt.Errorf("new denoiser: nil model or timestep function")
	}
	if !pred.valid() {
		return nil, fmt.Errorf("new denoiser: unknown prediction %v", pred)
	}
	return func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
		xin := make([]float32, len(x))
		pred.scaleInput(xin, x, sigma, false)
		out, err := m(ctx, xin, timestep(sigma))
		if err != nil {
			return nil, err
		}
		if len(out) != len(x) {
			return nil, fmt.Errorf("model returned %d values for %d inputs", len(out), len(x))
		}
		den := make([]float32, len(x))
		pred.toDenoised(den, x, out, sigma)
		return den, nil
	}, nil
}

// scaleInput writes the network input for x at sigma into dst (ComfyUI's
// calculate_input): x / sqrt(sigma^2+1) in float32 for Eps and V, or with
// reciprocal x*c_in, c_in = 1/sqrt(sigma^2+1) evaluated in float64 and
// rounded once; x itself for Velocity.
func (p Prediction) scaleInput(dst, x []float32, sigma float32, reciprocal bool) {
	switch {
	case p == Velocity:
		copy(dst, x)
	case reciprocal:
		s := float64(sigma)
		cIn := float32(1 / math.Sqrt(float64(s*s)+1))
		for i, v := range x {
			dst[i] = v * cIn
		}
	default:
		root := sqrt32(sq32(sigma) + 1)
		for i, v := range x {
			dst[i] = v / root
		}
	}
}

// toDenoised writes the x0 estimate for the network output out at
// (x, sigma) into dst (ComfyUI's calculate_denoised): x - out*sigma for Eps
// and Velocity, x/(sigma^2+1) - out*sigma/sqrt(sigma^2+1) for V.
func (p Prediction) toDenoised(dst, x, out []float32, sigma float32) {
	if p != V {
		for i := range x {
			dst[i] = x[i] - float32(out[i]*sigma)
		}
		return
	}
	s2 := sq32(sigma) + 1
	root := sqrt32(s2)
	for i := range x {
		dst[i] = x[i]/s2 - float32(out[i]*sigma)/root
	}
}
