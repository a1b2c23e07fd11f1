package t5_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/t5"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// The tiny T5 v1.1 encoder of tools/reference/gen_t5_fixtures.py
// (transformers T5EncoderModel, F16 weights, outputs in float32).
const fixture = "t5-tiny"

type encoderCase struct {
	Prompts   []string `json:"prompts"`
	MaxLength int      `json:"max_length"`
	Masked    bool     `json:"masked"`
	IDs       [][]int  `json:"ids"`
	Mask      [][]int  `json:"mask"`
}

type encoderFixture struct {
	Cases      []encoderCase `json:"cases"`
	BucketFrom int           `json:"bucket_from"`
	Buckets    []int         `json:"buckets"`
}

func loadFixture(t *testing.T) (encoderFixture, map[string][]float32) {
	t.Helper()
	if !testref.Exists(fixture, "encoder.json") {
		t.Skipf("testdata/reference/%s absent: make it with tools/reference/gen_t5_fixtures.py", fixture)
	}
	data, err := os.ReadFile(testref.Path(fixture, "encoder.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f encoderFixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("encoder.json: %v", err)
	}
	return f, testref.Tensors(t, fixture+"/encoder.safetensors")
}

func openModel(t *testing.T) *safetensors.File {
	t.Helper()
	src, err := safetensors.Open(testref.Path(fixture, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// load builds the encoder under prefix and checks every tensor was read.
func load(t *testing.T, src weights.Source, prefix string, dev backend.Device) *t5.Encoder {
	t.Helper()
	cfg, err := t5.ConfigFromWeights(src, prefix)
	if err != nil {
		t.Fatal(err)
	}
	want := t5.Config{Vocab: 32128, Width: 32, Heads: 4, HeadDim: 16, FF: 64, Layers: 3, Buckets: 32, Gated: true}
	if cfg.Vocab != want.Vocab || cfg.Width != want.Width || cfg.Heads != want.Heads || cfg.HeadDim != want.HeadDim ||
		cfg.FF != want.FF || cfg.Layers != want.Layers || cfg.Buckets != want.Buckets || !cfg.Gated {
		t.Fatalf("config %v, want %v", cfg, want)
	}
	b := weights.NewBuilder(src, dev)
	root := b
	if prefix != "" {
		root = b.Sub(strings.TrimSuffix(prefix, "."))
	}
	m := t5.Load(root, cfg)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	if unused := b.Unused(prefix); len(unused) > 0 {
		t.Errorf("unused tensors: %v", unused)
	}
	return m
}

func TestBucketsMatchTransformers(t *testing.T) {
	f, _ := loadFixture(t)
	if len(f.Buckets) == 0 {
		t.Skip("fixture has no bucket table")
	}
	for i, want := range f.Buckets {
		rel := f.BucketFrom + i
		if got := t5.Bucket(rel, 32, t5.MaxDistance); got != want {
			t.Errorf("bucket(%d) = %d, want %d", rel, got, want)
		}
	}
}

// runCases encodes every fixture case on dev and returns the relative
// error of each against key(i).
func runCases(t *testing.T, dev backend.Device, m *t5.Encoder, f encoderFixture, ref map[string][]float32, key func(int) string) []float64 {
	t.Helper()
	var errs []float64
	for i, c := range f.Cases {
		var mask [][]int
		if c.Masked {
			mask = c.Mask
		}
		out, err := m.Forward(dev, c.IDs, mask)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		got, err := dev.Download(out)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		want, ok := ref[key(i)]
		if !ok {
			t.Fatalf("fixture has no %s", key(i))
		}
		for j, v := range got {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("case %d: element %d is %g", i, j, v)
			}
		}
		errs = append(errs, testref.RelErr(got, want))
	}
	return errs
}

func TestEncoderMatchesTransformers(t *testing.T) {
	f, ref := loadFixture(t)
	dev := cpu.New()
	m := load(t, openModel(t), "", dev)
	for i, e := range runCases(t, dev, m, f, ref, func(i int) string { return fmt.Sprintf("c%d/hidden", i) }) {
		c := f.Cases[i]
		desc := fmt.Sprintf("case %d (%d×%d tokens, masked %v)", i, len(c.IDs), len(c.IDs[0]), c.Masked)
		if e > 1e-4 {
			t.Errorf("%s: relative error %.3g > 1e-4", desc, e)
		} else {
			t.Logf("%s: relative error %.3g", desc, e)
		}
	}
}

// TestMaskMatters checks that the masked and unmasked runs of a padded
// prompt differ (the fixture would not tell them apart otherwise).
func TestMaskMatters(t *testing.T) {
	f, ref := loadFixture(t)
	_ = f
	if e := testref.RelErr(ref["c1/hidden"], ref["c2/hidden"]); e < 1e-3 {
		t.Fatalf("masked and unmasked references differ by only %.3g", e)
	}
}

// renamed serves a Source's tensors under other names.
type renamed struct {
	weights.Source
	to, from map[string]string
}

func rename(src weights.Source, f func(string) string) *renamed {
	r := &renamed{Source: src, to: map[string]string{}, from: map[string]string{}}
	for _, n := range src.Names() {
		r.to[n], r.from[f(n)] = f(n), n
	}
	return r
}

func (r *renamed) Names() []string {
	out := make([]string, 0, len(r.from))
	for n := range r.from {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (r *renamed) Info(name string) (weights.TensorInfo, bool) {
	n, ok := r.from[name]
	if !ok {
		return weights.TensorInfo{}, false
	}
	return r.Source.Info(n)
}

func (r *renamed) Raw(name string) ([]byte, error) {
	n, ok := r.from[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", name)
	}
	return r.Source.Raw(n)
}

func (r *renamed) Float32(name string) ([]float32, error) {
	n, ok := r.from[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", name)
	}
	return r.Source.Float32(n)
}

// TestLayouts loads the same weights under ComfyUI's full-checkpoint
// prefix and as a bare stack (block.*, embed_tokens.weight).
func TestLayouts(t *testing.T) {
	f, ref := loadFixture(t)
	dev := cpu.New()
	src := openModel(t)
	prefixed := rename(src, func(n string) string { return "text_encoders.t5xxl.transformer." + n })
	bare := rename(src, func(n string) string {
		if n == "shared.weight" {
			return "embed_tokens.weight"
		}
		return strings.TrimPrefix(n, "encoder.")
	})
	for name, c := range map[string]struct {
		src    weights.Source
		prefix string
	}{"comfy-prefix": {prefixed, "text_encoders.t5xxl.transformer."}, "bare-stack": {bare, ""}} {
		t.Run(name, func(t *testing.T) {
			m := load(t, c.src, c.prefix, dev)
			out, err := m.Forward(dev, f.Cases[0].IDs, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := dev.Download(out)
			if e := testref.RelErr(got, ref["c0/hidden"]); e > 1e-4 {
				t.Fatalf("relative error %.3g > 1e-4", e)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	f, _ := loadFixture(t)
	dev := cpu.New()
	src := openModel(t)
	// A file that is not a T5 encoder.
	other := rename(src, func(n string) string { return "model." + n })
	if _, err := t5.ConfigFromWeights(other, ""); err == nil || !strings.Contains(err.Error(), "not a T5 encoder") {
		t.Errorf("ConfigFromWeights of a non-T5 file: %v", err)
	}
	// A config that disagrees with the shapes: the builder names the tensor.
	cfg, err := t5.ConfigFromWeights(src, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.FF = 128
	b := weights.NewBuilder(src, dev)
	t5.Load(b, cfg)
	var mt *weights.MissingTensorsError
	if err := b.Err(); !errors.As(err, &mt) || !strings.Contains(err.Error(), "wi_0.weight") {
		t.Errorf("load with the wrong d_ff: %v", err)
	}
	m := load(t, src, "", dev)
	for name, c := range map[string]struct {
		ids, mask [][]int
		want      string
	}{
		"empty":      {nil, nil, "no tokens"},
		"ragged":     {[][]int{{1, 2, 3}, {1, 2}}, nil, "different lengths"},
		"id":         {[][]int{{5, 40000, 1}}, nil, "outside the vocabulary"},
		"negative":   {[][]int{{-1}}, nil, "outside the vocabulary"},
		"mask count": {f.Cases[0].IDs, [][]int{{1}, {1}}, "masks for"},
		"mask len":   {f.Cases[0].IDs, [][]int{{1, 1}}, "entries for"},
	} {
		if _, err := m.Forward(dev, c.ids, c.mask); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", name, err, c.want)
		}
	}
}

// TestEncoderCUDA runs the cases on the GPU in every precision: float32
// within the CPU tolerance, float16 and bfloat16 finite and close to
// transformers' float32 output (float16 also logged against transformers'
// own float16 run).
func TestEncoderCUDA(t *testing.T) {
	f, ref := loadFixture(t)
	for _, c := range []struct {
		prec tensor.DType
		tol  float64
	}{{tensor.F32, 1e-4}, {tensor.F16, 1e-2}, {tensor.BF16, 5e-2}} {
		t.Run(c.prec.String(), func(t *testing.T) {
			dev, err := cuda.Open(cuda.Options{Precision: c.prec})
			if errors.Is(err, cuda.ErrNoDevice) {
				t.Skipf("skipping: no GPU (%v)", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			m := load(t, openModel(t), "", dev)
			for i, e := range runCases(t, dev, m, f, ref, func(i int) string { return fmt.Sprintf("c%d/hidden", i) }) {
				if e > c.tol {
					t.Errorf("case %d: relative error %.3g > %g", i, e, c.tol)
				} else {
					t.Logf("case %d: relative error %.3g", i, e)
				}
			}
			if _, ok := ref["c0/fp16_cuda"]; ok && c.prec == tensor.F16 {
				for i, e := range runCases(t, dev, m, f, ref, func(i int) string { return fmt.Sprintf("c%d/fp16_cuda", i) }) {
					t.Logf("case %d: relative error %.3g against transformers in float16 on the GPU", i, e)
				}
			}
		})
	}
}

// scaled serves a Source with every feed-forward output weight (wo)
// multiplied by k, stored back in float16.
type scaled struct {
	weights.Source
	k float32
}

func (s scaled) Raw(name string) ([]byte, error) {
	raw, err := s.Source.Raw(name)
	if err != nil || !strings.HasSuffix(name, "DenseReluDense.wo.weight") {
		return raw, err
	}
	if info, _ := s.Info(name); info.DType != tensor.F16 {
		return nil, fmt.Errorf("%s is %v, not F16", name, info.DType)
	}
	out := make([]byte, len(raw))
	for i := 0; i+1 < len(raw); i += 2 {
		h := tensor.F16ToF32(uint16(raw[i]) | uint16(raw[i+1])<<8)
		v := tensor.F32ToF16(h * s.k)
		out[i], out[i+1] = byte(v), byte(v>>8)
	}
	return out, nil
}

// TestHalfOverflowStaysFinite makes the feed-forward outputs overflow
// float16 (wo ×30000: hidden states past 65504) and checks that the float16
// GPU path still returns finite hidden states, the clamp turning the
// overflow into ±Half16Limit before the next norm.
func TestHalfOverflowStaysFinite(t *testing.T) {
	f, _ := loadFixture(t)
	dev, err := cuda.Open(cuda.Options{Precision: tensor.F16})
	if errors.Is(err, cuda.ErrNoDevice) {
		t.Skipf("skipping: no GPU (%v)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	m := load(t, scaled{Source: openModel(t), k: 30000}, "", dev)
	c := f.Cases[3]
	out, err := m.Forward(dev, c.IDs, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dev.Download(out)
	if err != nil {
		t.Fatal(err)
	}
	var peak float64
	for i, v := range got {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("element %d is %g", i, v)
		}
		peak = max(peak, math.Abs(float64(v)))
	}
	t.Logf("finite; largest |hidden| after the final norm %.3g", peak)
}

// TestTimingXXL times the encoder at T5-XXL's width (4096, 64 heads of 64,
// d_ff 10240) over 512 tokens on the GPU, with random weights and the
// first n layers (DARKROOM_T5_TIMING=n; the real model has 24).
func TestTimingXXL(t *testing.T) {
	n := 0
	fmt.Sscan(os.Getenv("DARKROOM_T5_TIMING"), &n)
	if n <= 0 {
		t.Skip("set DARKROOM_T5_TIMING=<layers> to time the T5-XXL width on the GPU")
	}
	for _, prec := range []tensor.DType{tensor.BF16, tensor.F16} {
		t.Run(prec.String(), func(t *testing.T) {
			dev, err := cuda.Open(cuda.Options{Precision: prec})
			if errors.Is(err, cuda.ErrNoDevice) {
				t.Skipf("skipping: no GPU (%v)", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			c := t5.Config{Vocab: 32128, Width: 4096, Heads: 64, HeadDim: 64, FF: 10240, Layers: n, Buckets: 32,
				Gated: true, Stack: "encoder.", Embedding: "shared.weight"}
			m := t5.Load(weights.NewRandomBuilder(dev, 1), c)
			ids := make([]int, 512)
			for i := range ids {
				ids[i] = (i * 7919) % 32000
			}
			var best time.Duration
			for r := range 4 {
				start := time.Now()
				out, err := m.Forward(dev, [][]int{ids}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := dev.Sync(context.Background()); err != nil {
					t.Fatal(err)
				}
				d := time.Since(start)
				if r > 0 && (best == 0 || d < best) {
					best = d
				}
				v, _ := dev.Download(out)
				for _, x := range v {
					if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
						t.Fatalf("non-finite output %g", x)
					}
				}
				dev.Free(out)
			}
			t.Logf("%v, %d layers × 512 tokens: %v (%.1f ms per layer)", prec, n, best, float64(best.Microseconds())/1000/float64(n))
		})
	}
}

// halfCPU is the CPU backend claiming float16 storage, so that Forward
// takes its float16 path (the clamps) on float32 data.
type halfCPU struct{ backend.Device }

func (halfCPU) Precision() tensor.DType { return tensor.F16 }

// TestClampEngages shows, on the CPU, that the overflowing model of
// TestHalfOverflowStaysFinite does push hidden states past Half16Limit:
// with the float16 path's clamps the output changes, without them it is
// the float32 result.
func TestClampEngages(t *testing.T) {
	f, _ := loadFixture(t)
	dev := cpu.New()
	m := load(t, scaled{Source: openModel(t), k: 30000}, "", dev)
	ids := f.Cases[3].IDs
	run := func(d backend.Device) []float32 {
		out, err := m.Forward(d, ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, err := dev.Download(out)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	plain, clamped := run(dev), run(halfCPU{dev})
	e := testref.RelErr(clamped, plain)
	if e < 1e-3 {
		t.Fatalf("the clamps changed the output by only %.3g: the model does not overflow float16", e)
	}
	t.Logf("clamping at ±%d changes the output by %.3g (relative)", t5.Half16Limit, e)
}
