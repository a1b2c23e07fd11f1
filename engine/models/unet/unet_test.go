package unet_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

const prefix = "model.diffusion_model."

func TestConfigFromWeights(t *testing.T) {
	src, err := safetensors.Open(testref.Path("sd1-tiny-a", "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c, err := unet.ConfigFromWeights(src, prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := "channels 32 × [1 2], 2 res blocks/level, attention at levels [0] depth [1 0] (mid 1), context 64, 8 heads, in 4, out 4"
	if c.String() != want {
		t.Fatalf("config\n got %s\nwant %s", c, want)
	}
}

// TestFirstEulerStep checks the UNet against diffusers: an Euler step is
// x1 = x0 + ε̂·(σ1 − σ0), so the fixture's first step gives the guided ε̂
// that diffusers' UNet produced, which the Go UNet must reproduce.
func TestFirstEulerStep(t *testing.T) {
	src, err := safetensors.Open(testref.Path("sd1-tiny-a", "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c, err := unet.ConfigFromWeights(src, prefix)
	if err != nil {
		t.Fatal(err)
	}
	dev := cpu.New()
	b := weights.NewBuilder(src, dev)
	m := unet.Load(b.Sub("model.diffusion_model"), c)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	if unused := b.Unused(prefix); len(unused) > 0 {
		t.Errorf("unused tensors: %v", unused)
	}
	fx := testref.Tensors(t, "a_euler_karras.safetensors")
	sig, ts := fx["sigmas"], fx["timesteps"]
	x0 := make([]float32, len(fx["noise"]))
	for i, v := range fx["noise"] {
		x0[i] = v * sig[0]
	}
	cIn := float32(1 / math.Sqrt(float64(sig[0])*float64(sig[0])+1))
	in := make([]float32, 2*len(x0))
	for i, v := range x0 {
		in[i] = v * cIn
		in[len(x0)+i] = v * cIn
	}
	ctx := append(append([]float32(nil), fx["negative_embeds"]...), fx["prompt_embeds"]...)
	x := dev.Upload(in, 2, 4, 8, 8)
	cond := dev.Upload(ctx, 2, 77, 64)
	out, err := m.Forward(context.Background(), dev, x, []float32{ts[0], ts[0]}, cond, nil)
	if err != nil {
		t.Fatal(err)
	}
	eps, _ := dev.Download(out)
	n := len(x0)
	got := make([]float32, n)
	want := make([]float32, n)
	x1 := fx["latent_after_step_0"]
	for i := range n {
		got[i] = eps[i] + 7*(eps[n+i]-eps[i])
		want[i] = (x1[i] - x0[i]) / (sig[1] - sig[0])
	}
	if e := testref.RelErr(got, want); e > 1e-4 {
		t.Fatalf("guided ε: relative error %.3g > 1e-4", e)
	} else {
		t.Logf("guided ε: relative error %.3g", e)
	}
}

// TestOddLatentSizes compares the UNet with diffusers' at latent sides that
// are not multiples of 2 (the tiny model has 2 levels): the up path resizes
// to the skip connections (tools/reference/gen_unet_odd_fixture.py).
func TestOddLatentSizes(t *testing.T) {
	if !testref.Exists("unet_odd.safetensors") {
		t.Skip("no odd-size fixture: run tools/reference/gen_unet_odd_fixture.py")
	}
	src, err := safetensors.Open(testref.Path("sd1-tiny-a", "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c, err := unet.ConfigFromWeights(src, prefix)
	if err != nil {
		t.Fatal(err)
	}
	dev := cpu.New()
	b := weights.NewBuilder(src, dev)
	m := unet.Load(b.Sub("model.diffusion_model"), c)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	fx := testref.Tensors(t, "unet_odd.safetensors")
	for _, hw := range [][2]int{{9, 7}, {5, 5}, {3, 11}, {1, 1}} {
		k := fmt.Sprintf("%dx%d", hw[0], hw[1])
		t.Run(k, func(t *testing.T) {
			x := dev.Upload(fx[k+"/x"], 2, 4, hw[0], hw[1])
			ctx := dev.Upload(fx[k+"/ctx"], 2, 77, 64)
			out, err := m.Forward(context.Background(), dev, x, fx[k+"/t"], ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := dev.Download(out)
			if e := testref.RelErr(got, fx[k+"/out"]); e > 1e-4 {
				t.Fatalf("relative error %.3g > 1e-4", e)
			} else {
				t.Logf("relative error %.3g", e)
			}
		})
	}
}
