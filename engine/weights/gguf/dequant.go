package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// The dequantisers below follow ggml-quants.c's dequantize_row_* (and
// ggml-impl.h's half and bfloat16 conversions) operation for operation,
// so that every output is the float32 ggml computes, bit for bit: each
// product and sum is rounded to float32 in ggml's order, and the explicit
// float32 conversions keep the compiler from fusing a multiply and an add
// (which would round once instead of twice).

// half converts the IEEE binary16 at b[0:2] as ggml's
// GGML_FP16_TO_FP32 does: exactly, a NaN coming back quiet (ggml computes
// the conversion with a float multiply, which quiets a signalling NaN).
func half(b []byte) float32 {
	h := binary.LittleEndian.Uint16(b)
	f := tensor.F16ToF32(h)
	if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
		f = math.Float32frombits(math.Float32bits(f) | 1<<22)
	}
	return f
}

// blockFunc dequantises one block of src into dst (one block of elements).
type blockFunc func(src []byte, dst []float32)

var blockFuncs = map[Type]blockFunc{
	F32: func(b []byte, y []float32) { y[0] = math.Float32frombits(binary.LittleEndian.Uint32(b)) },
	F16: func(b []byte, y []float32) { y[0] = half(b) },
	BF16: func(b []byte, y []float32) {
		y[0] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16)
	},
	Q4_0: dequantQ4_0, Q4_1: dequantQ4_1, Q5_0: dequantQ5_0, Q5_1: dequantQ5_1, Q8_0: dequantQ8_0,
	Q2_K: dequantQ2K, Q3_K: dequantQ3K, Q4_K: dequantQ4K, Q5_K: dequantQ5K, Q6_K: dequantQ6K, Q8_K: dequantQ8K,
}

// parallelMin is the element count from which Dequantize splits the work
// over goroutines.
const parallelMin = 1 << 18

// Dequantize converts src, a whole number of blocks of type t, to float32
// in dst, which must hold exactly the blocks' elements. Large inputs are
// converted by several goroutines.
func Dequantize(t Type, src []byte, dst []float32) error {
	fn, ok := blockFuncs[t]
	if !ok {
		return fmt.Errorf("ggml type %s cannot be dequantised (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)", t)
	}
	bs, ts := t.BlockSize(), t.TypeSize()
	if len(src)%ts != 0 || len(src)/ts*bs != len(dst) {
		return fmt.Errorf("%d bytes of %s (blocks of %d bytes, %d elements) do not make %d elements", len(src), t, ts, bs, len(dst))
	}
	blocks := len(src) / ts
	run := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			fn(src[i*ts:(i+1)*ts], dst[i*bs:(i+1)*bs])
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(dst)/parallelMin)
	if workers <= 1 {
		run(0, blocks)
		return nil
	}
	var wg sync.WaitGroup
	per := (blocks + workers - 1) / workers
	for lo := 0; lo < blocks; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			run(lo, hi)
		}(lo, min(lo+per, blocks))
	}
	wg.Wait()
	return nil
}

// DequantizeBytes is Dequantize writing little-endian float32 bytes:
// dst must hold 4 bytes per element.
func DequantizeBytes(t Type, src, dst []byte) error {
	if len(dst)%4 != 0 {
		return fmt.Errorf("output of %d bytes is not a whole number of float32", len(dst))
	}
	if len(dst) == 0 {
		return Dequantize(t, src, nil)
	}
	if littleEndian && uintptr(unsafe.Pointer(&dst[0]))%4 == 0 {
		return Dequantize(t, src, unsafe.Slice((*float32)(unsafe.Pointer(&dst[0])), len(dst)/4))
	}
	f := make([]float32, len(dst)/4)
	if err := Dequantize(t, src, f); err != nil {
		return err
	}
	for i, v := range f {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
	return nil
}

// littleEndian is true on little-endian hosts, where a float32 slice's
// memory is its little-endian bytes.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// block_q4_0: d (half), qs[16]: element j is low nibble - 8, j+16 the high one.
func dequantQ4_0(b []byte, y []float32) {
	d := half(b)
	qs := b[2:18]
	for j := range 16 {
		y[j] = float32(int(qs[j]&0x0f)-8) * d
		y[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

// block_q4_1: d, m (halves), qs[16]: x·d + m.
func dequantQ4_1(b []byte, y []float32) {
	d, m := half(b), half(b[2:])
	qs := b[4:20]
	for j := range 16 {
		y[j] = float32(float32(qs[j]&0x0f)*d) + m
		y[j+16] = float32(float32(qs[j]>>4)*d) + m
	}
}

// block_q5_0: d, qh (uint32 of fifth bits), qs[16].
func dequantQ5_0(b []byte, y []float32) {
	d := half(b)
	qh := binary.LittleEndian.Uint32(b[2:])
	qs := b[6:22]
	for j := range 16 {
		xh0 := uint8((qh>>uint(j))<<4) & 0x10
		xh1 := uint8(qh>>uint(j+12)) & 0x10
		y[j] = float32(int32(qs[j]&0x0f|xh0)-16) * d
		y[j+16] = float32(int32(qs[j]>>4|xh1)-16) * d
	}
}

// block_q5_1: d, m, qh, qs[16].
func dequantQ5_1(b []byte, y []float32) {
	d, m := half(b), half(b[2:])
	qh := binary.LittleEndian.Uint32(b[4:])
	qs := b[8:24]
	for j := range 16 {
		xh0 := uint8((qh>>uint(j))<<4) & 0x10
		xh1 := uint8(qh>>uint(j+12)) & 0x10
		y[j] = float32(float32(qs[j]&0x0f|xh0)*d) + m
		y[j+16] = float32(float32(qs[j]>>4|xh1)*d) + m
	}
}

// block_q8_0: d, qs[32] int8.
func dequantQ8_0(b []byte, y []float32) {
	d := half(b)
	for j := range 32 {
		y[j] = float32(int8(b[2+j])) * d
	}
}

// block_q2_K: scales[16], qs[64], d, dmin.
func dequantQ2K(b []byte, y []float32) {
	scales, q := b[0:16], b[16:80]
	d, dmin := half(b[80:]), half(b[82:])
	is, o := 0, 0
	for n := 0; n < 256; n += 128 {
		shift := uint(0)
		for range 4 {
			sc := scales[is]
			is++
			dl, ml := d*float32(sc&0xf), dmin*float32(sc>>4)
			for l := range 16 {
				y[o] = float32(dl*float32(int8((q[l]>>shift)&3))) - ml
				o++
			}
			sc = scales[is]
			is++
			dl, ml = d*float32(sc&0xf), dmin*float32(sc>>4)
			for l := range 16 {
				y[o] = float32(dl*float32(int8((q[l+16]>>shift)&3))) - ml
				o++
			}
			shift += 2
		}
		q = q[32:]
	}
}

// block_q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales), d.
func dequantQ3K(b []byte, y []float32) {
	hm, q, sb := b[0:32], b[32:96], b[96:108]
	dAll := half(b[108:])
	const kmask1, kmask2 = 0x03030303, 0x0f0f0f0f
	var aux [4]uint32
	for i := range 3 {
		aux[i] = binary.LittleEndian.Uint32(sb[4*i:])
	}
	tmp := aux[2]
	aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
	aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
	aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4)
	aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4)
	var scales [16]int8
	for i := range 16 {
		scales[i] = int8(aux[i/4] >> (8 * uint(i%4)))
	}
	is, o := 0, 0
	m := uint8(1)
	for n := 0; n < 256; n += 128 {
		shift := uint(0)
		for range 4 {
			for h := range 2 {
				dl := dAll * float32(int(scales[is])-32)
				is++
				for l := 16 * h; l < 16*h+16; l++ {
					v := int(int8((q[l] >> shift) & 3))
					if hm[l]&m == 0 {
						v -= 4
					}
					y[o] = dl * float32(v)
					o++
				}
			}
			shift += 2
			m <<= 1
		}
		q = q[32:]
	}
}

// scaleMinK4 unpacks the j-th 6-bit scale and min of a Q4_K/Q5_K block.
func scaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xf) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)
}

// block_q4_K: d, dmin, scales[12], qs[128].
func dequantQ4K(b []byte, y []float32) {
	d, dmin := half(b), half(b[2:])
	scales, q := b[4:16], b[16:144]
	is, o := 0, 0
	for j := 0; j < 256; j += 64 {
		sc, m := scaleMinK4(is, scales)
		d1, m1 := d*float32(sc), dmin*float32(m)
		sc, m = scaleMinK4(is+1, scales)
		d2, m2 := d*float32(sc), dmin*float32(m)
		for l := range 32 {
			y[o+l] = float32(d1*float32(q[l]&0xf)) - m1
			y[o+32+l] = float32(d2*float32(q[l]>>4)) - m2
		}
		o += 64
		q = q[32:]
		is += 2
	}
}

// block_q5_K: d, dmin, scales[12], qh[32], qs[128].
func dequantQ5K(b []byte, y []float32) {
	d, dmin := half(b), half(b[2:])
	scales, qh, ql := b[4:16], b[16:48], b[48:176]
	is, o := 0, 0
	u1, u2 := uint8(1), uint8(2)
	for j := 0; j < 256; j += 64 {
		sc, m := scaleMinK4(is, scales)
		d1, m1 := d*float32(sc), dmin*float32(m)
		sc, m = scaleMinK4(is+1, scales)
		d2, m2 := d*float32(sc), dmin*float32(m)
		for l := range 32 {
			lo, hi := int(ql[l]&0xf), int(ql[l]>>4)
			if qh[l]&u1 != 0 {
				lo += 16
			}
			if qh[l]&u2 != 0 {
				hi += 16
			}
			y[o+l] = float32(d1*float32(lo)) - m1
			y[o+32+l] = float32(d2*float32(hi)) - m2
		}
		o += 64
		ql = ql[32:]
		is += 2
		u1 <<= 2
		u2 <<= 2
	}
}

// block_q6_K: ql[128], qh[64], scales[16] int8, d.
func dequantQ6K(b []byte, y []float32) {
	ql, qh := b[0:128], b[128:192]
	d := half(b[208:])
	// ggml computes d·scale for every value; the product is the same
	// float32 each time, so it is taken once per scale.
	var ds [16]float32
	for i, s := range b[192:208] {
		ds[i] = d * float32(int8(s))
	}
	o := 0
	for n := 0; n < 256; n += 128 {
		sc := ds[n/16 : n/16+8]
		for l := range 32 {
			is := l / 16
			q1 := int8((ql[l]&0xf)|((qh[l]>>0)&3)<<4) - 32
			q2 := int8((ql[l+32]&0xf)|((qh[l]>>2)&3)<<4) - 32
			q3 := int8((ql[l]>>4)|((qh[l]>>4)&3)<<4) - 32
			q4 := int8((ql[l+32]>>4)|((qh[l]>>6)&3)<<4) - 32
			y[o+l] = sc[is] * float32(q1)
			y[o+l+32] = sc[is+2] * float32(q2)
			y[o+l+64] = sc[is+4] * float32(q3)
			y[o+l+96] = sc[is+6] * float32(q4)
		}
		o += 128
		ql, qh = ql[64:], qh[32:]
	}
}

// block_q8_K: d (float32), qs[256] int8, bsums[16] int16 (unused here).
func dequantQ8K(b []byte, y []float32) {
	d := math.Float32frombits(binary.LittleEndian.Uint32(b))
	for j := range 256 {
		y[j] = d * float32(int8(b[4+j]))
	}
}
