package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/rng"
)

// openGPU opens the first GPU in float32 parity mode (TF32 off) or skips.
func openGPU(t *testing.T) backend.Device {
	t.Helper()
	d, err := cuda.Open(cuda.Options{})
	if errors.Is(err, cuda.ErrNoDevice) {
		t.Skipf("skipping: no NVIDIA GPU/driver on this machine (%v)", err)
	}
	if err != nil {
		t.Fatalf("open cuda: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestGPUReferenceCases runs the diffusers reference cases on the GPU in
// float32: every per-step latent within 1e-4 relative, images ≥ 45 dB.
func TestGPUReferenceCases(t *testing.T) {
	dev := openGPU(t)
	ctx := context.Background()
	m, err := Load(ctx, layouts[0].path, dev)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range refCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			fx := testref.Tensors(t, c.Name+".safetensors")
			cond, err := m.EncodePrompt(ctx, c.Prompt, 1)
			if err != nil {
				t.Fatal(err)
			}
			uncond, err := m.EncodePrompt(ctx, c.Negative, 1)
			if err != nil {
				t.Fatal(err)
			}
			gc, _ := cond.Values(dev)
			check(t, "prompt_embeds", gc, fx["prompt_embeds"], 1e-4)
			shape := [4]int{1, 4, c.Height / 8, c.Width / 8}
			noise := rng.NewTorch(c.Seed).Randn(shape[1] * shape[2] * shape[3])
			var steps [][]float32
			lat, err := m.Sample(ctx, SampleParams{Cond: cond, Uncond: uncond, CFG: c.CFG, Sampler: c.Sampler,
				Scheduler: c.Scheduler, Steps: c.Steps, Seed: c.Seed, Noise: noise, Shape: shape, Convention: refConvention[c.Sampler]},
				func(ev Event) { steps = append(steps, ev.Latent) })
			if err != nil {
				t.Fatal(err)
			}
			sig := fx["sigmas"]
			for i, x := range steps {
				if refVP[c.Sampler] {
					x = toVP(x, sig[i+1])
				}
				check(t, fmt.Sprintf("latent_after_step_%d", i), x, fx[fmt.Sprintf("latent_after_step_%d", i)], 1e-4)
			}
			px, err := m.Decode(ctx, lat, shape)
			if err != nil {
				t.Fatal(err)
			}
			p := testref.PSNR(chwToHWC(px, c.Height, c.Width), fx["image"])
			t.Logf("GPU image PSNR %.1f dB, final latent rel err %.2g", p, testref.RelErr(lat, fx["final_latent"]))
			if p < 45 {
				t.Errorf("image PSNR %.1f dB < 45", p)
			}
		})
	}
}

// TestGPUMatchesCPUOnDemo generates with the built-in model on both devices.
func TestGPUMatchesCPUOnDemo(t *testing.T) {
	dev := openGPU(t)
	ctx := context.Background()
	req := DefaultRequest()
	req.Prompt, req.Width, req.Height, req.Steps, req.CFG, req.Seed = "a handwritten digit 4", 32, 32, 12, 5, 9
	var lat [2][]float32
	for i, d := range []backend.Device{cpu.New(), dev} {
		// The checkpoint file itself, so that nodemo test builds work too.
		m, err := Load(ctx, "demo/darkroom-digits.safetensors", d)
		if err != nil {
			t.Fatal(err)
		}
		res, err := m.Generate(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		lat[i] = res.Latents
		if d == dev {
			if res.PeakMemory == 0 {
				t.Error("no peak memory reported on the GPU")
			}
			t.Logf("GPU job peak memory %.1f MiB", float64(res.PeakMemory)/(1<<20))
		}
	}
	if e := testref.RelErr(lat[1], lat[0]); e > 1e-4 {
		t.Fatalf("GPU vs CPU latents: relative error %.3g > 1e-4", e)
	} else {
		t.Logf("GPU vs CPU latents: relative error %.3g", e)
	}
}

// TestGPUBench prints darkroom's GPU timings for the configurations of
// tools/bench/diffusers_baseline.py. It runs only with DARKROOM_GPU_BENCH=1
// (timings are not assertions).
func TestGPUBench(t *testing.T) {
	if os.Getenv("DARKROOM_GPU_BENCH") == "" {
		t.Skip("set DARKROOM_GPU_BENCH=1 to time the GPU")
	}
	dev := openGPU(t)
	ctx := context.Background()
	r, err := BenchUNetStep(ctx, dev, 512, 512, 2, 10)
	if err != nil {
		t.Errorf("unet step: %v", err)
	} else {
		fmt.Printf("darkroom unet_step_512_b2 fp32 %.2f (warm-up %.2f)\n", ms(r.Median()), ms(r.Warm))
	}
	for _, s := range []int{512, 1024} {
		r, err := BenchVAEDecode(ctx, dev, s, s, 3)
		if err != nil {
			t.Errorf("vae decode %d: %v", s, err)
			continue
		}
		fmt.Printf("darkroom vae_decode_%d fp32 %.2f\n", s, ms(r.Median()))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestGPUCancel cancels a job after its second step: Generate returns the
// context's error, and once the job's tensors are collected the memory in
// use returns to what the model's weights hold.
func TestGPUCancel(t *testing.T) {
	dev := openGPU(t)
	d := dev.(*cuda.Device)
	ctx := context.Background()
	m, err := Load(ctx, "demo/darkroom-digits.safetensors", dev)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	before, _, _ := d.MemoryStats()
	req := DefaultRequest()
	req.Prompt, req.Width, req.Height, req.Steps = "a handwritten digit 2", 256, 256, 50
	jctx, cancel := context.WithCancel(ctx)
	steps := 0
	_, err = m.Generate(jctx, req, func(ev Event) {
		if ev.Phase == PhaseSample {
			steps++
			if steps == 2 {
				cancel()
			}
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if steps > 3 {
		t.Errorf("%d steps ran after the cancel at step 2", steps-2)
	}
	// Dropped tensors go back to the pool through runtime cleanups, which
	// run soon after a collection.
	var after, cached uint64
	for range 20 {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
		if after, cached, _ = d.MemoryStats(); after <= before+(1<<20) {
			break
		}
	}
	t.Logf("in use before %d MiB, after cancel %d MiB (cached for reuse %d MiB)", before>>20, after>>20, cached>>20)
	if after > before+(1<<20) {
		t.Errorf("the cancelled job left %d bytes in use", after-before)
	}
	if after+(1<<20) < before {
		t.Errorf("memory in use fell below the model's weights (%d < %d)", after, before)
	}
	runtime.KeepAlive(m) // the weights must stay resident through the checks
}
