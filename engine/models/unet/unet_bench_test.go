package unet_test

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// BenchmarkSD15Step times one SD1.5 UNet evaluation at 512×512 (64×64
// latents) with batch 2 (the conditional and unconditional halves of CFG),
// float32 on the CPU, with random weights. Run with -benchtime 1x: a step
// takes tens of seconds on two cores.
func BenchmarkSD15Step(b *testing.B) {
	if testing.Short() {
		b.Skip("full-size UNet: skipped with -short")
	}
	dev := cpu.New()
	m := unet.Load(weights.NewRandomBuilder(dev, 1), unet.SD15())
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 2*4*64*64)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	c := make([]float32, 2*77*768)
	for i := range c {
		c[i] = float32(r.NormFloat64())
	}
	xt, ct := dev.Upload(x, 2, 4, 64, 64), dev.Upload(c, 2, 77, 768)
	b.ResetTimer()
	for b.Loop() {
		out, err := m.Forward(context.Background(), dev, xt, []float32{500, 500}, ct, nil)
		if err != nil {
			b.Fatal(err)
		}
		v, _ := dev.Download(out)
		for _, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				b.Fatal("non-finite output")
			}
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/step")
}
