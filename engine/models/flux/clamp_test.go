package flux_test

import (
	"context"
	"encoding/binary"
	"math"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// half is the CPU device claiming float16 storage, so that the model takes
// its float16 path (the clamps) while computing in float32.
type half struct{ backend.Device }

func (half) Precision() tensor.DType { return tensor.F16 }

// TestClampEngages blows the text stream of the first double block past
// ±65504 (its ff_context output ×1e6) and checks that the float16 path
// clamps it: the outputs stay finite and differ from the unclamped float32
// path's.
func TestClampEngages(t *testing.T) {
	cases, ref := loadCases(t)
	src := open(t, "dev")
	m := &memSource{info: map[string]weights.TensorInfo{}, raw: map[string][]byte{}}
	for _, n := range src.Names() {
		info, _ := src.Info(n)
		v, err := src.Float32(n)
		if err != nil {
			t.Fatal(err)
		}
		if n == "transformer_blocks.0.ff_context.net.2.weight" || n == "transformer_blocks.0.ff_context.net.2.bias" {
			for i := range v {
				v[i] *= 1e6
			}
		}
		raw := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
		}
		m.info[n] = weights.TensorInfo{Name: n, DType: tensor.F32, Shape: info.Shape, Size: int64(len(raw))}
		m.raw[n] = raw
	}
	c := cases[0]
	outs := map[string][]float32{}
	for name, dev := range map[string]backend.Device{"f32": cpu.New(), "f16": half{cpu.New()}} {
		model := load(t, m, dev, true)
		n := c.H / 2 * c.W / 2
		img := dev.Upload(ref[c.Name+"/hidden_states"], c.Batch, n, 64)
		txt := dev.Upload(ref[c.Name+"/encoder_hidden_states"], c.Batch, c.TextTokens, 32)
		pooled := dev.Upload(ref[c.Name+"/pooled"], c.Batch, 24)
		out, err := model.Forward(context.Background(), dev, img, txt, pooled, c.Timesteps, c.Guidance,
			ids(ref[c.Name+"/img_ids"]), ids(ref[c.Name+"/txt_ids"]))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := dev.Download(out)
		for i, x := range got {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("%s: element %d is %g", name, i, x)
			}
		}
		outs[name] = got
	}
	e := testref.RelErr(outs["f16"], outs["f32"])
	if e < 1e-3 {
		t.Fatalf("clamped and unclamped outputs differ by only %.3g: the clamp did not engage", e)
	}
	t.Logf("the float16 path's clamps change the output by %.3g", e)
}
