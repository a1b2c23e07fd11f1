package weights_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/t5"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// t5ToGGUF writes the tiny T5 encoder as llama.cpp's converter and
// llama-quantize would for a Q8_0 file: llama.cpp names, one token
// embedding (kept F16 here), 1-D tensors F32, the relative attention bias
// as stored, every other matrix Q8_0 (QuantizeQ8_0, ggml's quantiser).
func t5ToGGUF(t *testing.T, st *safetensors.File, path string) {
	var tensors []gguf.WriteTensor
	for _, name := range st.Names() {
		stored, ok := gguf.T5StoredName(name)
		if !ok {
			continue // encoder.embed_tokens.weight: the copy of shared
		}
		info, _ := st.Info(name)
		dims := make([]int64, len(info.Shape))
		for i, d := range info.Shape {
			dims[len(dims)-1-i] = int64(d)
		}
		raw, _ := st.Raw(name)
		wt := gguf.WriteTensor{Name: stored, Type: gguf.F16, Dims: dims, Data: raw}
		v, err := st.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(dims) == 1:
			wt.Type, wt.Data = gguf.F32, float32Bytes(v)
		case stored != "token_embd.weight" && !strings.HasSuffix(stored, ".attn_rel_b.weight") && dims[0]%32 == 0:
			wt.Type, wt.Data = gguf.Q8_0, make([]byte, len(v)/32*34)
			if err := gguf.QuantizeQ8_0(v, wt.Data); err != nil {
				t.Fatal(err)
			}
		}
		tensors = append(tensors, wt)
	}
	var buf bytes.Buffer
	kv := []gguf.KeyValue{{Key: "general.architecture", Value: gguf.Value{Type: gguf.TypeString, V: "t5encoder"}}}
	if err := gguf.Encode(&buf, kv, tensors); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func float32Bytes(v []float32) []byte {
	out := make([]byte, 0, 4*len(v))
	for _, x := range v {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
	}
	return out
}

// TestT5TinyQ8_0 runs the tiny T5 encoder (tools/reference/gen_t5_fixtures.py)
// from a GGUF Q8_0 file in llama.cpp's names: the file opens under
// transformers' names with no missing or unused tensor, the encoder kept
// quantised on the CPU (Builder.KeepQuantized) gives the same bits as the
// one dequantised at load, and both stay within Q8_0's error of the F16
// safetensors model.
func TestT5TinyQ8_0(t *testing.T) {
	if !testref.Exists("t5-tiny", "model.safetensors") {
		t.Skip("testdata/reference/t5-tiny absent: make it with tools/reference/gen_t5_fixtures.py")
	}
	st, err := safetensors.Open(testref.Path("t5-tiny", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	path := filepath.Join(t.TempDir(), "t5-tiny-Q8_0.gguf")
	t5ToGGUF(t, st, path)
	gf, err := weights.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()

	var fx struct {
		Cases []struct {
			IDs    [][]int `json:"ids"`
			Mask   [][]int `json:"mask"`
			Masked bool    `json:"masked"`
		} `json:"cases"`
	}
	b, err := os.ReadFile(testref.Path("t5-tiny", "encoder.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	dev := cpu.New()
	encoder := func(src weights.Source, keep bool) *t5.Encoder {
		cfg, err := t5.ConfigFromWeights(src, "")
		if err != nil {
			t.Fatal(err)
		}
		bl := weights.NewBuilder(src, dev)
		bl.KeepQuantized(keep)
		m := t5.Load(bl, cfg)
		if err := bl.Err(); err != nil {
			t.Fatal(err)
		}
		if u := bl.Unused(""); len(u) > 0 && !(len(u) == 1 && u[0] == "encoder.embed_tokens.weight") {
			t.Fatalf("unused %v", u)
		}
		return m
	}
	ref, atLoad, kept := encoder(st, false), encoder(gf, false), encoder(gf, true)
	worst := 0.0
	for i, c := range fx.Cases {
		var mask [][]int
		if c.Masked {
			mask = c.Mask
		}
		run := func(m *t5.Encoder) []float32 {
			y, err := m.Forward(dev, c.IDs, mask)
			if err != nil {
				t.Fatal(err)
			}
			return cpu.Data(y)
		}
		want, a, k := run(ref), run(atLoad), run(kept)
		for j := range a {
			if math.Float32bits(a[j]) != math.Float32bits(k[j]) {
				t.Fatalf("case %d, value %d: %v kept quantised, %v dequantised at load", i, j, k[j], a[j])
			}
		}
		e := testref.RelErr(a, want)
		worst = max(worst, e)
		t.Logf("case %d: Q8_0 vs F16 relative error %.2e", i, e)
	}
	// Q8_0 rounds each weight to 1/254 of its block's largest magnitude:
	// about 0.5% relative error per Gaussian matrix (checked below); the
	// 21 quantised products of the three blocks add up to about
	// √21·0.5% ≈ 2.4% at the output.
	if worst > 5e-2 {
		t.Errorf("Q8_0 encoder differs from the F16 one by %.2e (relative), more than the 5e-2 its weights' error allows", worst)
	}
	for _, n := range gf.Names() {
		if info, _ := gf.Info(n); len(info.Shape) != 2 || n == "shared.weight" {
			continue
		}
		q, _ := gf.Float32(n)
		w, _ := st.Float32(n)
		if e := testref.RelErr(q, w); e > 6e-3 {
			t.Errorf("%s: Q8_0 weight relative error %.2e, want ≤ 6e-3", n, e)
		}
	}
}
