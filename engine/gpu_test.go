package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
	"github.com/darkroom-ai/darkroom/engine/demo"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// openGPU opens the first GPU in float32 parity mode (TF32 off) or skips.
func openGPU(t *testing.T) backend.Device {
	t.Helper()
	return openGPUIn(t, tensor.F32)
}

// openGPUIn opens the first GPU with the given storage precision or skips.
func openGPUIn(t *testing.T, prec tensor.DType) backend.Device {
	t.Helper()
	d, err := cuda.Open(cuda.Options{Precision: prec})
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
			r := runRefCase(t, m, c, fx)
			check(t, "prompt_embeds", r.cond, fx["prompt_embeds"], 1e-4)
			checkRefSteps(t, c, fx, r.steps)
			t.Logf("GPU image PSNR %.1f dB, final latent rel err %.2g", r.psnr, testref.RelErr(r.final, fx["final_latent"]))
			if r.psnr < 45 {
				t.Errorf("image PSNR %.1f dB < 45", r.psnr)
			}
		})
	}
}

// demoCheckpoint decompresses the built-in model's file (beside package
// demo, so that nodemo test builds work too) into a temporary file.
func demoCheckpoint(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), demo.FileName)
	if err := demo.DecompressFile(filepath.Join("demo", demo.GzFileName), path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGPUReferenceCasesHalf runs the diffusers reference cases with 16-bit
// storage and float32 accumulation (fp16 is the GPU default): the decoded
// image must be within 35 dB of diffusers' (fp16) and 30 dB (bf16, three
// fewer mantissa bits); the latent errors are reported.
func TestGPUReferenceCasesHalf(t *testing.T) {
	for _, prec := range []struct {
		dt  tensor.DType
		min float64
	}{{tensor.F16, 35}, {tensor.BF16, 30}} {
		t.Run(prec.dt.String(), func(t *testing.T) {
			dev := openGPUIn(t, prec.dt)
			ctx := context.Background()
			m, err := Load(ctx, layouts[0].path, dev)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range refCases(t) {
				t.Run(c.Name, func(t *testing.T) {
					fx := testref.Tensors(t, c.Name+".safetensors")
					r := runRefCase(t, m, c, fx)
					t.Logf("%v image PSNR %.1f dB, final latent rel err %.2g", prec.dt, r.psnr, testref.RelErr(r.final, fx["final_latent"]))
					if r.psnr < prec.min {
						t.Errorf("%v image PSNR %.1f dB < %.0f", prec.dt, r.psnr, prec.min)
					}
				})
			}
		})
	}
}

// TestGPUSD15HalfVsFloat32 runs the full-size SD1.5 UNet (512², batch 2,
// random weights from one seed) in fp16, bf16 and fp32 mode: the 16-bit
// outputs must be finite and their relative error against fp32 is
// reported (and bounded: 1e-2 for fp16, 5e-2 for bf16).
func TestGPUSD15HalfVsFloat32(t *testing.T) {
	ctx := context.Background()
	forward := func(t *testing.T, prec tensor.DType) []float32 {
		dev := openGPUIn(t, prec)
		m := unet.Load(weights.NewRandomBuilder(dev, 1), unet.SD15())
		r := rand.New(rand.NewPCG(1, 2))
		x := dev.Upload(randomValues(r, 2*4*64*64), 2, 4, 64, 64)
		c := dev.Upload(randomValues(r, 2*77*768), 2, 77, 768)
		out, err := m.Forward(ctx, dev, x, []float32{500, 500}, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, err := dev.Download(out)
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				t.Fatalf("%v: output %d is %v", prec, i, f)
			}
		}
		return v
	}
	ref := forward(t, tensor.F32)
	for _, c := range []struct {
		dt  tensor.DType
		max float64
	}{{tensor.F16, 1e-2}, {tensor.BF16, 5e-2}} {
		got := forward(t, c.dt)
		e := testref.RelErr(got, ref)
		t.Logf("SD1.5 UNet 512x512 batch 2, %v vs fp32: relative error %.3g", c.dt, e)
		if e > c.max {
			t.Errorf("%v vs fp32: relative error %.3g > %g", c.dt, e, c.max)
		}
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
		m, err := Load(ctx, demoCheckpoint(t), d)
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
	ctx := context.Background()
	for _, prec := range []tensor.DType{tensor.F16, tensor.BF16, tensor.F32} {
		dev := openGPUIn(t, prec)
		name := cuda.PrecisionName(prec)
		r, err := BenchUNetStep(ctx, dev, "sd15", 512, 512, 2, 20)
		if err != nil {
			t.Errorf("unet step: %v", err)
		} else {
			fmt.Printf("darkroom unet_step_512_b2 %s %.2f (warm-up %.2f; %s)\n", name, ms(r.Median()), ms(r.Warm), r.Notes)
		}
		for _, s := range []int{512, 1024} {
			r, err := BenchVAEDecode(ctx, dev, s, s, 5)
			if err != nil {
				t.Errorf("vae decode %d: %v", s, err)
				continue
			}
			fmt.Printf("darkroom vae_decode_%d %s %.2f\n", s, name, ms(r.Median()))
		}
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
	m, err := Load(ctx, demoCheckpoint(t), dev)
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
