package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// QuantizeQ8_0 quantises src (a whole number of 32-value blocks) to Q8_0
// blocks in dst (34 bytes each) as ggml's quantize_row_q8_0_ref does: per
// block d = max|x| / 127 (stored as a half), quants round(x / d) with
// halves rounded away from zero. For writing GGUF files and fixtures.
func QuantizeQ8_0(src []float32, dst []byte) error {
	if len(src)%32 != 0 || len(dst) != len(src)/32*34 {
		return fmt.Errorf("Q8_0: %d values and %d bytes are not whole blocks of 32 values in 34 bytes", len(src), len(dst))
	}
	for i := range len(src) / 32 {
		x, y := src[32*i:32*i+32], dst[34*i:34*i+34]
		var amax float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); !(amax > a) { // ggml's MAX(amax, fabsf(v))
				amax = a
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(y, tensor.F32ToF16(d))
		for j, v := range x {
			y[2+j] = byte(int8(math.Round(float64(v * id))))
		}
	}
	return nil
}
