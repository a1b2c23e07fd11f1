package cpu

import (
	"fmt"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu/gemm"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// quantTileBytes bounds the float32 scratch of one tile of dequantised
// weight rows (16 MiB: 1024 rows of a 4096-wide layer; a variable for the
// tests of several tiles). Smaller tiles cost
// time: each tile is one gemm.Sgemm, which packs the activations again and
// runs narrow (measured on a 4096² layer of 256 tokens: 1 MiB tiles 1.4×
// and 4 MiB 1.5× the float32 weight's time, 16 MiB on par).
var quantTileBytes = 16 << 20

// quantScratch holds the tiles' scratch buffers, shared by every
// quantised weight (at most one per concurrent product).
var quantScratch sync.Pool

// quantWeight is a weight [out, in] kept block-quantised; Linear
// dequantises it tileRows rows at a time into a scratch tile
// (quantScratch) and multiplies with the tile.
type quantWeight struct {
	backend.QuantizedWeight
	out, in  int
	tileRows int
}

var _ backend.QuantizedUploader = (*Device)(nil)

// UploadQuantized keeps q as stored (no copy of its blocks) as a weight
// [out, in] that Linear and LinearAdd dequantise tile by tile; a CPU
// model's quantised weights then take their file size in memory, not
// four bytes per value. Any other op given it panics naming it.
func (d *Device) UploadQuantized(q backend.QuantizedWeight, out, in int) (*backend.Tensor, error) {
	if out <= 0 || in <= 0 || q.RowBytes <= 0 || len(q.Blocks) != out*q.RowBytes || q.Dequantize == nil {
		return nil, fmt.Errorf("cpu: a %s weight [%d %d] of %d bytes in rows of %d", q.Type, out, in, len(q.Blocks), q.RowBytes)
	}
	tile := max(1, min(out, quantTileBytes/(4*in)))
	qw := &quantWeight{QuantizedWeight: q, out: out, in: in, tileRows: tile}
	return &backend.Tensor{Shape: tensor.Shape{out, in}, DType: tensor.F32, Buf: qw}, nil
}

// linear computes c[rows, out] = x[rows, in]·wᵀ + beta·c one tile of
// weight rows (output columns) after another: each tile is dequantised
// once into a scratch buffer and multiplied with every row of x (the
// product itself spread over the threads by gemm.Sgemm).
func (q *quantWeight) linear(rows, out, in int, x []float32, beta float32, c []float32) {
	need := min(q.tileRows, out) * in
	sp, _ := quantScratch.Get().(*[]float32)
	if sp == nil || cap(*sp) < need {
		s := make([]float32, need)
		sp = &s
	}
	defer quantScratch.Put(sp)
	for lo := 0; lo < out; lo += q.tileRows {
		n := min(q.tileRows, out-lo)
		tile := (*sp)[:n*in]
		if err := q.Dequantize(q.Blocks[lo*q.RowBytes:(lo+n)*q.RowBytes], tile); err != nil {
			panic(fmt.Sprintf("cpu linear: dequantise %s weight: %v", q.Type, err))
		}
		gemm.Sgemm(false, true, rows, n, in, 1, x, in, tile, in, beta, c[lo:], out)
	}
}
