package sampling

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"slices"
	"testing"
)

// TestTorchNoise checks that the first draw of TorchNoise(seed) is
// torch.randn for that seed (testdata/reference/randn.*), and that a second
// draw continues the stream rather than repeating it.
func TestTorchNoise(t *testing.T) {
	f, err := readSafetensors(refDir + "randn.safetensors")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("randn fixture absent")
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(refDir + "randn.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Key   string `json:"key"`
		Seed  uint64 `json:"seed"`
		Shape []int  `json:"shape"`
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Key, func(t *testing.T) {
			want := f.get(t, c.Key)
			var src NoiseSource
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Skipf("engine/rng not usable yet: %v", r)
					}
				}()
				src = TorchNoise(c.Seed)
				src(0)
			}()
			got := src(len(want))
			if !slices.Equal(got, want) {
				e, i := relErr(got, want, 1e-6)
				t.Fatalf("first draw differs from torch.randn: max rel err %.3g at %d", e, i)
			}
			if next := src(len(want)); slices.Equal(next, want) {
				t.Error("second draw repeats the first")
			}
		})
	}
}

// TestBrownianStatistics checks the Brownian noise sampler: every query
// returns standard-normal values; increments over disjoint intervals are
// uncorrelated; an increment over a sub-interval [b, a] of [c, a] has
// correlation sqrt((a-b)/(a-c)) with it, as for a Brownian path (what
// dpmpp_sde relies on when it draws the midpoint and the full step).
// With 40000 elements the standard error of a correlation is 0.005, so the
// tolerance is 0.025.
func TestBrownianStatistics(t *testing.T) {
	const n = 40000
	sig := []float32{14.6, 7, 3, 1.2, 0.4, 0.03, 0}
	r := &run{ctx: context.Background(), name: "test", sigmas: sig, noise: pcgNoise(11)}
	ns, err := newBrownianSampler(r, n)
	if err != nil {
		t.Fatal(err)
	}
	draw := func(a, b float32) []float32 {
		v, err := ns(a, b)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	stats := func(v []float32) (mean, variance float64) {
		for _, x := range v {
			mean += float64(x)
		}
		mean /= float64(len(v))
		for _, x := range v {
			variance += (float64(x) - mean) * (float64(x) - mean)
		}
		return mean, variance / float64(len(v)-1)
	}
	corr := func(a, b []float32) float64 {
		s := 0.0
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s / float64(len(a))
	}
	// dpmpp_sde's pattern: midpoint first, then the full step.
	mid := float32(math.Sqrt(7 * 3))
	half := draw(7, mid)
	full := draw(7, 3)
	later := draw(1.2, 0.4)
	outside := draw(0.03, 0.01) // beyond the initial range
	for name, v := range map[string][]float32{"half": half, "full": full, "later": later, "outside": outside} {
		m, v2 := stats(v)
		if math.Abs(m) > 0.02 || math.Abs(v2-1) > 0.03 {
			t.Errorf("%s: mean %.4f variance %.4f, want 0 and 1", name, m, v2)
		}
	}
	if c, want := corr(half, full), math.Sqrt((7-float64(mid))/(7-3)); math.Abs(c-want) > 0.025 {
		t.Errorf("corr(sub-interval, interval) = %.4f, want %.4f", c, want)
	}
	if c := corr(full, later); math.Abs(c) > 0.025 {
		t.Errorf("corr(disjoint) = %.4f, want 0", c)
	}
	// The same query returns the same values (the path is fixed once drawn),
	// and reversing the interval flips the sign.
	if again := draw(7, 3); !slices.Equal(again, full) {
		t.Error("repeated query differs")
	}
	rev := draw(3, 7)
	for i := range rev {
		if math.Abs(float64(rev[i]+full[i])) > 1e-5 {
			t.Fatalf("reversed interval: %g, want %g", rev[i], -full[i])
		}
	}
	if _, err := ns(2, 2); err == nil {
		t.Error("empty interval: no error")
	}
}

// TestSamplersDeterministic runs every sampler twice with the same seed and
// checks identical results, the callback contract and that the context is
// honoured.
func TestSamplersDeterministic(t *testing.T) {
	d := DefaultDiscrete()
	for _, name := range Samplers() {
		t.Run(name, func(t *testing.T) {
			sig, err := SamplerSigmas(name, "karras", d, 6)
			if err != nil {
				t.Fatal(err)
			}
			x := normals(5, 32)
			for i := range x {
				x[i] *= sig[0]
			}
			var steps []int
			cb := func(s StepInfo) {
				steps = append(steps, s.Step)
				if s.Total != len(sig)-1 || s.Sigma != sig[s.Step] || len(s.X) != len(x) || len(s.Denoised) != len(x) {
					t.Errorf("bad step info %d: total %d sigma %g", s.Step, s.Total, s.Sigma)
				}
			}
			a, err := Sample(context.Background(), name, toyDenoiser, x, sig, pcgNoise(1), cb)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Sample(context.Background(), name, toyDenoiser, x, sig, pcgNoise(1), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a, b) {
				t.Error("two runs with the same noise differ")
			}
			if c, err := Sample(context.Background(), name, toyDenoiser, x, sig, pcgNoise(2), nil); err != nil {
				t.Fatal(err)
			} else if differ := !slices.Equal(a, c); differ != Stochastic(name) {
				t.Errorf("another noise seed changes the result: %v, Stochastic: %v", differ, Stochastic(name))
			}
			if want := []int{0, 1, 2, 3, 4, 5}; !slices.Equal(steps, want) {
				t.Errorf("callback steps %v, want %v", steps, want)
			}
			for i, v := range a {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("x[%d] = %g", i, v)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := Sample(ctx, name, toyDenoiser, x, sig, pcgNoise(1), nil); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled context: err = %v", err)
			}
			bad := func(context.Context, []float32, float32) ([]float32, error) { return []float32{1}, nil }
			if _, err := Sample(context.Background(), name, bad, x, sig, pcgNoise(1), nil); err == nil {
				t.Error("short denoiser output: no error")
			}
		})
	}
}
