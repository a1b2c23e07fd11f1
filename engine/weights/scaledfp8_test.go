package weights

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// TestScaledFP8 reads a weight stored as ComfyUI's scaled fp8 files store
// it (fp8 e4m3fn "X.weight", a float32 scalar "X.scale_weight", a
// "scale_input" and the root "scaled_fp8" marker) as weight·scale, exactly,
// with nothing left unused; an unscaled fp8 weight is its fp8 values.
func TestScaledFP8(t *testing.T) {
	codes := []byte{0x38, 0xb8, 0x40, 0x01, 0x7e, 0x00} // 1, -1, 2, 2^-9, 448, 0
	f32 := func(v float32) []byte { return binary.LittleEndian.AppendUint32(nil, math.Float32bits(v)) }
	path := filepath.Join(t.TempDir(), "t5xxl_fp8_e4m3fn_scaled.safetensors")
	err := safetensors.Write(path, map[string]safetensors.Tensor{
		"encoder.block.0.layer.0.SelfAttention.q.weight":       {DType: tensor.F8E4M3, Shape: tensor.Shape{2, 3}, Data: codes},
		"encoder.block.0.layer.0.SelfAttention.q.scale_weight": {DType: tensor.F32, Shape: tensor.Shape{}, Data: f32(0.25)},
		"encoder.block.0.layer.0.SelfAttention.q.scale_input":  {DType: tensor.F32, Shape: tensor.Shape{}, Data: f32(1)},
		"encoder.block.0.layer.0.SelfAttention.k.weight":       {DType: tensor.F8E4M3, Shape: tensor.Shape{2, 3}, Data: codes},
		"scaled_fp8": {DType: tensor.F8E4M3, Shape: tensor.Shape{0}, Data: nil},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dev := cpu.New()
	b := NewBuilder(m, dev)
	q := b.Tensor("encoder.block.0.layer.0.SelfAttention.q.weight", 2, 3)
	k := b.Tensor("encoder.block.0.layer.0.SelfAttention.k.weight", 2, 3)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	want := []float32{1, -1, 2, 1.0 / 512, 448, 0}
	for name, c := range map[string]struct {
		got   *backend.Tensor
		scale float32
	}{"q": {q, 0.25}, "k": {k, 1}} {
		got, err := dev.Download(c.got)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if got[i] != want[i]*c.scale {
				t.Errorf("%s[%d] = %g, want %g", name, i, got[i], want[i]*c.scale)
			}
		}
	}
	if u := b.Unused(""); len(u) != 0 {
		t.Errorf("unused: %v", u)
	}
}
