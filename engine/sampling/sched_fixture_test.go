package sampling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"
)

// The diffusers scheduler fixtures made by
// tools/reference/gen_scheduler_fixtures.py (sched_manifest.json and
// sched_<case>.safetensors in testdata/reference). Each case ran a diffusers
// scheduler with a synthetic epsilon model; here the matching darkroom
// sampler runs on the same sigmas with the same model, wrapped as ComfyUI
// wraps an epsilon model, and the latents must agree to 1e-4 of their scale.

type schedCase struct {
	Name       string `json:"name"`
	Sampler    string `json:"sampler"`
	Scheduler  string `json:"scheduler"`
	Steps      int    `json:"steps"`
	CheckSteps []int  `json:"check_steps"`
	CheckFinal bool   `json:"check_final"`
	Noise      int    `json:"noise"`
	Calls      int    `json:"calls"`
	File       string `json:"file"`
	Note       string `json:"note"`
}

// synthEps is the fixtures' model, eps = 0.3 x + 0.1 sin(x) + 0.01 t/1000,
// in float32 as torch evaluates it.
func synthEps(xin []float32, t float64) []float32 {
	c := float32(0.01 * t / 1000)
	out := make([]float32, len(xin))
	for i, v := range xin {
		out[i] = float32(float32(0.3*v)+float32(0.1*float32(math.Sin(float64(v))))) + c
	}
	return out
}

// epsDenoiser wraps the synthetic model as ComfyUI's EPS model sampling
// does: x_in = x / sqrt(sigma^2+1), denoised = x - eps*sigma. The model's
// timestep for each call is taken from the fixture's call log in order.
func epsDenoiser(ts []float64, calls *int) Denoiser {
	return func(_ context.Context, x []float32, sigma float32) ([]float32, error) {
		if *calls >= len(ts) {
			return nil, fmt.Errorf("model call %d, but diffusers made only %d", *calls+1, len(ts))
		}
		t := ts[*calls]
		*calls++
		scale := sqrt32(sq32(sigma) + 1)
		xin := make([]float32, len(x))
		for i, v := range x {
			xin[i] = v / scale
		}
		eps := synthEps(xin, t)
		out := make([]float32, len(x))
		for i := range x {
			out[i] = x[i] - float32(eps[i]*sigma)
		}
		return out, nil
	}
}

// scaledErr returns max|got-want| / max|want|.
func scaledErr(got, want []float32) float64 {
	diff, scale := 0.0, 0.0
	for i := range want {
		diff = max(diff, math.Abs(float64(got[i])-float64(want[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	return diff / max(scale, 1e-30)
}

func TestDiffusersSchedulerFixtures(t *testing.T) {
	b, err := os.ReadFile(refDir + "sched_manifest.json")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("scheduler fixtures absent: run tools/reference/gen_scheduler_fixtures.py --out testdata/reference")
	}
	if err != nil {
		t.Fatal(err)
	}
	var man struct {
		Magic string      `json:"magic"`
		Cases []schedCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	if man.Magic != "darkroom-sched-fixtures-v1" {
		t.Fatalf("manifest magic %q", man.Magic)
	}
	for _, c := range man.Cases {
		t.Run(c.Name, func(t *testing.T) {
			f, err := readSafetensors(refDir + c.File)
			if err != nil {
				t.Fatal(err)
			}
			sig := f.get(t, "sigmas")
			x := f.get(t, "x_start")
			callT := f["call_t"]
			if callT == nil || callT.f64 == nil {
				t.Fatal("fixture has no F64 call_t")
			}
			var noise [][]float32
			for k := 0; k < c.Noise; k++ {
				noise = append(noise, f.get(t, fmt.Sprintf("noise_%d", k)))
			}
			next := 0
			pop := func(n int) []float32 {
				if next >= len(noise) {
					t.Fatalf("sampler drew noise %d, fixture has %d", next+1, len(noise))
				}
				v := noise[next]
				next++
				if len(v) != n {
					t.Fatalf("noise has %d values, want %d", len(v), n)
				}
				return v
			}
			steps := map[int][]float32{}
			cb := func(s StepInfo) { steps[s.Step] = append([]float32(nil), s.X...) }
			calls := 0
			r, out, err := newRun(context.Background(), c.Sampler, epsDenoiser(callT.f64, &calls), x, sig, NoiseSource(pop), cb)
			if err != nil {
				t.Fatal(err)
			}
			r.brownian = func(*run, int) (brownianSampler, error) {
				return func(_, _ float32) ([]float32, error) { return pop(len(x)), nil }, nil
			}
			got, err := r.exec(out)
			if err != nil {
				t.Fatal(err)
			}
			if calls != c.Calls {
				t.Errorf("%d model calls, diffusers made %d", calls, c.Calls)
			}
			worst := 0.0
			for _, k := range c.CheckSteps {
				want := f.get(t, fmt.Sprintf("x_step_%d", k))
				e := scaledErr(steps[k], want)
				worst = max(worst, e)
				if e > 1e-4 {
					t.Errorf("step %d: scaled error %.3g", k, e)
				}
			}
			if c.CheckFinal {
				e := scaledErr(got, f.get(t, "final"))
				worst = max(worst, e)
				if e > 1e-4 {
					t.Errorf("final: scaled error %.3g", e)
				}
			}
			t.Logf("%s vs %s: %d steps checked, worst scaled error %.3g (%s)", c.Sampler, c.Scheduler, len(c.CheckSteps), worst, c.Note)
		})
	}
}
