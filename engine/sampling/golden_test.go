package sampling

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"math"
	"os"
	"slices"
	"testing"
)

// The golden test pins every sampler bit for bit: for variance-exploding
// and flow models, several sigma schedules (full, partial, one and two
// steps, not ending at 0, flow runs starting at sigma 1) and a fixed noise
// source, it hashes the float32 bits of every denoiser call (input and
// sigma), every noise draw size, every callback (step, total, sigma, X,
// Denoised) and the result, and compares against
// testdata/golden_samplers.json, recorded from the samplers as they were
// before the step scaffold and the ancestral abstraction were introduced.
// It also pins the error messages of failing denoisers, short noise and a
// context cancelled mid-run. Regenerate (only when a change of numbers is
// intended) with
//
//	go test ./engine/sampling/ -run TestGoldenSamplers -update-golden

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden_samplers.json")

const goldenPath = "testdata/golden_samplers.json"

// goldenCase is one recorded run.
type goldenCase struct {
	// Hash is the SHA-256 of the run's trace (calls, draws, callbacks,
	// result).
	Hash string `json:"hash"`
	// Out holds the result's float32 bits (for a readable diff).
	Out []uint32 `json:"out"`
	// Calls is the number of denoiser evaluations.
	Calls int `json:"calls"`
}

type goldenFile struct {
	Runs   map[string]goldenCase `json:"runs"`
	Errors map[string]string     `json:"errors"`
}

// goldenVE is a nonlinear analytic x0 estimate for variance-exploding
// models (the toy denoiser of the hand-derived tests plus a cross-element
// term, so that elements interact).
func goldenVE(_ context.Context, x []float32, sigma float32) ([]float32, error) {
	out := make([]float32, len(x))
	s := float64(sigma)
	for i := range x {
		v := float64(x[i])
		w := float64(x[(i+1)%len(x)])
		out[i] = float32(0.8*math.Tanh(v/(1+0.1*s)) + 0.05*math.Sin(s+float64(i)) + 0.02*w/(1+s))
	}
	return out, nil
}

// goldenFlow is a nonlinear analytic x0 estimate for flow models
// (x = (1-sigma) x0 + sigma n): the Gaussian posterior mean of
// flowGaussDenoiser bent by a tanh.
func goldenFlow(_ context.Context, x []float32, sigma float32) ([]float32, error) {
	sg := float64(sigma)
	a := 1 - sg
	v := a*a*gaussS*gaussS + sg*sg
	out := make([]float32, len(x))
	for i, xv := range x {
		lin := gaussMu + a*gaussS*gaussS*(float64(xv)-a*gaussMu)/v
		out[i] = float32(lin + 0.1*math.Tanh(float64(xv)) + 0.03*math.Cos(sg+float64(i)))
	}
	return out, nil
}

// tracer hashes a run's observable events.
type tracer struct {
	h     hash.Hash
	calls int
}

func newTracer() *tracer { return &tracer{h: sha256.New()} }

func (tr *tracer) tag(s string) { tr.h.Write([]byte(s)) }

func (tr *tracer) int(v int) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(v))
	tr.h.Write(b[:])
}

func (tr *tracer) f32(v float32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
	tr.h.Write(b[:])
}

func (tr *tracer) vec(v []float32) {
	tr.int(len(v))
	for _, f := range v {
		tr.f32(f)
	}
}

func (tr *tracer) denoiser(d Denoiser) Denoiser {
	return func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
		tr.calls++
		tr.tag("D")
		tr.f32(sigma)
		tr.vec(x)
		out, err := d(ctx, x, sigma)
		tr.vec(out)
		return out, err
	}
}

func (tr *tracer) noise(n NoiseSource) NoiseSource {
	return func(k int) []float32 {
		tr.tag("N")
		tr.int(k)
		return n(k)
	}
}

func (tr *tracer) callback(info StepInfo) {
	tr.tag("C")
	tr.int(info.Step)
	tr.int(info.Total)
	tr.f32(info.Sigma)
	tr.vec(info.X)
	tr.vec(info.Denoised)
}

// goldenSchedule is one sigma schedule of the golden runs.
type goldenSchedule struct {
	name   string
	sigmas func(sampler string) ([]float32, error)
}

func goldenSchedules(t *testing.T, flow bool) ([]goldenSchedule, *Flow) {
	t.Helper()
	if !flow {
		d := DefaultDiscrete()
		return []goldenSchedule{
			{"karras6", func(n string) ([]float32, error) { return SamplerSigmas(n, "karras", d, 6) }},
			{"normal9", func(n string) ([]float32, error) { return SamplerSigmas(n, "normal", d, 9) }},
			{"exponential3", func(n string) ([]float32, error) { return SamplerSigmas(n, "exponential", d, 3) }},
			{"simple2", func(n string) ([]float32, error) { return SamplerSigmas(n, "simple", d, 2) }},
			{"karras1", func(n string) ([]float32, error) { return SamplerSigmas(n, "karras", d, 1) }},
			{"denoise0.6", func(n string) ([]float32, error) { return SamplerSigmasDenoise(n, "karras", d, 5, 0.6) }},
			{"nozero", func(string) ([]float32, error) { return []float32{10, 4, 1.5, 0.5, 0.2}, nil }},
		}, nil
	}
	sd3, err := NewFlowSD3(3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	flux, err := NewFlowFlux(1.15)
	if err != nil {
		t.Fatal(err)
	}
	return []goldenSchedule{
		{"simple6", func(n string) ([]float32, error) { return SamplerSigmas(n, "simple", sd3, 6) }},
		{"karras5", func(n string) ([]float32, error) { return SamplerSigmas(n, "karras", sd3, 5) }},
		{"flux_normal4", func(n string) ([]float32, error) { return SamplerSigmas(n, "normal", flux, 4) }},
		{"simple2", func(n string) ([]float32, error) { return SamplerSigmas(n, "simple", sd3, 2) }},
		{"simple1", func(n string) ([]float32, error) { return SamplerSigmas(n, "simple", sd3, 1) }},
		{"denoise0.5", func(n string) ([]float32, error) { return SamplerSigmasDenoise(n, "beta", sd3, 4, 0.5) }},
		{"nozero", func(string) ([]float32, error) { return []float32{0.9, 0.6, 0.3, 0.1}, nil }},
	}, sd3
}

// goldenRun samples once and returns the trace (through Sample for a
// variance-exploding model without callback, SampleWith otherwise).
func goldenRun(t *testing.T, sampler string, flow *Flow, sig []float32, withCB bool) (goldenCase, []float32) {
	t.Helper()
	tr := newTracer()
	model := Denoiser(goldenVE)
	x := normals(21, 7)
	if flow != nil {
		model = goldenFlow
		var err error
		if x, err = FlowNoiseLatent(x, []float32{0.3, -0.2, 0.5, 0.1, -0.4, 0.2, 0}, sig[0]); err != nil {
			t.Fatal(err)
		}
	} else {
		for i := range x {
			x[i] *= sig[0]
		}
	}
	tr.tag("X")
	tr.vec(x)
	tr.vec(sig)
	var cb Callback
	if withCB {
		cb = tr.callback
	}
	in := slices.Clone(x)
	var out []float32
	var err error
	if flow == nil && !withCB {
		out, err = Sample(context.Background(), sampler, tr.denoiser(model), x, sig, tr.noise(pcgNoise(31)), nil)
	} else {
		out, err = SampleWith(context.Background(), sampler, tr.denoiser(model), x, sig, tr.noise(pcgNoise(31)), cb, Options{Flow: flow})
	}
	if err != nil {
		t.Fatalf("sample: %v", err)
	}
	if !slices.Equal(in, x) {
		t.Error("input modified")
	}
	tr.tag("R")
	tr.vec(out)
	bits := make([]uint32, len(out))
	for i, v := range out {
		bits[i] = math.Float32bits(v)
	}
	return goldenCase{Hash: hex.EncodeToString(tr.h.Sum(nil)), Out: bits, Calls: tr.calls}, out
}

// goldenErrors records the errors of runs that fail part way.
func goldenErrors(t *testing.T, sampler string, flow *Flow, sig []float32, calls int, rec func(key, msg string)) {
	t.Helper()
	model := Denoiser(goldenVE)
	if flow != nil {
		model = goldenFlow
	}
	x := normals(22, 4)
	for i := range x {
		x[i] *= 0.5
	}
	var lastErr error
	run := func(m Denoiser, noise NoiseSource, ctx context.Context, cb Callback) string {
		_, lastErr = SampleWith(ctx, sampler, m, x, sig, noise, cb, Options{Flow: flow})
		if lastErr == nil {
			return "<nil>"
		}
		return lastErr.Error()
	}
	for k := 1; k <= calls; k++ {
		n := 0
		fail := func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
			n++
			if n == k {
				return nil, fmt.Errorf("boom %d", k)
			}
			return model(ctx, x, sigma)
		}
		rec(fmt.Sprintf("fail%d", k), run(fail, pcgNoise(3), context.Background(), nil))
		n = 0
		short := func(ctx context.Context, x []float32, sigma float32) ([]float32, error) {
			n++
			d, err := model(ctx, x, sigma)
			if n == k {
				d = d[:len(d)-1]
			}
			return d, err
		}
		rec(fmt.Sprintf("short%d", k), run(short, pcgNoise(3), context.Background(), nil))
	}
	draws := 0
	shortNoise := func(n int) []float32 {
		draws++
		if draws == 2 {
			n--
		}
		return pcgNoise(4)(n)
	}
	rec("short_noise", run(model, shortNoise, context.Background(), nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cbs := 0
	stop := func(StepInfo) {
		if cbs++; cbs == 2 {
			cancel()
		}
	}
	msg := run(model, pcgNoise(3), ctx, stop)
	rec("cancel", fmt.Sprintf("%s (after %d callbacks, is Canceled: %v)", msg, cbs, errors.Is(lastErr, context.Canceled)))
}

func TestGoldenSamplers(t *testing.T) {
	got := goldenFile{Runs: map[string]goldenCase{}, Errors: map[string]string{}}
	for _, flow := range []bool{false, true} {
		kind := "ve"
		if flow {
			kind = "flow"
		}
		scheds, f := goldenSchedules(t, flow)
		for _, name := range Samplers() {
			for _, sc := range scheds {
				sig, err := sc.sigmas(name)
				if err != nil {
					t.Fatal(err)
				}
				key := kind + "/" + sc.name + "/" + name
				c, out := goldenRun(t, name, f, sig, true)
				_, out2 := goldenRun(t, name, f, sig, false)
				if !slices.Equal(out, out2) {
					t.Errorf("%s: the result depends on whether a callback is set", key)
				}
				got.Runs[key] = c
				if sc.name == "karras6" || sc.name == "simple6" {
					goldenErrors(t, name, f, sig, c.Calls, func(k, msg string) { got.Errors[key+"/"+k] = msg })
				}
			}
		}
	}
	if *updateGolden {
		b, err := json.MarshalIndent(got, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d runs, %d errors", goldenPath, len(got.Runs), len(got.Errors))
		return
	}
	b, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (record with -update-golden)", err)
	}
	var want goldenFile
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for _, k := range sortedKeys(want.Runs) {
		w := want.Runs[k]
		g, ok := got.Runs[k]
		switch {
		case !ok:
			t.Errorf("%s: not run", k)
		case g.Hash != w.Hash || !slices.Equal(g.Out, w.Out) || g.Calls != w.Calls:
			t.Errorf("%s: trace differs (calls %d, want %d)\n got  %s\n want %s", k, g.Calls, w.Calls, bitsString(g.Out), bitsString(w.Out))
		}
	}
	for _, k := range sortedKeys(got.Runs) {
		if _, ok := want.Runs[k]; !ok {
			t.Errorf("%s: no golden value", k)
		}
	}
	for _, k := range sortedKeys(want.Errors) {
		if g := got.Errors[k]; g != want.Errors[k] {
			t.Errorf("%s: error %q, want %q", k, g, want.Errors[k])
		}
	}
	if len(got.Errors) != len(want.Errors) {
		t.Errorf("%d error cases, want %d", len(got.Errors), len(want.Errors))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func bitsString(bits []uint32) string {
	s := ""
	for _, b := range bits {
		s += fmt.Sprintf(" %.9g", math.Float32frombits(b))
	}
	return s
}
