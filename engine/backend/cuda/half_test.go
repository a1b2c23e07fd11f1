package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/backendtest"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// halfDevices opens GPU 0 once per 16-bit precision for the test binary.
var halfDevices = map[tensor.DType]func() (*Device, error){
	tensor.F16:  sync.OnceValues(func() (*Device, error) { return Open(Options{Precision: tensor.F16}) }),
	tensor.BF16: sync.OnceValues(func() (*Device, error) { return Open(Options{Precision: tensor.BF16}) }),
}

// halfTolerance is the conformance tolerance (scaled error |got−want| /
// (1+|want|) against float64 references computed from the unrounded
// inputs) of each 16-bit mode: about 20 units in the last place of the
// format (2^-11 for F16, 2^-8 for BF16), which covers rounding the inputs,
// the stored intermediates and the output.
var halfTolerance = map[tensor.DType]float64{tensor.F16: 1e-2, tensor.BF16: 8e-2}

func halfGPU(t *testing.T, dt tensor.DType) *Device {
	t.Helper()
	d, err := halfDevices[dt]()
	if errors.Is(err, ErrNoDevice) {
		t.Skipf("skipping: no NVIDIA GPU/driver on this machine (%v)", err)
	}
	if err != nil {
		t.Fatalf("open GPU in %v: %v", dt, err)
	}
	return d
}

// deviceFor returns the shared test device of a precision (fp32, fp16 or
// bf16) or skips the test when there is no GPU.
func deviceFor(t *testing.T, dt tensor.DType) *Device {
	t.Helper()
	if dt == tensor.F32 {
		return gpu(t)
	}
	return halfGPU(t, dt)
}

// TestConformanceHalf runs the backend suite with 16-bit storage and
// float32 accumulation.
func TestConformanceHalf(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F16, tensor.BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			d := halfGPU(t, dt)
			backendtest.Run(t, func() backend.Device { return d }, halfTolerance[dt])
			if err := d.Sync(context.Background()); err != nil {
				t.Fatalf("sync after the suite: %v", err)
			}
		})
	}
}

// roundTo rounds float32 values to a 16-bit format and back, so that the
// CPU reference sees exactly the inputs the GPU stores.
func roundTo(dt tensor.DType, v []float32) []float32 {
	out := make([]float32, len(v))
	for i, f := range v {
		if dt == tensor.BF16 {
			out[i] = tensor.BF16ToF32(tensor.F32ToBF16(f))
		} else {
			out[i] = tensor.F16ToF32(tensor.F32ToF16(f))
		}
	}
	return out
}

// TestFlashAttentionMatchesCPU checks the tensor-core attention kernel
// against the CPU backend on the same (rounded) inputs: the head widths of
// SD1.x/SDXL (40, 64, 80, 160) and odd ones, sequence lengths that are not
// multiples of the tiles, cross-attention (77 keys) and causal masking.
// Both block sizes (4 and 8 warps) run every case. What remains is
// rounding P to 16 bits for the tensor cores and the output to the
// storage type: at most 4e-3 (F16) and 3e-2 (BF16) scaled.
func TestFlashAttentionMatchesCPU(t *testing.T) {
	tol := map[tensor.DType]float64{tensor.F16: 4e-3, tensor.BF16: 3e-2}
	cases := []struct {
		b, nq, nk, heads, dh int
		causal               bool
	}{
		{2, 4096, 4096, 8, 40, false},
		{2, 1024, 77, 8, 80, false},
		{1, 256, 256, 8, 160, false},
		{1, 77, 77, 12, 64, true},
		{1, 100, 33, 3, 18, false},
		{2, 65, 130, 2, 128, false},
		{1, 1, 1, 1, 2, false},
		{1, 300, 300, 2, 48, true},
		{1, 200, 64, 2, 96, false},
	}
	for _, dt := range []tensor.DType{tensor.F16, tensor.BF16} {
		g := halfGPU(t, dt)
		c := cpu.New()
		for _, s := range cases {
			name := fmt.Sprintf("%v_b%d_q%d_k%d_h%d_d%d_causal%v", dt, s.b, s.nq, s.nk, s.heads, s.dh, s.causal)
			t.Run(name, func(t *testing.T) {
				hd := s.heads * s.dh
				plan, ok := g.flashKernel(s.dh)
				if !ok {
					t.Fatalf("no tensor-core kernel for head dim %d", s.dh)
				}
				rng := rand.New(rand.NewPCG(uint64(s.nq), uint64(s.dh)))
				up := func(n int, shape ...int) (*backend.Tensor, *backend.Tensor) {
					v := roundTo(dt, randVec(rng, n))
					return g.Upload(v, shape...), c.Upload(v, shape...)
				}
				qg, qc := up(s.b*s.nq*hd, s.b, s.nq, hd)
				kg, kc := up(s.b*s.nk*hd, s.b, s.nk, hd)
				vg, vc := up(s.b*s.nk*hd, s.b, s.nk, hd)
				p := backend.AttentionParams{Heads: s.heads, Scale: float32(1 / math.Sqrt(float64(s.dh))), Causal: s.causal}
				og, oc := g.Alloc(s.b, s.nq, hd), c.Alloc(s.b, s.nq, hd)
				c.Attention(oc, qc, kc, vc, p)
				for _, warps := range []int{4, 8} {
					g.flashAttention(og, qg, kg, vg, p, g.flashPlanFor(plan.dp, warps))
					got, err := g.Download(og)
					if err != nil {
						t.Fatal(err)
					}
					rel, worst := relErr(got, cpu.Data(oc))
					t.Logf("%d warps: rel err %.2e, max scaled err %.2e", warps, rel, worst)
					if !(worst <= tol[dt]) {
						t.Errorf("%d warps: max scaled error %.3g > %g", warps, worst, tol[dt])
					}
				}
				for _, x := range []*backend.Tensor{qg, kg, vg, og} {
					g.Free(x)
				}
			})
		}
	}
}

// BenchmarkFlashAttention times the tensor-core attention kernel at the
// self-attention shapes of the families (both block sizes) and reports
// TFLOP/s (4·Nq·Nk·D per head): SD1.5 and SDXL at their largest maps, SD3.5
// Large's and Flux's joint sequences, Z-Image's at 1024².
func BenchmarkFlashAttention(b *testing.B) {
	shapes := []struct {
		name                 string
		b, nq, nk, heads, dh int
	}{
		{"sd15_4096_d40", 2, 4096, 4096, 8, 40},
		{"sdxl_4096_d64", 2, 4096, 4096, 10, 64},
		{"sd35l_4429_d64", 2, 4429, 4429, 38, 64},
		{"zimage_4224_d128", 1, 4224, 4224, 30, 128},
		{"flux_4608_d128", 1, 4608, 4608, 24, 128},
	}
	for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
		d, err := halfDevices[dt]()
		if err != nil {
			b.Skipf("no GPU: %v", err)
		}
		for _, s := range shapes {
			hd := s.heads * s.dh
			rng := rand.New(rand.NewPCG(1, 2))
			q := d.Upload(randVec(rng, s.b*s.nq*hd), s.b, s.nq, hd)
			k := d.Upload(randVec(rng, s.b*s.nk*hd), s.b, s.nk, hd)
			v := d.Upload(randVec(rng, s.b*s.nk*hd), s.b, s.nk, hd)
			o := d.Alloc(s.b, s.nq, hd)
			p := backend.AttentionParams{Heads: s.heads, Scale: float32(1 / math.Sqrt(float64(s.dh)))}
			plan, _ := d.flashKernel(s.dh)
			for _, warps := range []int{4, 8} {
				b.Run(fmt.Sprintf("%v/%s/w%d", dt, s.name, warps), func(b *testing.B) {
					pl := d.flashPlanFor(plan.dp, warps)
					for range 3 {
						d.flashAttention(o, q, k, v, p, pl)
					}
					if err := d.Sync(context.Background()); err != nil {
						b.Fatal(err)
					}
					// Launches are queued: the time runs until the queue is done.
					b.ResetTimer()
					start := time.Now()
					for range b.N {
						d.flashAttention(o, q, k, v, p, pl)
					}
					if err := d.Sync(context.Background()); err != nil {
						b.Fatal(err)
					}
					sec := time.Since(start).Seconds() / float64(b.N)
					b.ReportMetric(4*float64(s.b*s.heads)*float64(s.nq)*float64(s.nk)*float64(s.dh)/sec/1e12, "TFLOP/s")
					b.ReportMetric(sec*1e3, "ms/op")
				})
			}
			for _, x := range []*backend.Tensor{q, k, v, o} {
				d.Free(x)
			}
		}
	}
}
