package sampling

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestSchedulersShape(t *testing.T) {
	d := DefaultDiscrete()
	if got := Schedulers(); !slices.Equal(got, []string{"beta", "ddim_uniform", "exponential", "karras", "kl_optimal", "linear_quadratic", "normal", "sgm_uniform", "simple"}) {
		t.Fatalf("Schedulers() = %v", got)
	}
	for _, name := range Schedulers() {
		for _, steps := range []int{1, 2, 3, 7, 20, 50} {
			sig, err := Sigmas(name, d, steps)
			if err != nil {
				t.Fatalf("%s/%d: %v", name, steps, err)
			}
			wantLen := steps + 1
			switch name {
			case "ddim_uniform": // strides the table by 1000/steps
				wantLen = len(slices.Collect(func(yield func(int) bool) {
					for x := 1; x < 1000; x += 1000 / steps {
						yield(x)
					}
				})) + 1
			case "beta": // repeated timesteps dropped; none at these counts
			}
			if len(sig) != wantLen {
				t.Errorf("%s/%d: len %d, want %d", name, steps, len(sig), wantLen)
			}
			if sig[len(sig)-1] != 0 {
				t.Errorf("%s/%d: last sigma %g, want 0", name, steps, sig[len(sig)-1])
			}
			for i := 1; i < len(sig); i++ {
				if !(sig[i] < sig[i-1]) {
					t.Errorf("%s/%d: not decreasing at %d: %s", name, steps, i, fmtSlice(sig))
					break
				}
			}
			first := float64(sig[0])
			switch name {
			case "ddim_uniform": // starts at the last table entry 1+k*(1000/steps)
				k := 1000 / steps
				if want := d.Table()[1+(998/k)*k]; sig[0] != want {
					t.Errorf("%s/%d: first sigma %.9g, want %.9g", name, steps, first, want)
				}
			case "kl_optimal": // tan(float32 atan(sigma_max)) loses ~1e-6
				if math.Abs(first/float64(d.SigmaMax())-1) > 2e-6 {
					t.Errorf("%s/%d: first sigma %.9g, want sigma_max %.9g", name, steps, first, d.SigmaMax())
				}
			default:
				if math.Abs(first/float64(d.SigmaMax())-1) > 3e-7 {
					t.Errorf("%s/%d: first sigma %.9g, want sigma_max %.9g", name, steps, first, d.SigmaMax())
				}
			}
		}
	}
}

func TestSchedulerErrors(t *testing.T) {
	d := DefaultDiscrete()
	for _, tc := range []struct {
		name, sched string
		steps       int
		want        string
	}{
		{"unknown", "fancy", 10, "valid: beta, ddim_uniform"},
		{"zero steps", "karras", 0, "want 1..100000"},
		{"too many steps", "karras", 1 << 30, "want 1..100000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Sigmas(tc.sched, d, tc.steps)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	if _, err := Sigmas("karras", nil, 5); err == nil {
		t.Error("nil schedule: no error")
	}
	if _, err := SamplerSigmas("nope", "karras", d, 5); err == nil || !strings.Contains(err.Error(), "unknown sampler") {
		t.Errorf("unknown sampler: err = %v", err)
	}
	if _, err := Sample(context.Background(), "nope", toyDenoiser, []float32{1}, []float32{1, 0}, nil, nil); err == nil {
		t.Error("Sample with unknown sampler: no error")
	}
	if _, err := Sample(context.Background(), "euler_ancestral", toyDenoiser, []float32{1}, []float32{1, 0}, nil, nil); err == nil || !strings.Contains(err.Error(), "noise source") {
		t.Errorf("stochastic sampler without noise: err = %v", err)
	}
}

// logInterp is sigma at fractional timestep t, interpolating the table's
// log sigma in float64.
func logInterp(tab []float32, t float64) float64 {
	lo := math.Floor(t)
	w := t - lo
	hi := math.Ceil(t)
	return math.Exp((1-w)*math.Log(float64(tab[int(lo)])) + w*math.Log(float64(tab[int(hi)])))
}

func TestSchedulerValues(t *testing.T) {
	d := DefaultDiscrete()
	tab := d.Table()
	smin, smax := float64(d.SigmaMin()), float64(d.SigmaMax())
	karras := func(n int) []float64 {
		out := make([]float64, n+1)
		for i := 0; i < n; i++ {
			r := float64(i) / float64(n-1)
			out[i] = math.Pow(math.Pow(smax, 1/7.0)+r*(math.Pow(smin, 1/7.0)-math.Pow(smax, 1/7.0)), 7)
		}
		return out
	}
	at := func(idx ...int) []float64 {
		out := make([]float64, 0, len(idx)+1)
		for _, i := range idx {
			out = append(out, float64(tab[i]))
		}
		return append(out, 0)
	}
	for _, tc := range []struct {
		name  string
		sched string
		steps int
		want  []float64
		tol   float64 // relative
	}{
		// simple: every 1000/4 = 250th entry from the top.
		{"simple4", "simple", 4, at(999, 749, 499, 249), 0},
		// simple with 3 steps: 1000/3 = 333.33: indices 999, 999-333, 999-666.
		{"simple3", "simple", 3, at(999, 666, 333), 0},
		// normal: timesteps linspace(999, 0, 4) = 999, 666, 333, 0.
		{"normal4", "normal", 4, at(999, 666, 333, 0), 3e-7},
		// sgm_uniform: linspace(999, 0, 5) without its last: 999, 749.25, 499.5, 249.75.
		{"sgm_uniform4", "sgm_uniform", 4, []float64{logInterp(tab, 999), logInterp(tab, 749.25), logInterp(tab, 499.5), logInterp(tab, 249.75), 0}, 3e-7},
		// ddim_uniform: entries 1, 251, 501, 751 reversed.
		{"ddim_uniform4", "ddim_uniform", 4, at(751, 501, 251, 1), 0},
		{"karras5", "karras", 5, karras(5), 1e-6},
		{"exponential4", "exponential", 4, []float64{smax, math.Exp(math.Log(smax) + (math.Log(smin)-math.Log(smax))/3), math.Exp(math.Log(smax) + 2*(math.Log(smin)-math.Log(smax))/3), smin, 0}, 1e-6},
		// linear_quadratic, 4 steps worked by hand: 1 - [0, 0.0125, 0.025, 0.275, 1].
		{"linear_quadratic4", "linear_quadratic", 4, []float64{smax, 0.9875 * smax, 0.975 * smax, 0.725 * smax, 0}, 1e-7},
		{"linear_quadratic1", "linear_quadratic", 1, []float64{smax, 0}, 0},
		// kl_optimal, 3 steps: tan of atan(max), the mean of atans, atan(min).
		{"kl_optimal3", "kl_optimal", 3, []float64{smax, math.Tan((math.Atan(smin) + math.Atan(smax)) / 2), smin, 0}, 1e-6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Sigmas(tc.sched, d, tc.steps)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %s, want %v", fmtSlice(got), tc.want)
			}
			for i := range got {
				if e := math.Abs(float64(got[i])-tc.want[i]) / math.Max(tc.want[i], 1e-30); e > tc.tol {
					t.Errorf("sigma[%d] = %.9g, want %.9g (rel err %.2g)", i, got[i], tc.want[i], e)
				}
			}
		})
	}
}

// betaCDFIndependent computes I_x(a, b) by Simpson quadrature after the
// substitution t = u^(1/a), which removes the endpoint singularity at 0:
// I_x = 1/(a B(a,b)) * int_0^{x^a} (1 - u^(1/a))^(b-1) du, for x <= 1/2.
func betaCDFIndependent(x, a, b float64) float64 {
	if x > 0.5 {
		return 1 - betaCDFIndependent(1-x, b, a)
	}
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	beta := math.Exp(la + lb - lab)
	return simpson(func(u float64) float64 { return math.Pow(1-math.Pow(u, 1/a), b-1) }, 0, math.Pow(x, a), 2000) / (a * beta)
}

func TestBetaDistribution(t *testing.T) {
	// Closed forms: Beta(1/2,1/2) is the arcsine law, Beta(2,1) has CDF x^2.
	for _, q := range []float64{0.01, 0.2, 0.5, 0.77, 0.999} {
		if got, want := BetaPPF(q, 0.5, 0.5), math.Pow(math.Sin(math.Pi*q/2), 2); math.Abs(got-want) > 1e-12 {
			t.Errorf("arcsine ppf(%g) = %.15g, want %.15g", q, got, want)
		}
		if got, want := BetaPPF(q, 2, 1), math.Sqrt(q); math.Abs(got-want) > 1e-12 {
			t.Errorf("Beta(2,1) ppf(%g) = %.15g, want %.15g", q, got, want)
		}
	}
	for _, x := range []float64{0.03, 0.25, 0.5, 0.6, 0.9} {
		if got, want := BetaCDF(x, 0.6, 0.6), betaCDFIndependent(x, 0.6, 0.6); math.Abs(got-want) > 1e-9 {
			t.Errorf("I_%g(0.6, 0.6) = %.12g, quadrature %.12g", x, got, want)
		}
		if got := BetaPPF(BetaCDF(x, 0.6, 2.5), 0.6, 2.5); math.Abs(got-x) > 1e-12 {
			t.Errorf("ppf(cdf(%g)) = %.15g", x, got)
		}
	}
	if !math.IsNaN(BetaPPF(1.5, 1, 1)) || !math.IsNaN(BetaPPF(0.5, -1, 1)) {
		t.Error("BetaPPF accepts bad arguments")
	}
}

// TestBetaScheduler derives the beta scheduler's timesteps independently:
// t_i = rint(999 * ppf(1 - i/steps)) with the quantile found by bisecting
// the quadrature CDF, then the table sigmas at those timesteps.
func TestBetaScheduler(t *testing.T) {
	d := DefaultDiscrete()
	for _, steps := range []int{5, 8, 13} {
		want := []float32{}
		last := -1.0
		for i := 0; i < steps; i++ {
			q := 1 - float64(i)/float64(steps)
			lo, hi := 0.0, 1.0
			if q == 0.5 { // the median of a symmetric law, exactly (scipy too)
				lo, hi = 0.5, 0.5
			}
			for range 50 {
				mid := (lo + hi) / 2
				if betaCDFIndependent(mid, 0.6, 0.6) < q {
					lo = mid
				} else {
					hi = mid
				}
			}
			ts := math.RoundToEven((lo + hi) / 2 * 999)
			if ts != last {
				want = append(want, d.Table()[int(ts)])
			}
			last = ts
		}
		want = append(want, 0)
		got, err := Sigmas("beta", d, steps)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("beta %d steps:\n got %s\nwant %s", steps, fmtSlice(got), fmtSlice(want))
		}
	}
	// Repeated timesteps are dropped: with many steps the ends of the Beta
	// quantiles crowd onto the same integer timesteps.
	got, err := Sigmas("beta", d, 900)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) >= 901 {
		t.Errorf("beta 900 steps: %d sigmas, want repeats dropped", len(got))
	}
}

func TestSamplerSigmasDiscardPenultimate(t *testing.T) {
	d := DefaultDiscrete()
	full, err := Sigmas("karras", d, 11)
	if err != nil {
		t.Fatal(err)
	}
	got, err := SamplerSigmas("dpm_2", "karras", d, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(full[:10]), 0)
	if !slices.Equal(got, want) {
		t.Errorf("dpm_2 sigmas:\n got %s\nwant %s", fmtSlice(got), fmtSlice(want))
	}
	plain, err := SamplerSigmas("euler", "karras", d, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != 11 || !DiscardsPenultimateSigma("uni_pc") || DiscardsPenultimateSigma("euler") {
		t.Errorf("euler sigmas len %d", len(plain))
	}
}

func TestInitialNoiseScale(t *testing.T) {
	d := DefaultDiscrete()
	smax := d.SigmaMax()
	if got, want := InitialNoiseScale(smax, smax), float32(math.Sqrt(1+float64(smax)*float64(smax))); got != want {
		t.Errorf("at sigma_max: %.9g, want %.9g", got, want)
	}
	if got := InitialNoiseScale(5, smax); got != 5 {
		t.Errorf("below sigma_max: %g, want 5", got)
	}
	lat, err := NoiseLatent([]float32{1, -2}, []float32{0.5, 0.5}, 3)
	if err != nil || !slices.Equal(lat, []float32{3.5, -5.5}) {
		t.Errorf("NoiseLatent = %v, %v", lat, err)
	}
	if _, err := NoiseLatent([]float32{1}, []float32{1, 2}, 1); err == nil {
		t.Error("NoiseLatent length mismatch: no error")
	}
}

func TestSamplerSigmasDenoise(t *testing.T) {
	d := DefaultDiscrete()
	full, err := Sigmas("karras", d, 20)
	if err != nil {
		t.Fatal(err)
	}
	// 10 steps at denoise 0.5: int(10/0.5) = 20 steps, keep the last 11.
	got, err := SamplerSigmasDenoise("euler", "karras", d, 10, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, full[10:]) {
		t.Errorf("denoise 0.5:\n got %s\nwant %s", fmtSlice(got), fmtSlice(full[10:]))
	}
	if got, _ := SamplerSigmasDenoise("euler", "karras", d, 10, 1); len(got) != 11 {
		t.Errorf("denoise 1: %d sigmas", len(got))
	}
	if got, _ := SamplerSigmasDenoise("euler", "karras", d, 10, 0); len(got) != 0 {
		t.Errorf("denoise 0: %d sigmas", len(got))
	}
	if _, err := SamplerSigmasDenoise("euler", "karras", d, 10, math.NaN()); err == nil {
		t.Error("NaN denoise: no error")
	}
}
