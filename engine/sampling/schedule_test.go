package sampling

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

const refDir = "../../testdata/reference/"

func TestDiscreteSD1(t *testing.T) {
	d := DefaultDiscrete()
	// ComfyUI's SD1 model_sampling (float64 schedule): sigma_max
	// 14.614641189575195, as ComfyUI reports it.
	if got, want := d.SigmaMax(), float32(14.614641189575195); got != want {
		t.Errorf("SigmaMax = %.9g, want %.9g", got, want)
	}
	if got, want := d.SigmaMin(), float32(0.0291671585); got != want {
		t.Errorf("SigmaMin = %.9g, want %.9g", got, want)
	}
	// diffusers (float32 schedule): the values in the reference fixtures
	// (cases.json sigma_max; the last sigma before 0 of the Karras runs).
	dd, err := NewDiscreteDiffusers(0.00085, 0.012, 1000, "scaled_linear")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := dd.SigmaMax(), float32(14.614646911621094); got != want {
		t.Errorf("diffusers SigmaMax = %.9g, want %.9g", got, want)
	}
	if got, want := dd.SigmaMin(), float32(0.029167532920837402); got != want {
		t.Errorf("diffusers SigmaMin = %.9g, want %.9g", got, want)
	}
	if n := len(d.Table()); n != 1000 {
		t.Fatalf("table has %d entries, want 1000", n)
	}
	// Timestep 500 by hand: abar = prod_{i<=500} (1 - beta_i).
	acp := 1.0
	for i := 0; i <= 500; i++ {
		b := math.Sqrt(0.00085) + (math.Sqrt(0.012)-math.Sqrt(0.00085))*float64(i)/999
		acp *= 1 - b*b
	}
	want := math.Sqrt((1 - acp) / acp)
	if got := float64(d.Table()[500]); math.Abs(got-want) > 1e-6*want {
		t.Errorf("sigma[500] = %.9g, want %.9g", got, want)
	}
	for i, tt := range []float32{0, 1, 250.5, 998.25, 999} {
		s := d.Sigma(tt)
		if back := d.Timestep(s); math.Abs(float64(back-tt)) > 2e-3 {
			t.Errorf("%d: Timestep(Sigma(%g)) = %g", i, tt, back)
		}
	}
	// Sigma goes through float32 log sigma and back, as ComfyUI's does.
	if got := d.Sigma(2000); math.Abs(float64(got/d.SigmaMax()-1)) > 3e-7 {
		t.Errorf("Sigma(2000) = %.9g, want clamp to sigma_max %.9g", got, d.SigmaMax())
	}
	if got := d.NearestTimestep(d.Table()[321] * 1.0001); got != 321 {
		t.Errorf("NearestTimestep = %d, want 321", got)
	}
}

func TestNewDiscreteErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		b0, b1     float64
		n          int
		kind, want string
	}{
		{"kind", 0.00085, 0.012, 1000, "cosine", "unknown beta schedule"},
		{"steps", 0.00085, 0.012, 1, "linear", "at least 2"},
		{"beta", 0, 0.012, 1000, "linear", "want in (0, 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewDiscrete(tc.b0, tc.b1, tc.n, tc.kind)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	lin, err := NewDiscrete(0.0001, 0.02, 1000, "linear")
	if err != nil {
		t.Fatal(err)
	}
	// linear betas: beta_0 = 1e-4 -> sigma_0 = sqrt(b/(1-b)).
	if got, want := float64(lin.SigmaMin()), math.Sqrt(0.0001/0.9999); math.Abs(got-want) > 1e-7*want {
		t.Errorf("linear sigma_min = %.9g, want %.9g", got, want)
	}
}

// TestFixtureSchedules checks the Karras sigmas and their timesteps against
// the diffusers runs in testdata/reference. diffusers computes the discrete
// schedule in float32, so the comparison uses NewDiscreteDiffusers; with
// ComfyUI's float64 schedule the sigmas differ by up to 1.3e-5 relative
// (also checked).
func TestFixtureSchedules(t *testing.T) {
	d, err := NewDiscreteDiffusers(0.00085, 0.012, 1000, "scaled_linear")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		round bool // diffusers DPMSolverMultistep rounds Karras timesteps
	}{
		{"a_euler_karras", false},
		{"a_dpmpp2m_karras", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := readSafetensors(refDir + tc.name + ".safetensors")
			if errors.Is(err, os.ErrNotExist) {
				t.Skipf("fixture %s absent", tc.name)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := f.get(t, "sigmas")
			got, err := Sigmas("karras", d, len(want)-1)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("len = %d, want %d", len(got), len(want))
			}
			if e, i := relErr(got, want, 1e-30); e > 1e-6 {
				t.Errorf("karras sigmas rel err %.3g at %d:\n got %s\nwant %s", e, i, fmtSlice(got), fmtSlice(want))
			} else {
				t.Logf("karras sigmas max rel err %.3g", e)
			}
			comfy, err := Sigmas("karras", DefaultDiscrete(), len(want)-1)
			if err != nil {
				t.Fatal(err)
			}
			if e, i := relErr(comfy, want, 1e-30); e > 2e-5 {
				t.Errorf("ComfyUI-schedule karras sigmas rel err %.3g at %d", e, i)
			} else {
				t.Logf("ComfyUI-schedule karras sigmas max rel err %.3g", e)
			}
			ts := f.get(t, "timesteps")
			worst := 0.0
			for i, w := range ts {
				g := d.Timestep(want[i])
				if tc.round {
					g = float32(math.RoundToEven(float64(g)))
				}
				e := math.Abs(float64(g-w)) / math.Max(1, math.Abs(float64(w)))
				worst = max(worst, e)
				if e > 1e-4 {
					t.Errorf("Timestep(%.9g) = %.9g, want %.9g", want[i], g, w)
				}
			}
			t.Logf("timesteps max rel err %.3g", worst)
		})
	}
}
