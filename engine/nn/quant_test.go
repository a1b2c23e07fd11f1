package nn

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
)

// ggufLinear returns a GGUF file of one linear layer "l" [out, in] of
// type typ (random quants, finite scales at the given byte offsets) with
// an F32 bias.
func ggufLinear(t *testing.T, typ gguf.Type, scales []int, out, in int) *gguf.File {
	r := rand.New(rand.NewPCG(3, 4))
	n := out * in / typ.BlockSize()
	w := make([]byte, n*typ.TypeSize())
	for i := range w {
		w[i] = byte(r.Uint32())
	}
	for i := range n {
		for _, off := range scales {
			binary.LittleEndian.PutUint16(w[i*typ.TypeSize()+off:], uint16(0x1400+r.IntN(0x1000)))
		}
	}
	bias := make([]byte, 4*out)
	for i := range out {
		binary.LittleEndian.PutUint32(bias[4*i:], math.Float32bits(float32(r.NormFloat64())))
	}
	var buf bytes.Buffer
	if err := gguf.Encode(&buf, nil, []gguf.WriteTensor{
		{Name: "l.weight", Type: typ, Dims: []int64{int64(in), int64(out)}, Data: w},
		{Name: "l.bias", Type: gguf.F32, Dims: []int64{int64(out)}, Data: bias},
	}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.FromBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLinearKeptQuantized: a linear layer loaded from a GGUF Q4_K or Q8_0
// weight with Builder.KeepQuantized on the CPU keeps the weight's blocks
// (no float32 copy) and gives the same bits as the layer loaded the
// default way (dequantised to float32 at load).
func TestLinearKeptQuantized(t *testing.T) {
	dev := cpu.New()
	const in, out = 1024, 200
	for _, c := range []struct {
		typ    gguf.Type
		scales []int
	}{{gguf.Q4_K, []int{0, 2}}, {gguf.Q8_0, []int{0}}, {gguf.Q6_K, []int{208}}} {
		t.Run(c.typ.String(), func(t *testing.T) {
			f := ggufLinear(t, c.typ, c.scales, out, in)
			load := func(keep bool) *Linear {
				b := weights.NewBuilder(f, dev)
				b.KeepQuantized(keep)
				l := LoadLinear(b.Sub("l"), in, out, true)
				if err := b.Err(); err != nil {
					t.Fatal(err)
				}
				if u := b.Unused(""); len(u) != 0 {
					t.Fatalf("unused %v", u)
				}
				return l
			}
			dense, quant := load(false), load(true)
			if _, isF32 := quant.Weight.Buf.([]float32); isF32 {
				t.Fatal("KeepQuantized uploaded a float32 weight")
			}
			r := rand.New(rand.NewPCG(5, 6))
			xs := make([]float32, 9*in)
			for i := range xs {
				xs[i] = float32(r.NormFloat64())
			}
			x := dev.Upload(xs, 3, 3, in)
			want, got := cpu.Data(dense.Forward(dev, x)), cpu.Data(quant.Forward(dev, x))
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("output %d: %v kept quantised, %v dequantised at load", i, got[i], want[i])
				}
			}
		})
	}
}
