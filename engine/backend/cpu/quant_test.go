package cpu

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
)

// scaleFields are the byte offsets of each block type's half scales
// (Q8_K's float32 scale at 0 is set apart).
var scaleFields = map[gguf.Type][]int{
	gguf.Q4_0: {0}, gguf.Q4_1: {0, 2}, gguf.Q5_0: {0}, gguf.Q5_1: {0, 2}, gguf.Q8_0: {0},
	gguf.Q2_K: {80, 82}, gguf.Q3_K: {108}, gguf.Q4_K: {0, 2}, gguf.Q5_K: {0, 2}, gguf.Q6_K: {208},
}

// randomBlocks returns n blocks of type t: random quants and finite
// scales of magnitude 2^-10..2^-6.
func randomBlocks(r *rand.Rand, t gguf.Type, n int) []byte {
	b := make([]byte, n*t.TypeSize())
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	for i := range n {
		blk := b[i*t.TypeSize():]
		if t == gguf.Q8_K {
			binary.LittleEndian.PutUint32(blk, math.Float32bits(float32(r.NormFloat64()*0.01)))
			continue
		}
		for _, off := range scaleFields[t] {
			h := uint16(0x1400+r.IntN(0x1000)) | uint16(r.IntN(2))<<15 // ±2^-10..2^-6
			binary.LittleEndian.PutUint16(blk[off:], h)
		}
	}
	return b
}

// TestQuantizedLinear: a Linear (and LinearAdd) whose weight is kept
// block-quantised gives the same bits as the Linear of the weight
// dequantised to float32 at load, for every block type, with and without
// bias, over several tiles of weight rows.
func TestQuantizedLinear(t *testing.T) {
	d := New()
	r := rand.New(rand.NewPCG(1, 2))
	const in, out = 512, 300
	// Tiles of 128 rows: three tiles, the last partial.
	defer func(b int) { quantTileBytes = b }(quantTileBytes)
	quantTileBytes = 128 * in * 4
	for _, typ := range []gguf.Type{gguf.Q4_0, gguf.Q4_1, gguf.Q5_0, gguf.Q5_1, gguf.Q8_0, gguf.Q2_K, gguf.Q3_K, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K, gguf.Q8_K} {
		t.Run(typ.String(), func(t *testing.T) {
			blocks := randomBlocks(r, typ, out*in/typ.BlockSize())
			dense := make([]float32, out*in)
			if err := gguf.Dequantize(typ, blocks, dense); err != nil {
				t.Fatal(err)
			}
			qw, err := d.UploadQuantized(backend.QuantizedWeight{
				Type: typ.String(), Blocks: blocks, RowBytes: in / typ.BlockSize() * typ.TypeSize(),
				Dequantize: func(src []byte, dst []float32) error { return gguf.Dequantize(typ, src, dst) },
			}, out, in)
			if err != nil {
				t.Fatal(err)
			}
			w := d.Upload(dense, out, in)
			bias := make([]float32, out)
			for i := range bias {
				bias[i] = float32(r.NormFloat64())
			}
			b := d.Upload(bias, out)
			for _, rows := range []int{1, 7, 70} {
				xs := make([]float32, rows*in)
				for i := range xs {
					xs[i] = float32(r.NormFloat64())
				}
				x := d.Upload(xs, rows, in)
				for _, bb := range []*backend.Tensor{nil, b} {
					want, got := d.Alloc(rows, out), d.Alloc(rows, out)
					d.Linear(want, x, w, bb)
					d.Linear(got, x, qw, bb)
					sameBits(t, Data(got), Data(want))
					res := d.Upload(Data(want), rows, out)
					d.LinearAdd(res, x, qw, bb, res)
					d.LinearAdd(want, x, w, bb, want)
					sameBits(t, Data(res), Data(want))
				}
			}
		})
	}
}

func sameBits(t *testing.T, got, want []float32) {
	t.Helper()
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("element %d: %v, the float32 weight gives %v", i, got[i], want[i])
		}
	}
}

func TestQuantizedWeightRefusedElsewhere(t *testing.T) {
	d := New()
	qw, err := d.UploadQuantized(backend.QuantizedWeight{Type: "Q8_0", Blocks: make([]byte, 34), RowBytes: 34,
		Dequantize: func(src []byte, dst []float32) error { return gguf.Dequantize(gguf.Q8_0, src, dst) }}, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("Download of a quantised weight did not panic")
		}
	}()
	_, _ = d.Download(qw)
}

// BenchmarkQuantizedLinear times a 4096→4096 linear layer on 256 tokens
// with its weight as float32 and kept as Q8_0 or Q4_K blocks.
func BenchmarkQuantizedLinear(b *testing.B) {
	d := New()
	r := rand.New(rand.NewPCG(7, 8))
	const rows, in, out = 256, 4096, 4096
	xs := make([]float32, rows*in)
	for i := range xs {
		xs[i] = float32(r.NormFloat64())
	}
	x := d.Upload(xs, rows, in)
	y := d.Alloc(rows, out)
	for _, typ := range []gguf.Type{gguf.F32, gguf.Q8_0, gguf.Q4_K} {
		var w *backend.Tensor
		if typ == gguf.F32 {
			v := make([]float32, out*in)
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			w = d.Upload(v, out, in)
		} else {
			blocks := randomBlocks(r, typ, out*in/typ.BlockSize())
			var err error
			w, err = d.UploadQuantized(backend.QuantizedWeight{
				Type: typ.String(), Blocks: blocks, RowBytes: in / typ.BlockSize() * typ.TypeSize(),
				Dequantize: func(src []byte, dst []float32) error { return gguf.Dequantize(typ, src, dst) },
			}, out, in)
			if err != nil {
				b.Fatal(err)
			}
		}
		b.Run(typ.String(), func(b *testing.B) {
			for b.Loop() {
				d.Linear(y, x, w, nil)
			}
		})
	}
}
