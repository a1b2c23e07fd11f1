package sampling

import (
	"context"
	"fmt"
)

// Prediction is what a diffusion network predicts (its parameterization).
type Prediction int

const (
	// Eps: the network predicts the added noise (SD1, SD2-base, SDXL).
	Eps Prediction = iota
	// V: the network predicts v = alpha*eps - sigma_vp*x0 (SD2 768-v).
	V
)

// String returns "eps" or "v".
func (p Prediction) String() string {
	switch p {
	case Eps:
		return "eps"
	case V:
		return "v"
	}
	return fmt.Sprintf("Prediction(%d)", int(p))
}

// ModelFunc is a raw network call: its output (noise or v) for the scaled
// input xIn at model timestep t. It must not modify xIn.
type ModelFunc func(ctx context.Context, xIn []float32, t float32) ([]float32, error)

// TimestepFunc maps sigma to the timestep the network is fed: a Schedule's
// Timestep (continuous, as diffusers and k-diffusion), or NearestTimestep
// (integer, as ComfyUI's ModelSamplingDiscrete).
type TimestepFunc func(sigma float32) float32

// NewDenoiser wraps a network as a Denoiser the way ComfyUI's EPS and
// V_PREDICTION model sampling do, in the same float32 order:
// xIn = x / sqrt(sigma^2+1), then for Eps denoised = x - out*sigma and for
// V denoised = x/(sigma^2+1) - out*sigma/sqrt(sigma^2+1).
// Classifier-free guidance on the denoised outputs (uncond + (cond -
// uncond)*scale, as ComfyUI's cfg_function) is the caller's to add.
func NewDenoiser(m ModelFunc, pred Prediction, timestep TimestepFunc) (Denoiser, error) {
	if m == nil || timestep == nil {
		return nil, fmt.Errorf("new denoiser: nil model or timestep function")
	}
	if pred != Eps && pred != V {
		return nil, fmt.Errorf("new denoiser: unknown prediction %v", pred)
	}
	return func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
		s2 := sq32(sigma) + 1
		root := sqrt32(s2)
		xin := make([]float32, len(x))
		for i, v := range x {
			xin[i] = v / root
		}
		out, err := m(ctx, xin, timestep(sigma))
		if err != nil {
			return nil, err
		}
		if len(out) != len(x) {
			return nil, fmt.Errorf("model returned %d values for %d inputs", len(out), len(x))
		}
		den := make([]float32, len(x))
		for i := range x {
			if pred == Eps {
				den[i] = x[i] - float32(out[i]*sigma)
			} else {
				den[i] = x[i]/s2 - float32(out[i]*sigma)/root
			}
		}
		return den, nil
	}, nil
}
