package sampling

import (
	"context"
	"math"
	"slices"
	"testing"
)

// TestPredictionVelocity: x = (1-sigma) x0 + sigma n and a network
// returning v = n - x0 exactly; the Velocity denoiser must return x0,
// rounded as ComfyUI's CONST x - v*sigma, and feed the network x unscaled
// at the flow timestep.
func TestPredictionVelocity(t *testing.T) {
	if Velocity.String() != "flow" || Eps.String() != "eps" || V.String() != "v" {
		t.Errorf("names %v %v %v", Eps, V, Velocity)
	}
	x0 := []float64{0.3, -1.2, 2.0}
	n := []float64{1.1, 0.4, -0.8}
	const sigma = 0.7
	x := make([]float32, len(x0))
	for i := range x {
		x[i] = float32((1-sigma)*x0[i] + sigma*n[i])
	}
	sd3, err := NewFlowSD3(3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var gotT float32
	m := func(_ context.Context, xin []float32, ts float32) ([]float32, error) {
		gotT = ts
		if !slices.Equal(xin, x) {
			t.Errorf("input %v, want x unscaled %v", xin, x)
		}
		out := make([]float32, len(xin))
		for i := range out {
			out[i] = float32(n[i] - x0[i])
		}
		return out, nil
	}
	d, err := NewDenoiser(m, Velocity, sd3.Timestep)
	if err != nil {
		t.Fatal(err)
	}
	den, err := d(context.Background(), x, sigma)
	if err != nil {
		t.Fatal(err)
	}
	for i := range x0 {
		if math.Abs(float64(den[i])-x0[i]) > 1e-6*math.Max(1, math.Abs(x0[i])) {
			t.Errorf("denoised[%d] = %.7g, want %.7g", i, den[i], x0[i])
		}
		if want := x[i] - float32(float32(n[i]-x0[i])*sigma); den[i] != want {
			t.Errorf("denoised[%d] = %.9g, want x - v*sigma = %.9g", i, den[i], want)
		}
	}
	if gotT != sd3.Timestep(sigma) {
		t.Errorf("timestep %g, want %g", gotT, sd3.Timestep(sigma))
	}
}
