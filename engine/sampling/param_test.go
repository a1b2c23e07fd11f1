package sampling

import (
	"context"
	"math"
	"testing"
)

// TestNewDenoiser builds x = x0 + sigma*eps and a network that returns the
// exact target for each parameterization (eps, or v = alpha*eps -
// sigma_vp*x0 with alpha = 1/sqrt(1+sigma^2), sigma_vp = sigma*alpha); the
// denoiser must then return x0.
func TestNewDenoiser(t *testing.T) {
	x0 := []float64{0.3, -1.2, 2.0}
	eps := []float64{1.1, 0.4, -0.8}
	const sigma = 3.5
	alpha := 1 / math.Sqrt(1+sigma*sigma)
	x := make([]float32, len(x0))
	for i := range x {
		x[i] = float32(x0[i] + sigma*eps[i])
	}
	for _, pred := range []Prediction{Eps, V} {
		t.Run(pred.String(), func(t *testing.T) {
			var gotT float32
			m := func(_ context.Context, xin []float32, ts float32) ([]float32, error) {
				gotT = ts
				out := make([]float32, len(xin))
				for i := range xin {
					if want := float64(x[i]) * alpha; math.Abs(float64(xin[i])-want) > 1e-6 {
						t.Errorf("xin[%d] = %g, want %g", i, xin[i], want)
					}
					if pred == Eps {
						out[i] = float32(eps[i])
					} else {
						out[i] = float32(alpha*eps[i] - sigma*alpha*x0[i])
					}
				}
				return out, nil
			}
			d, err := NewDenoiser(m, pred, DefaultDiscrete().Timestep)
			if err != nil {
				t.Fatal(err)
			}
			den, err := d(context.Background(), x, sigma)
			if err != nil {
				t.Fatal(err)
			}
			for i := range x0 {
				if math.Abs(float64(den[i])-x0[i]) > 2e-6*math.Max(1, math.Abs(x0[i]))*sigma {
					t.Errorf("denoised[%d] = %.7g, want %.7g", i, den[i], x0[i])
				}
			}
			if want := DefaultDiscrete().Timestep(sigma); gotT != want {
				t.Errorf("timestep %g, want %g", gotT, want)
			}
		})
	}
	if _, err := NewDenoiser(nil, Eps, DefaultDiscrete().Timestep); err == nil {
		t.Error("nil model: no error")
	}
	if _, err := NewDenoiser(func(context.Context, []float32, float32) ([]float32, error) { return nil, nil }, Prediction(7), DefaultDiscrete().Timestep); err == nil {
		t.Error("bad prediction: no error")
	}
}
