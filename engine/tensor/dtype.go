package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DType is a storage element type as found in checkpoint files.
// Compute on the CPU is always float32; DType describes how weights are stored.
type DType uint8

// Storage dtypes understood by darkroom. The names follow safetensors.
const (
	Invalid DType = iota
	F32
	F16
	BF16
	F8E4M3 // float8 e4m3fn: no infinities, 0x7f/0xff are NaN, max 448
	F8E5M2 // float8 e5m2: IEEE-like, max 57344
	I64
	I32
	U8
)

var dtypeInfo = [...]struct {
	name string
	size int
}{
	Invalid: {"invalid", 0},
	F32:     {"F32", 4},
	F16:     {"F16", 2},
	BF16:    {"BF16", 2},
	F8E4M3:  {"F8_E4M3", 1},
	F8E5M2:  {"F8_E5M2", 1},
	I64:     {"I64", 8},
	I32:     {"I32", 4},
	U8:      {"U8", 1},
}

// String returns the safetensors name of the dtype ("F16", "F8_E4M3", ...).
func (d DType) String() string {
	if int(d) < len(dtypeInfo) {
		return dtypeInfo[d].name
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size returns the size of one element in bytes (0 for Invalid).
func (d DType) Size() int {
	if int(d) < len(dtypeInfo) {
		return dtypeInfo[d].size
	}
	return 0
}

// IsFloat reports whether the dtype holds floating-point values.
func (d DType) IsFloat() bool {
	switch d {
	case F32, F16, BF16, F8E4M3, F8E5M2:
		return true
	}
	return false
}

// ParseDType maps a safetensors dtype name to a DType.
func ParseDType(s string) (DType, error) {
	for i := 1; i < len(dtypeInfo); i++ {
		if dtypeInfo[i].name == s {
			return DType(i), nil
		}
	}
	return Invalid, fmt.Errorf("unsupported dtype %q", s)
}

// F16ToF32 converts an IEEE 754 binary16 value exactly to float32.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf / NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0: // signed zero
		return math.Float32frombits(sign)
	}
	// subnormal: mant * 2^-24
	f := float32(mant) * (1.0 / (1 << 24))
	if sign != 0 {
		return -f
	}
	return f
}

// F32ToF16 converts a float32 to binary16 with round-to-nearest-even,
// as torch's .half() does. Results of binary16 normal range round with
// one carry-propagating add (no data-dependent branch); only results in
// the subnormal range take the shift-and-compare path.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	x := b & 0x7fffffff
	switch {
	case x >= 0x477ff000: // rounds to 65536 or more: infinity; or inf / NaN
		if x > 0x7f800000 {
			return sign | 0x7e00 // NaN
		}
		return sign | 0x7c00
	case x >= 0x38800000: // 2^-14 and up: a normal binary16
		x -= (127 - 15) << 23       // rebias the exponent
		x += 0xfff + (x>>13)&1      // round the low 13 bits, ties to even
		return sign | uint16(x>>13) // a carry into the exponent is correct
	case x < 0x33000000: // below 2^-25, half the smallest subnormal: zero
		return sign
	}
	// Subnormal result: the 24-bit significand shifted right by 14-e.
	m := x&0x7fffff | 0x800000
	shift := 126 - x>>23
	r := m >> shift
	rem := m & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || (rem == half && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

// BF16ToF32 converts a bfloat16 value exactly to float32.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts float32 to bfloat16 with round-to-nearest-even.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40 // quiet NaN
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F8E4M3ToF32 converts a float8 e4m3fn value exactly to float32.
func F8E4M3ToF32(v uint8) float32 {
	sign := float32(1)
	if v&0x80 != 0 {
		sign = -1
	}
	exp := int(v>>3) & 0xf
	mant := int(v) & 7
	if exp == 0xf && mant == 7 {
		return float32(math.NaN())
	}
	if exp == 0 {
		return sign * float32(mant) * (1.0 / 512) // mant/8 * 2^-6
	}
	return sign * float32(math.Ldexp(1+float64(mant)/8, exp-7))
}

// F8E5M2ToF32 converts a float8 e5m2 value exactly to float32.
func F8E5M2ToF32(v uint8) float32 { return F16ToF32(uint16(v) << 8) }

// ToFloat32 converts len(dst) elements of raw little-endian storage of dtype dt to float32.
// src must hold exactly len(dst)*dt.Size() bytes.
func ToFloat32(dt DType, src []byte, dst []float32) error {
	if len(src) != len(dst)*dt.Size() {
		return fmt.Errorf("convert %v: %d bytes for %d elements", dt, len(src), len(dst))
	}
	le := binary.LittleEndian
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(le.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(le.Uint16(src[2*i:]))
		}
	case F8E4M3:
		for i := range dst {
			dst[i] = F8E4M3ToF32(src[i])
		}
	case F8E5M2:
		for i := range dst {
			dst[i] = F8E5M2ToF32(src[i])
		}
	case I64:
		for i := range dst {
			dst[i] = float32(int64(le.Uint64(src[8*i:])))
		}
	case I32:
		for i := range dst {
			dst[i] = float32(int32(le.Uint32(src[4*i:])))
		}
	case U8:
		for i := range dst {
			dst[i] = float32(src[i])
		}
	default:
		return fmt.Errorf("convert: unsupported dtype %v", dt)
	}
	return nil
}
