package sampling

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
)

// fakeNet is a synthetic network output for element i of a half (cond or
// not) at input v and timestep t, computed in float64 and rounded.
func fakeNet(v float32, i int, t float32, cond bool) float32 {
	c := -0.1
	if cond {
		c = 0.25
	}
	return float32(0.3*float64(v) + 0.1*math.Sin(3*float64(v)+float64(t)/100) + c*math.Cos(float64(i)))
}

// fakeBatch is a BatchFunc over fakeNet: with two halves the first is the
// unconditional one. It records the inputs it was given.
func fakeBatch(halves int, seen *[][]float32) BatchFunc {
	return func(_ context.Context, xIn []float32, t float32) ([]float32, error) {
		if seen != nil {
			*seen = append(*seen, slices.Clone(xIn))
		}
		n := len(xIn) / halves
		out := make([]float32, len(xIn))
		for k, v := range xIn {
			out[k] = fakeNet(v, k%n, t, halves == 1 || k >= n)
		}
		return out, nil
	}
}

// halfModel is the ModelFunc of one half of fakeBatch.
func halfModel(cond bool) ModelFunc {
	return func(_ context.Context, xIn []float32, t float32) ([]float32, error) {
		out := make([]float32, len(xIn))
		for k, v := range xIn {
			out[k] = fakeNet(v, k, t, cond)
		}
		return out, nil
	}
}

func guidanceInputs() (x []float32, sigmas []float32) {
	x = normals(41, 11)
	for i := range x {
		x[i] *= 3
	}
	return x, []float32{14.614642, 6.1, 1.7, 0.42, 0.0291675}
}

// TestGuidedFormula checks every prediction, guidance space and scale
// against the formula in float64 on the network outputs the batch
// returned, and bitwise against the float32 order each space documents:
// GuideDenoised is NewDenoiser on each half followed by
// u + (c - u)*scale, GuideOutput u + scale*(c - u) on the outputs followed
// by NewDenoiser's conversion.
func TestGuidedFormula(t *testing.T) {
	x, sigmas := guidanceInputs()
	ctx := context.Background()
	ts := DefaultDiscrete().Timestep
	for _, pred := range []Prediction{Eps, V, Velocity} {
		for _, space := range []GuideSpace{GuideDenoised, GuideOutput} {
			for _, scale := range []float32{7.5, 3.25, 1, 0, -1.5} {
				var seen [][]float32
				g, err := GuidedWith(fakeBatch(2, &seen), pred, ts, scale, true, GuideOptions{Space: space})
				if err != nil {
					t.Fatal(err)
				}
				du, _ := NewDenoiser(halfModel(false), pred, ts)
				dc, _ := NewDenoiser(halfModel(true), pred, ts)
				for _, sigma := range sigmas {
					if pred == Velocity && sigma > 1 {
						continue
					}
					got, err := g(ctx, x, sigma)
					if err != nil {
						t.Fatal(err)
					}
					in := seen[len(seen)-1]
					n := len(x)
					if len(in) != 2*n || !slices.Equal(in[:n], in[n:]) {
						t.Fatalf("%v: batch input of %d values, halves equal: %v", pred, len(in), slices.Equal(in[:n], in[n:]))
					}
					want := make([]float32, n)
					if space == GuideDenoised {
						u, _ := du(ctx, x, sigma)
						c, _ := dc(ctx, x, sigma)
						for i := range want {
							want[i] = u[i] + float32(float32(c[i]-u[i])*scale)
						}
					} else {
						mix := func(context.Context, []float32, float32) ([]float32, error) {
							out := make([]float32, n)
							for i := range out {
								u := fakeNet(in[i], i, ts(sigma), false)
								c := fakeNet(in[i], i, ts(sigma), true)
								out[i] = u + float32(scale*float32(c-u))
							}
							return out, nil
						}
						dm, _ := NewDenoiser(mix, pred, ts)
						want, _ = dm(ctx, x, sigma)
					}
					s, root := float64(sigma), math.Sqrt(float64(sigma)*float64(sigma)+1)
					for i := range want {
						if got[i] != want[i] {
							t.Errorf("%v/%v scale %g sigma %g: den[%d] = %.9g, want %.9g", pred, space, scale, sigma, i, got[i], want[i])
						}
						if pred != Velocity {
							// ComfyUI's calculate_input: float32 x / sqrt(sigma^2 + 1).
							if e := float64(in[i]) - float64(x[i])/root; in[i] != x[i]/sqrt32(sq32(sigma)+1) || math.Abs(e) > 3e-7*math.Abs(float64(x[i])) {
								t.Errorf("%v: input[%d] = %g, want x/sqrt(sigma^2+1)", pred, i, in[i])
							}
						} else if in[i] != x[i] {
							t.Errorf("velocity input[%d] = %g, want x", i, in[i])
						}
						e0 := float64(fakeNet(in[i], i, ts(sigma), false))
						e1 := float64(fakeNet(in[i], i, ts(sigma), true))
						conv := func(e float64) float64 {
							if pred == V {
								return float64(x[i])/(s*s+1) - e*s/root
							}
							return float64(x[i]) - e*s
						}
						ref := conv(e0) + (conv(e1)-conv(e0))*float64(scale)
						tol := 2e-6 * (math.Abs(conv(e0)) + math.Abs(conv(e1))*math.Max(1, math.Abs(float64(scale))) + 1)
						if math.Abs(float64(got[i])-ref) > tol {
							t.Errorf("%v/%v scale %g sigma %g: den[%d] = %.9g, formula %.9g", pred, space, scale, sigma, i, got[i], ref)
						}
					}
				}
			}
		}
	}
}

// TestGuidedCondOnly: without an unconditional half only the conditional
// rows run and the result is NewDenoiser's, bit for bit.
func TestGuidedCondOnly(t *testing.T) {
	x, sigmas := guidanceInputs()
	ts := DefaultDiscrete().Timestep
	for _, pred := range []Prediction{Eps, V, Velocity} {
		for _, opts := range []GuideOptions{{}, {Space: GuideOutput}} {
			var seen [][]float32
			g, err := GuidedWith(fakeBatch(1, &seen), pred, ts, 1, false, opts)
			if err != nil {
				t.Fatal(err)
			}
			d, _ := NewDenoiser(halfModel(true), pred, ts)
			for _, sigma := range sigmas {
				got, err := g(context.Background(), x, sigma)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := d(context.Background(), x, sigma)
				if !slices.Equal(got, want) {
					t.Errorf("%v sigma %g: %v, want %v", pred, sigma, got, want)
				}
				if l := len(seen[len(seen)-1]); l != len(x) {
					t.Errorf("%v: batch of %d values, want %d", pred, l, len(x))
				}
			}
		}
	}
}

// engineDenoiser transcribes the engine's guided denoiser, expression for
// expression: engine/generate.go's guided as of main 9fedfc8 (whose eps
// path is b136a41's (*Model).denoiser unchanged), with the network step
// replaced by fakeNet over rows of b latents (b unconditional then b
// conditional when cfg != 1) and flow standing for ms.Flow() != nil.
func engineDenoiser(pred Prediction, flow bool, timestep TimestepFunc, cfg float32, b, per int) Denoiser {
	useUncond := cfg != 1
	rows := b
	if useUncond {
		rows = 2 * b
	}
	return func(_ context.Context, x []float32, sigma float32) ([]float32, error) {
		cIn := float32(1 / math.Sqrt(float64(sigma)*float64(sigma)+1))
		if flow {
			cIn = 1
		}
		in := make([]float32, rows*per)
		for r := range rows {
			src := x[(r%b)*per : (r%b+1)*per]
			dst := in[r*per : (r+1)*per]
			for i, v := range src {
				dst[i] = v * cIn
			}
		}
		t := timestep(sigma)
		e := make([]float32, len(in))
		for k, v := range in {
			e[k] = fakeNet(v, k%(b*per), t, !useUncond || k >= b*per)
		}
		out := make([]float32, len(x))
		if pred == Eps {
			for i := range out {
				var ev float32
				if useUncond {
					u, c := e[i], e[b*per+i]
					ev = u + cfg*(c-u)
				} else {
					ev = e[i]
				}
				out[i] = x[i] - sigma*ev
			}
			return out, nil
		}
		den := func(row, i int) float32 {
			xv, o := x[i], e[row*per+i%per]
			if flow {
				return xv - o*sigma
			}
			s2 := sigma*sigma + 1
			return xv/s2 - float32(o*sigma)/float32(math.Sqrt(float64(s2)))
		}
		for i := range out {
			r := i / per
			if useUncond {
				u, c := den(r, i), den(b+r, i)
				out[i] = u + (c-u)*cfg
			} else {
				out[i] = den(r, i)
			}
		}
		return out, nil
	}
}

// fusedMulAdd reports whether this build fuses a*b + c into one rounding
// (GOARCH=arm64, GOAMD64=v3): (1+2^-12)^2 - (1+2^-11) is 0 when the
// product is rounded first and 2^-24 when it is not.
func fusedMulAdd() bool {
	a := float32(1 + 1.0/4096)
	return mulAdd(a, a, -(1+1.0/2048)) != 0
}

//go:noinline
func mulAdd(a, b, c float32) float32 { return a*b + c }

// TestGuidedEngineOrder: with EngineGuidance, Guided is the engine's
// guided denoiser bit for bit for every prediction, per call and over
// whole sampler runs (Eps with ComfyUI's integer timesteps, V with
// continuous ones, Velocity on the SD3 schedule); for Eps the default
// (ComfyUI) order agrees with it to rounding.
func TestGuidedEngineOrder(t *testing.T) {
	sched := DefaultDiscrete()
	sd3, err := NewFlowSD3(3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	nearest := func(s float32) float32 { return float32(sched.NearestTimestep(s)) }
	fused := fusedMulAdd()
	for _, pc := range []struct {
		pred Prediction
		ts   TimestepFunc
		flow *Flow
	}{{Eps, nearest, nil}, {V, sched.Timestep, nil}, {Velocity, sd3.Timestep, sd3}} {
		var ss Schedule = sched
		if pc.flow != nil {
			ss = sd3
		}
		for _, b := range []int{1, 2} {
			const per = 6
			x := normals(uint64(50+b), b*per)
			if pc.flow == nil {
				for i := range x {
					x[i] *= 14.614642
				}
			}
			for _, cfg := range []float32{7.5, 1, 3.25, 0} {
				halves := 1
				if cfg != 1 {
					halves = 2
				}
				eng := engineDenoiser(pc.pred, pc.flow != nil, pc.ts, cfg, b, per)
				g, err := GuidedWith(fakeBatch(halves, nil), pc.pred, pc.ts, cfg, cfg != 1, EngineGuidance(pc.pred))
				if err != nil {
					t.Fatal(err)
				}
				comfy, err := Guided(fakeBatch(halves, nil), pc.pred, pc.ts, cfg, cfg != 1)
				if err != nil {
					t.Fatal(err)
				}
				check := func(what string, got, want []float32) {
					t.Helper()
					for i := range want {
						// A fused x - sigma*ev differs by a few ulps of its terms.
						near := math.Abs(float64(got[i]-want[i])) <= 1e-6*(1+math.Abs(float64(x[i])))
						if got[i] != want[i] && (!fused || !near) {
							t.Errorf("%v b=%d cfg %g %s: [%d] = %.9g, engine %.9g", pc.pred, b, cfg, what, i, got[i], want[i])
						}
					}
				}
				sig, _ := SamplerSigmas("euler", "karras", ss, 8)
				for _, sigma := range sig[:len(sig)-1] {
					want, _ := eng(context.Background(), x, sigma)
					got, err := g(context.Background(), x, sigma)
					if err != nil {
						t.Fatal(err)
					}
					check("call", got, want)
					if pc.pred != Eps {
						continue
					}
					c, _ := comfy(context.Background(), x, sigma)
					for i := range c {
						if d := math.Abs(float64(c[i]) - float64(want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
							t.Errorf("ComfyUI order: [%d] = %.9g, engine %.9g", i, c[i], want[i])
						}
					}
				}
				for _, name := range []string{"euler", "dpmpp_2m", "euler_ancestral", "uni_pc"} {
					sig, _ := SamplerSigmas(name, "karras", ss, 8)
					opts := Options{Flow: pc.flow}
					want, err := SampleWith(context.Background(), name, eng, x, sig, TorchNoise(3), nil, opts)
					if err != nil {
						t.Fatal(err)
					}
					got, err := SampleWith(context.Background(), name, g, x, sig, TorchNoise(3), nil, opts)
					if err != nil {
						t.Fatal(err)
					}
					if !fused {
						check(name, got, want)
					}
				}
			}
		}
	}
	if fused {
		t.Log("this build fuses multiply-adds: the engine's unconverted expressions round differently, so only per-call agreement to rounding was checked")
	}
}

// TestGuidedFlowSampling: a velocity network for the flow Gaussian, guided
// without a negative half (a distilled model), samples like the closed-form
// denoiser.
func TestGuidedFlowSampling(t *testing.T) {
	sd3, err := NewFlowSD3(3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// The network sees x unscaled and only its timestep; the test keeps
	// the sigma of the current call for the closed form.
	var sigma float32
	vel := func(ctx context.Context, xIn []float32, _ float32) ([]float32, error) {
		d, _ := flowGaussDenoiser(ctx, xIn, sigma)
		out := make([]float32, len(xIn))
		for i := range out {
			out[i] = float32((float64(xIn[i]) - float64(d[i])) / float64(sigma))
		}
		return out, nil
	}
	g, err := Guided(vel, Velocity, sd3.Timestep, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	track := func(ctx context.Context, x []float32, s float32) ([]float32, error) {
		sigma = s
		return g(ctx, x, s)
	}
	sig, err := SamplerSigmas("euler", "simple", sd3, 20)
	if err != nil {
		t.Fatal(err)
	}
	x := normals(8, 64)
	want, err := SampleWith(context.Background(), "euler", flowGaussDenoiser, x, sig, nil, nil, Options{Flow: sd3})
	if err != nil {
		t.Fatal(err)
	}
	got, err := SampleWith(context.Background(), "euler", track, x, sig, nil, nil, Options{Flow: sd3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-4 {
			t.Errorf("x[%d] = %g, closed form %g", i, got[i], want[i])
		}
	}
}

func TestGuidedErrors(t *testing.T) {
	ts := DefaultDiscrete().Timestep
	ok := fakeBatch(2, nil)
	for _, c := range []struct {
		name string
		err  func() error
	}{
		{"nil model", func() error { _, err := Guided(nil, Eps, ts, 2, true); return err }},
		{"nil timestep", func() error { _, err := Guided(ok, Eps, nil, 2, true); return err }},
		{"bad prediction", func() error { _, err := Guided(ok, Prediction(9), ts, 2, true); return err }},
		{"bad space", func() error {
			_, err := GuidedWith(ok, Eps, ts, 2, true, GuideOptions{Space: GuideSpace(4)})
			return err
		}},
		{"NaN scale", func() error { _, err := Guided(ok, Eps, ts, float32(math.NaN()), true); return err }},
		{"scale without uncond", func() error { _, err := Guided(ok, Eps, ts, 2, false); return err }},
	} {
		if c.err() == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	boom := errors.New("boom")
	bad := func(context.Context, []float32, float32) ([]float32, error) { return nil, boom }
	g, _ := Guided(bad, Eps, ts, 2, true)
	if _, err := g(context.Background(), []float32{1, 2}, 3); !errors.Is(err, boom) {
		t.Errorf("model error: %v", err)
	}
	short := func(_ context.Context, xIn []float32, _ float32) ([]float32, error) { return xIn[:len(xIn)/2], nil }
	g, _ = Guided(short, Eps, ts, 2, true)
	if _, err := g(context.Background(), []float32{1, 2}, 3); err == nil {
		t.Error("half-length output: no error")
	}
	if GuideDenoised.String() != "denoised" || GuideOutput.String() != "output" {
		t.Errorf("space names %v %v", GuideDenoised, GuideOutput)
	}
}
