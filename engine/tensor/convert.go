package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	bitops "math/bits"
	"sync"
)

// Convert converts the elements stored in srcBytes (dtype src, little
// endian) into dstBytes (dtype dst) in one pass, without a float32
// intermediate buffer. dst must be F32, F16 or BF16; src any dtype
// ToFloat32 reads. dstBytes must hold exactly as many elements as srcBytes.
//
// The result is bit for bit what widening to float32 (ToFloat32) and then
// narrowing (F32ToF16, F32ToBF16) gives: conversions to F32 are exact, and
// narrowing rounds to nearest even. Every F8 (E4M3 and E5M2) value is
// exact in F16 and in BF16; F16 and BF16 round into each other. NaNs
// become the NaN that path produces.
func Convert(dst DType, dstBytes []byte, src DType, srcBytes []byte) error {
	ss, ds := src.Size(), dst.Size()
	if ss == 0 {
		return fmt.Errorf("convert: unsupported source dtype %v", src)
	}
	if dst != F32 && dst != F16 && dst != BF16 {
		return fmt.Errorf("convert %v to %v: unsupported destination dtype", src, dst)
	}
	if len(srcBytes)%ss != 0 || len(dstBytes) != len(srcBytes)/ss*ds {
		return fmt.Errorf("convert %v to %v: %d source bytes for %d destination bytes", src, dst, len(srcBytes), len(dstBytes))
	}
	n := len(srcBytes) / ss
	le := binary.LittleEndian
	switch {
	case src == dst:
		copy(dstBytes, srcBytes)
		return nil
	case dst == F32:
		// Exact widening: ToFloat32, written into bytes.
		out := dstBytes[:4*n]
		switch src {
		case F16:
			for i := range n {
				le.PutUint32(out[4*i:], math.Float32bits(F16ToF32(le.Uint16(srcBytes[2*i:]))))
			}
		case BF16:
			for i := range n {
				le.PutUint32(out[4*i:], uint32(le.Uint16(srcBytes[2*i:]))<<16)
			}
		default:
			for i := range n {
				f, err := elemToF32(src, srcBytes, i)
				if err != nil {
					return err
				}
				le.PutUint32(out[4*i:], math.Float32bits(f))
			}
		}
		return nil
	}

	// 16-bit destinations. Each case is its own loop so that the scalar
	// conversions are called directly (and inlined where they can be).
	out := dstBytes[:2*n]
	switch {
	case src == F32 && dst == F16:
		for i := range n {
			le.PutUint16(out[2*i:], F32ToF16(math.Float32frombits(le.Uint32(srcBytes[4*i:]))))
		}
	case src == F32:
		for i := range n {
			le.PutUint16(out[2*i:], F32ToBF16(math.Float32frombits(le.Uint32(srcBytes[4*i:]))))
		}
	case src == F16 || src == BF16: // to the other 16-bit type
		table := f16BF16Table()
		if src == BF16 {
			table = bf16F16Table()
		}
		for i := range n {
			le.PutUint16(out[2*i:], table[le.Uint16(srcBytes[2*i:])])
		}
	case src == F8E4M3 || src == F8E5M2:
		table := f8Table(src, dst)
		for i, v := range srcBytes[:n] {
			le.PutUint16(out[2*i:], table[v])
		}
	default:
		// Integer storage (I64, I32, U8): only the float32 path rounds
		// them, so take it one element at a time.
		for i := range n {
			f, err := elemToF32(src, srcBytes, i)
			if err != nil {
				return err
			}
			h := F32ToF16(f)
			if dst == BF16 {
				h = F32ToBF16(f)
			}
			le.PutUint16(out[2*i:], h)
		}
	}
	return nil
}

// elemToF32 is ToFloat32 for element i of raw.
func elemToF32(dt DType, raw []byte, i int) (float32, error) {
	le := binary.LittleEndian
	switch dt {
	case F32:
		return math.Float32frombits(le.Uint32(raw[4*i:])), nil
	case F16:
		return F16ToF32(le.Uint16(raw[2*i:])), nil
	case BF16:
		return BF16ToF32(le.Uint16(raw[2*i:])), nil
	case F8E4M3:
		return F8E4M3ToF32(raw[i]), nil
	case F8E5M2:
		return F8E5M2ToF32(raw[i]), nil
	case I64:
		return float32(int64(le.Uint64(raw[8*i:]))), nil
	case I32:
		return float32(int32(le.Uint32(raw[4*i:]))), nil
	case U8:
		return float32(raw[i]), nil
	}
	return 0, fmt.Errorf("convert: unsupported dtype %v", dt)
}

// f16ToBF16 converts binary16 to bfloat16 with round-to-nearest-even. The
// exponent always fits (bfloat16 has float32's range); the 10-bit mantissa
// loses its low 3 bits, or fewer for subnormal halves, which become
// normal bfloat16 values.
func f16ToBF16(h uint16) uint16 {
	sign := h & 0x8000
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f && mant != 0: // NaN: payload kept, made quiet
		return sign | 0x7f80 | uint16(mant>>3) | 0x40
	case exp == 0x1f:
		return sign | 0x7f80
	case exp == 0 && mant == 0:
		return sign
	case exp == 0: // subnormal: mant * 2^-24, normalised
		top := uint32(bitops.Len32(mant)) - 1 // 0..9
		exp = top + 103                       // 2^(top-24) with bias 127
		mant = (mant ^ 1<<top) << (10 - top)  // 10-bit fraction
	default:
		exp += 127 - 15
	}
	// exp (8 bits) and a 10-bit fraction: round the fraction to 7 bits.
	r := exp<<7 | mant>>3
	rem := mant & 7
	if rem > 4 || (rem == 4 && r&1 == 1) {
		r++ // cannot overflow: exp is at most 142
	}
	return sign | uint16(r)
}

// bf16ToF16 converts bfloat16 to binary16 with round-to-nearest-even:
// the float32 narrowing applied to the exact float32 bits of h.
func bf16ToF16(h uint16) uint16 {
	return F32ToF16(math.Float32frombits(uint32(h) << 16))
}

// f8E4M3To16 converts float8 e4m3fn to binary16 (bf == false) or bfloat16
// (bf == true); both hold every value exactly. NaN (no sign) becomes the
// positive quiet NaN of the float32 path.
func f8E4M3To16(v uint8, bf bool) uint16 {
	sign := uint16(v&0x80) << 8
	exp := uint16(v>>3) & 0xf
	mant := uint16(v) & 7
	mbits, bias := uint16(10), uint16(15)
	if bf {
		mbits, bias = 7, 127
	}
	switch {
	case exp == 0xf && mant == 7:
		if bf {
			return 0x7fc0
		}
		return 0x7e00
	case exp == 0 && mant == 0:
		return sign
	case exp == 0: // subnormal: mant * 2^-9, normalised
		top := uint16(bitops.Len16(mant)) - 1 // 0..2
		return sign | (top+bias-9)<<mbits | (mant^1<<top)<<(mbits-top)
	}
	return sign | (exp+bias-7)<<mbits | mant<<(mbits-3)
}

// f8E5M2To16 converts float8 e5m2 to binary16 or bfloat16, exactly. It is
// the top byte of a binary16, so only NaNs change there (made quiet, as
// the float32 path does).
func f8E5M2To16(v uint8, bf bool) uint16 {
	sign := uint16(v&0x80) << 8
	exp := uint16(v>>2) & 0x1f
	mant := uint16(v) & 3
	if !bf {
		if exp == 0x1f && mant != 0 {
			return sign | 0x7e00
		}
		return uint16(v) << 8
	}
	switch {
	case exp == 0x1f && mant != 0:
		return sign | 0x7f80 | mant<<5 | 0x40
	case exp == 0x1f:
		return sign | 0x7f80
	case exp == 0 && mant == 0:
		return sign
	case exp == 0: // subnormal: mant * 2^-16, normalised
		top := uint16(bitops.Len16(mant)) - 1 // 0..1
		return sign | (top+127-16)<<7 | (mant^1<<top)<<(7-top)
	}
	return sign | (exp+127-15)<<7 | mant<<5
}

// f8Tables holds the 256-entry lookup tables of the F8 conversions, built
// once: [E4M3, E5M2][F16, BF16].
var f8Tables = func() (t [2][2][256]uint16) {
	for v := range 256 {
		for bf := range 2 {
			t[0][bf][v] = f8E4M3To16(uint8(v), bf == 1)
			t[1][bf][v] = f8E5M2To16(uint8(v), bf == 1)
		}
	}
	return t
}()

// f16BF16Table and bf16F16Table map every 16-bit pattern (128 KiB each,
// built on first use): a lookup is faster than the rounding's branches.
var (
	f16BF16Table = sync.OnceValue(func() *[1 << 16]uint16 { return table16(f16ToBF16) })
	bf16F16Table = sync.OnceValue(func() *[1 << 16]uint16 { return table16(bf16ToF16) })
)

func table16(conv func(uint16) uint16) *[1 << 16]uint16 {
	t := new([1 << 16]uint16)
	for h := range t {
		t[h] = conv(uint16(h))
	}
	return t
}

func f8Table(src, dst DType) *[256]uint16 {
	i, j := 0, 0
	if src == F8E5M2 {
		i = 1
	}
	if dst == BF16 {
		j = 1
	}
	return &f8Tables[i][j]
}
