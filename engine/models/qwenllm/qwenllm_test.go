package qwenllm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// The fixtures come from tools/reference/gen_qwenllm_fixtures.py:
// transformers 5.17's Qwen3ForCausalLM and
// Qwen2_5_VLForConditionalGeneration (tiny random configs, F16-rounded
// weights), float32 on the CPU.

type fixture struct {
	Versions map[string]string `json:"versions"`
	Cases    []struct {
		IDs  [][]int `json:"ids"`
		Mask [][]int `json:"mask"`
	} `json:"cases"`
	Qwen3    struct{ Config json.RawMessage } `json:"qwen3"`
	Qwen25VL struct {
		Config json.RawMessage
		Diffs  []float64 `json:"text_model_vs_full_max_abs_diff"`
	} `json:"qwen25vl"`
}

func readFixture(t *testing.T) fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "qwenllm.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// openTiny opens a fixture model and infers its configuration from shapes.
func openTiny(t *testing.T, name string) (*safetensors.File, Config) {
	t.Helper()
	src, err := safetensors.Open(filepath.Join("testdata", name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	c, err := ConfigFromWeights(src, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return src, c
}

func readStates(t *testing.T, name string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, n := range f.Names() {
		v, err := f.Float32(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = v
	}
	return out
}

// valid keeps the rows [B·T, W] of the tokens the mask marks (all when nil).
func valid(x []float32, mask [][]int, T, W int) []float32 {
	if mask == nil {
		return x
	}
	var out []float32
	for b, row := range mask {
		for j, m := range row {
			if m != 0 {
				out = append(out, x[(b*T+j)*W:(b*T+j+1)*W]...)
			}
		}
	}
	return out
}

// TestAgainstTransformers compares every layer's output and every entry of
// transformers' hidden_states, on the valid tokens of every case, with
// transformers' float32 CPU run: ≤ 1e-4 relative.
func TestAgainstTransformers(t *testing.T) {
	fx := readFixture(t)
	dev := cpu.New()
	for _, a := range archs(fx) {
		t.Run(a.name, func(t *testing.T) {
			worst := compare(t, dev, fx, a, 1e-4)
			t.Logf("%s (transformers %s): worst relative error %.3g over %d cases", a.name, fx.Versions["transformers"], worst, len(fx.Cases))
		})
	}
	// The full Qwen2_5_VLForConditionalGeneration (its own multimodal
	// position ids) and its Qwen2_5_VLTextModel alone (1-D positions) agreed
	// exactly on the valid tokens when the fixture was made.
	for i, d := range fx.Qwen25VL.Diffs {
		if d != 0 {
			t.Errorf("case %d: transformers' full Qwen2.5-VL and its text model differ by %g", i, d)
		}
	}
}

// TestCUDA runs the same comparison on the GPU: float32 within the CPU
// tolerance, float16 ≤ 1e-2 and bfloat16 ≤ 5e-2 relative (storage
// rounding of every activation; float32 accumulation).
func TestCUDA(t *testing.T) {
	fx := readFixture(t)
	for _, p := range []struct {
		prec tensor.DType
		tol  float64
	}{{tensor.F32, 1e-4}, {tensor.F16, 1e-2}, {tensor.BF16, 5e-2}} {
		t.Run(p.prec.String(), func(t *testing.T) {
			dev, err := cuda.Open(cuda.Options{Precision: p.prec})
			if errors.Is(err, cuda.ErrNoDevice) {
				t.Skipf("skipping: no GPU (%v)", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			for _, a := range archs(fx) {
				worst := compare(t, dev, fx, a, p.tol)
				t.Logf("%s %v on %s: worst relative error %.3g", a.name, p.prec, dev.Name(), worst)
			}
		})
	}
}

// arch is one fixture model.
type arch struct {
	name string
	arch Arch
	cfg  json.RawMessage // nil: from shapes alone
}

func archs(fx fixture) []arch {
	return []arch{{"qwen3", Qwen3, nil}, {"qwen25vl", Qwen25VL, fx.Qwen25VL.Config}}
}

// compare loads a fixture model on dev and checks every case's layer
// outputs and hidden states against transformers within tol, returning the
// worst relative error.
func compare(t *testing.T, dev backend.Device, fx fixture, a arch, tol float64) float64 {
	t.Helper()
	src, err := safetensors.Open(filepath.Join("testdata", a.name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c, err := ConfigFromWeights(src, "", a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Arch: a.arch, Vocab: 512, Width: 64, Layers: 3, Heads: 4, KVHeads: 2, HeadDim: 16, FF: 96,
		Eps: 1e-6, Theta: 1e6, Stack: "model."}
	if c != want {
		t.Fatalf("config %+v, want %+v", c, want)
	}
	b := weights.NewBuilder(src, dev)
	m := Load(b, c)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	if u := b.Unused(""); len(u) > 0 {
		t.Fatalf("unused tensors %v", u)
	}
	ref := readStates(t, a.name+"_out.safetensors")
	worst := 0.0
	for i, cs := range fx.Cases {
		B, T, W := len(cs.IDs), len(cs.IDs[0]), c.Width
		check := func(what string, x *backend.Tensor, err error, key string) {
			t.Helper()
			got := download(t, dev, x, err)
			w, ok := ref[fmt.Sprintf("c%d/%s", i, key)]
			if !ok {
				t.Fatalf("fixture has no c%d/%s", i, key)
			}
			if len(got) != B*T*W || len(w) != B*T*W {
				t.Fatalf("case %d %s: %d values, fixture %d, want %d", i, what, len(got), len(w), B*T*W)
			}
			e := testref.RelErr(valid(got, cs.Mask, T, W), valid(w, cs.Mask, T, W))
			worst = max(worst, e)
			if !(e <= tol) {
				t.Errorf("%s case %d %s: relative error %.3g vs transformers %s, want ≤ %g", a.name, i, what, e, key, tol)
			}
		}
		for j := 1; j <= c.Layers; j++ {
			x, err := m.Forward(dev, cs.IDs, cs.Mask, j, false)
			check(fmt.Sprintf("layer %d output", j), x, err, fmt.Sprintf("layer%d", j))
		}
		for k := -(c.Layers + 1); k <= c.Layers; k++ {
			x, err := m.HiddenState(dev, cs.IDs, cs.Mask, k)
			check(fmt.Sprintf("hidden_states[%d]", k), x, err, fmt.Sprintf("hs%d", (k+c.Layers+1)%(c.Layers+1)))
		}
		x, err := m.Forward(dev, cs.IDs, cs.Mask, c.Layers, true)
		check("last_hidden_state", x, err, "last")
	}
	return worst
}

// TestBenchQwen3_4B times Z-Image's encoding (hidden_states[-2]) of a
// 512-token prompt by a Qwen3-4B of random weights in bfloat16 on the GPU
// (QWENLLM_BENCH=1; no comparison: the states are only checked finite).
func TestBenchQwen3_4B(t *testing.T) {
	if os.Getenv("QWENLLM_BENCH") == "" {
		t.Skip("set QWENLLM_BENCH=1 to time Qwen3-4B on the GPU")
	}
	dev, err := cuda.Open(cuda.Options{Precision: tensor.BF16})
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	defer dev.Close()
	c := Config{Arch: Qwen3, Vocab: 151936, Width: 2560, Layers: 36, Heads: 32, KVHeads: 8, HeadDim: 128, FF: 9728,
		Eps: 1e-6, Theta: 1e6, Stack: "model."}
	start := time.Now()
	m := Load(weights.NewRandomBuilder(dev, 7), c)
	if err := dev.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %v in %v", c, time.Since(start))
	ids := [][]int{make([]int, 512)}
	for i := range ids[0] {
		ids[0][i] = (i*7919 + 13) % c.Vocab
	}
	var times []time.Duration
	for range 4 {
		start := time.Now()
		x, err := m.HiddenState(dev, ids, nil, -2)
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(start))
		v, err := dev.Download(x)
		if err != nil {
			t.Fatal(err)
		}
		dev.Free(x)
		for _, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				t.Fatal("non-finite hidden state")
			}
		}
	}
	t.Logf("Qwen3-4B, 512 tokens, bf16, hidden_states[-2]: %v (first includes warm-up)", times)
}

// TestRealKeyLists loads the released files' key lists (ComfyUI's split
// text encoders and the diffusers folders' text_encoder/) through
// ConfigFromWeights and Load: no missing tensor, none unused but the
// vision tower and lm_head.
func TestRealKeyLists(t *testing.T) {
	qwen3 := Config{Arch: Qwen3, Vocab: 151936, Width: 2560, Layers: 36, Heads: 32, KVHeads: 8, HeadDim: 128, FF: 9728,
		Eps: 1e-6, Theta: 1e6, Stack: "model."}
	qwen25 := Config{Arch: Qwen25VL, Vocab: 152064, Width: 3584, Layers: 28, Heads: 28, KVHeads: 4, HeadDim: 128, FF: 18944,
		Eps: 1e-6, Theta: 1e6, Stack: "model."}
	for _, tc := range []struct {
		file, prefix string
		want         Config
	}{
		{"qwen3-4b.component", "", qwen3},
		{"qwen25-vl-7b.component", "", qwen25},
		{"zimage-turbo.diffusers", "text_encoder.", qwen3},
		{"qwen-image.diffusers", "text_encoder.", qwen25},
	} {
		t.Run(tc.file, func(t *testing.T) {
			kl, err := weights.ReadKeyList(filepath.Join("..", "..", "..", "testdata", "keyshapes", tc.file+".json.gz"))
			if err != nil {
				t.Fatal(err)
			}
			src, err := kl.Open()
			if err != nil {
				t.Fatal(err)
			}
			c, err := ConfigFromWeights(src, tc.prefix, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c != tc.want {
				t.Fatalf("config %v, want %v", c, tc.want)
			}
			b := weights.NewBuilder(src, testref.ShapeDevice{})
			Load(b.Sub(strings.TrimSuffix(tc.prefix, ".")), c)
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			var unused, ignored []string
			for _, n := range b.Unused(tc.prefix) {
				if Ignored(strings.TrimPrefix(n, tc.prefix)) {
					ignored = append(ignored, n)
				} else {
					unused = append(unused, n)
				}
			}
			if len(unused) > 0 {
				t.Fatalf("%d unused tensors: %v", len(unused), unused[:min(5, len(unused))])
			}
			t.Logf("%v; %d tensors not read (vision tower, lm_head)", c, len(ignored))
		})
	}
}

func TestConfigJSON(t *testing.T) {
	src, err := safetensors.Open(filepath.Join("testdata", "qwen25vl.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := ConfigFromWeights(src, "", nil); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("tiny Qwen2.5 without config.json: %v, want an error asking for it", err)
	}
	c, err := ConfigFromWeights(src, "", []byte(`{"text_config": {"head_dim": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 32 || c.Heads != 2 || c.KVHeads != 1 || c.Eps != 1e-5 || c.Theta != 1e4 {
		t.Errorf("config %v: want head 32 (2 heads, 1 key/value), eps 1e-5, theta 1e4", c)
	}
	if _, err := ConfigFromWeights(src, "", []byte(`{`)); err == nil {
		t.Error("broken config.json accepted")
	}
}

func TestBadInput(t *testing.T) {
	src, c := openTiny(t, "qwen3")
	dev := cpu.New()
	m := Load(weights.NewBuilder(src, dev), c)
	for _, tc := range []struct {
		name      string
		ids, mask [][]int
		index     int
		want      string
	}{
		{"empty", nil, nil, -1, "no tokens"},
		{"ragged", [][]int{{1, 2}, {3}}, nil, -1, "different lengths"},
		{"vocab", [][]int{{1, 512}}, nil, -1, "outside the vocabulary"},
		{"left padding", [][]int{{0, 1, 2}}, [][]int{{0, 1, 1}}, -1, "right padding"},
		{"mask count", [][]int{{1}}, [][]int{{1}, {1}}, -1, "masks for"},
		{"index", [][]int{{1}}, nil, 4, "out of range"},
		{"index low", [][]int{{1}}, nil, -5, "out of range"},
	} {
		_, err := m.HiddenState(dev, tc.ids, tc.mask, tc.index)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, err := ConfigFromWeights(src, "nope.", nil); err == nil || !strings.Contains(err.Error(), "not a Qwen") {
		t.Errorf("wrong prefix: %v", err)
	}
}

// TestFixtureSensitivity shows the comparison can fail: a RoPE base of
// 1e4 instead of 1e6, or no q/k norms, is far outside the tolerance.
func TestFixtureSensitivity(t *testing.T) {
	fx := readFixture(t)
	src, c := openTiny(t, "qwen3")
	dev := cpu.New()
	ref := readStates(t, "qwen3_out.safetensors")
	cs := fx.Cases[1]
	for _, tc := range []struct {
		name   string
		change func(*Model)
	}{
		{"theta 1e4", func(m *Model) { m.Config.Theta = 1e4 }},
		{"no q/k norm", func(m *Model) {
			for i := range m.layers {
				m.layers[i].qNorm, m.layers[i].kNorm = nil, nil
			}
		}},
	} {
		m := Load(weights.NewBuilder(src, dev), c)
		tc.change(m)
		if e := testref.RelErr(hidden(t, dev, m, cs.IDs, cs.Mask, -1), ref["c1/last"]); !(e > 1e-2) {
			t.Errorf("%s: relative error %.3g, want > 1e-2", tc.name, e)
		}
	}
}

// hidden returns HiddenState(index) on the host.
func hidden(t *testing.T, dev backend.Device, m *Model, ids, mask [][]int, index int) []float32 {
	t.Helper()
	x, err := m.HiddenState(dev, ids, mask, index)
	return download(t, dev, x, err)
}

// download copies a forward pass's result (failing on its error) to the
// host and frees it.
func download(t *testing.T, dev backend.Device, x *backend.Tensor, err error) []float32 {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	v, err := dev.Download(x)
	if err != nil {
		t.Fatal(err)
	}
	dev.Free(x)
	return v
}

// renamed serves a Source under names mapped by to (and back by from).
type renamed struct {
	weights.Source
	to, from func(string) string
}

func (r renamed) Names() []string {
	var out []string
	for _, n := range r.Source.Names() {
		out = append(out, r.to(n))
	}
	slices.Sort(out)
	return out
}
func (r renamed) Info(n string) (weights.TensorInfo, bool) { return r.Source.Info(r.from(n)) }
func (r renamed) Raw(n string) ([]byte, error)             { return r.Source.Raw(r.from(n)) }
func (r renamed) Float32(n string) ([]float32, error)      { return r.Source.Float32(r.from(n)) }

// TestLayouts loads the Qwen3 fixture as a bare stack (no "model.") and
// under a root prefix, and checks the states are unchanged.
func TestLayouts(t *testing.T) {
	fx := readFixture(t)
	src, c := openTiny(t, "qwen3")
	dev := cpu.New()
	ref := readStates(t, "qwen3_out.safetensors")
	cs := fx.Cases[0]
	for _, tc := range []struct {
		name, prefix, stack string
		src                 weights.Source
	}{
		{"bare stack", "", "", renamed{src, func(n string) string { return strings.TrimPrefix(n, "model.") },
			func(n string) string { return "model." + n }}},
		{"root prefix", "text_encoders.qwen3_4b.transformer.", "model.", renamed{src,
			func(n string) string { return "text_encoders.qwen3_4b.transformer." + n },
			func(n string) string { return strings.TrimPrefix(n, "text_encoders.qwen3_4b.transformer.") }}},
	} {
		got, err := ConfigFromWeights(tc.src, tc.prefix, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		want := c
		want.Stack = tc.stack
		if got != want {
			t.Fatalf("%s: config %+v, want %+v", tc.name, got, want)
		}
		b := weights.NewBuilder(tc.src, dev)
		m := Load(b.Sub(strings.TrimSuffix(tc.prefix, ".")), got)
		if err := b.Err(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if u := b.Unused(""); len(u) > 0 {
			t.Fatalf("%s: unused %v", tc.name, u)
		}
		if e := testref.RelErr(hidden(t, dev, m, cs.IDs, cs.Mask, -2), ref["c0/hs2"]); !(e <= 1e-4) {
			t.Errorf("%s: relative error %.3g", tc.name, e)
		}
	}
}
