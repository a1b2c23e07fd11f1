package nextdit

import (
	"context"
	"math"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// TestPositions: image patches at (Lt+1, h, w) with Lt the padded text
// length, their padding at the origin, then text token k at (1+k, 0, 0)
// including the text's padding, as diffusers' patchify_and_embed builds
// them.
func TestPositions(t *testing.T) {
	pos := Positions(2, 3, 5) // 6 patches → 32, 5 text tokens → 32
	if len(pos) != 64 {
		t.Fatalf("%d positions, want 64", len(pos))
	}
	if pos[0] != [3]int{33, 0, 0} || pos[4] != [3]int{33, 1, 1} || pos[5] != [3]int{33, 1, 2} {
		t.Errorf("image positions %v", pos[:6])
	}
	for _, p := range pos[6:32] {
		if p != [3]int{} {
			t.Fatalf("image padding at %v", p)
		}
	}
	if pos[32] != [3]int{1, 0, 0} || pos[63] != [3]int{32, 0, 0} {
		t.Errorf("text positions %v … %v", pos[32], pos[63])
	}
}

// TestForwardShapes runs a tiny random model whose sequences need padding
// (a 6×10 latent: 15 patches; 7 text tokens) with a batch of two, and
// checks the output's shape and finiteness, and that a row's output does
// not depend on the other row.
func TestForwardShapes(t *testing.T) {
	c := Config{InChannels: 4, Patch: 2, Width: 32, Heads: 2, HeadDim: 16, Layers: 2, Refiners: 1, FF: 40, CapDim: 8, AdaDim: 32,
		TimeMid: 16, AxesDim: []int{4, 6, 6}, Theta: DefaultTheta, TimeScale: DefaultTimeScale, Eps: DefaultEps, QKNorm: true}
	dev := cpu.New()
	m, err := Load(weights.NewRandomBuilder(dev, 7), dev, c)
	if err != nil {
		t.Fatal(err)
	}
	xs := make([]float32, 2*4*6*10)
	for i := range xs {
		xs[i] = float32(math.Sin(float64(i)))
	}
	ts := make([]float32, 2*7*8)
	for i := range ts {
		ts[i] = float32(math.Cos(float64(i) * 0.3))
	}
	ctx := context.Background()
	out, err := m.Forward(ctx, dev, dev.Upload(xs, 2, 4, 6, 10), dev.Upload(ts, 2, 7, 8), []float32{0.25, 0.75})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Shape.Equal([]int{2, 4, 6, 10}) {
		t.Fatalf("output %v", out.Shape)
	}
	both, _ := dev.Download(out)
	for _, v := range both {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite output")
		}
	}
	one, err := m.Forward(ctx, dev, dev.Upload(xs[240:], 1, 4, 6, 10), dev.Upload(ts[56:], 1, 7, 8), []float32{0.75})
	if err != nil {
		t.Fatal(err)
	}
	second, _ := dev.Download(one)
	for i, v := range second {
		if d := math.Abs(float64(v - both[240+i])); d > 1e-5*(1+math.Abs(float64(v))) {
			t.Fatalf("row 1 alone differs at %d: %g vs %g", i, v, both[240+i])
		}
	}
	if _, err := m.Forward(ctx, dev, dev.Upload(xs[:4*5*10], 1, 4, 5, 10), dev.Upload(ts[:56], 1, 7, 8), []float32{0.5}); err == nil {
		t.Error("an odd-sized latent was accepted")
	}
}
