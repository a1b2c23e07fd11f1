package sampling_test

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// A pipeline guides an epsilon UNet: one network call per step on the
// unconditional rows then the conditional rows, ComfyUI's integer
// timesteps, cfg 7.5.
func ExampleGuided() {
	sched := sampling.DefaultDiscrete()
	ts := func(s float32) float32 { return float32(sched.NearestTimestep(s)) }
	// Stands in for the UNet: xIn is [uncond copy | cond copy] of the
	// scaled latent; a real pipeline uploads it as 2B rows with the
	// negative then the positive text embeddings.
	unet := func(_ context.Context, xIn []float32, t float32) ([]float32, error) {
		eps := make([]float32, len(xIn))
		half := len(xIn) / 2
		for i, v := range xIn {
			eps[i] = 0.9 * v
			if i >= half {
				eps[i] += 0.05 // the prompt pulls the estimate
			}
		}
		return eps, nil
	}
	cfg := float32(7.5)
	den, err := sampling.Guided(unet, sampling.Eps, ts, cfg, cfg != 1)
	if err != nil {
		panic(err)
	}
	sigmas, err := sampling.SamplerSigmas("euler", "karras", sched, 10)
	if err != nil {
		panic(err)
	}
	x := []float32{1, -1, 0.5, 2}
	for i := range x {
		x[i] *= sampling.InitialNoiseScale(sigmas[0], sched.SigmaMax())
	}
	out, err := sampling.Sample(context.Background(), "euler", den, x, sigmas, nil, nil)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d values, first %.3f\n", len(out), out[0])
	// Output: 4 values, first -0.321
}
