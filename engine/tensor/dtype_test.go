package tensor

import (
	"encoding/binary"
	"math"
	"testing"
)

func bits(f float32) uint32 { return math.Float32bits(f) }

func same(a, b float32) bool {
	if math.IsNaN(float64(a)) || math.IsNaN(float64(b)) {
		return math.IsNaN(float64(a)) && math.IsNaN(float64(b))
	}
	return bits(a) == bits(b)
}

func TestF16Edges(t *testing.T) {
	for _, c := range []struct {
		name string
		h    uint16
		want float32
	}{
		{"zero", 0x0000, 0},
		{"negative zero", 0x8000, float32(math.Copysign(0, -1))},
		{"one", 0x3c00, 1},
		{"minus two", 0xc000, -2},
		{"max", 0x7bff, 65504},
		{"min normal", 0x0400, float32(math.Ldexp(1, -14))},
		{"min subnormal", 0x0001, float32(math.Ldexp(1, -24))},
		{"max subnormal", 0x03ff, float32(math.Ldexp(1023, -24))},
		{"negative subnormal", 0x8001, -float32(math.Ldexp(1, -24))},
		{"inf", 0x7c00, float32(math.Inf(1))},
		{"-inf", 0xfc00, float32(math.Inf(-1))},
		{"nan", 0x7e00, float32(math.NaN())},
		{"one third", 0x3555, 0.333251953125},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := F16ToF32(c.h); !same(got, c.want) {
				t.Errorf("F16ToF32(%#04x) = %g, want %g", c.h, got, c.want)
			}
		})
	}
}

// Every finite half converts to float32 and back to the same bits.
func TestF16RoundTripAll(t *testing.T) {
	for h := range 1 << 16 {
		f := F16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if back := F32ToF16(f); back != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, back)
		}
	}
}

func TestF32ToF16Rounding(t *testing.T) {
	for _, c := range []struct {
		f    float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},                // halfway, rounds to even (down)
		{1 + 3.0/2048, 0x3c02},                // halfway, rounds to even (up)
		{65520, 0x7c00},                       // rounds to infinity
		{65519, 0x7bff},                       // max finite
		{float32(math.Ldexp(1, -25)), 0x0000}, // half of min subnormal: ties to even (zero)
		{float32(math.Ldexp(3, -26)), 0x0001}, // 0.75 of min subnormal rounds up
		{1e-10, 0x0000},
	} {
		if got := F32ToF16(c.f); got != c.want {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
}

func TestBF16Edges(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want float32
	}{
		{0x3f80, 1}, {0xbf80, -1}, {0x7f7f, math.Float32frombits(0x7f7f0000)}, {0x0001, math.Float32frombits(0x00010000)},
		{0x7f80, float32(math.Inf(1))}, {0xff80, float32(math.Inf(-1))}, {0x7fc0, float32(math.NaN())}, {0x8000, float32(math.Copysign(0, -1))},
	} {
		if got := BF16ToF32(c.h); !same(got, c.want) {
			t.Errorf("BF16ToF32(%#04x) = %g, want %g", c.h, got, c.want)
		}
	}
	for h := range 1 << 16 {
		f := BF16ToF32(uint16(h))
		if !math.IsNaN(float64(f)) && F32ToBF16(f) != uint16(h) {
			t.Fatalf("bf16 %#04x does not round-trip", h)
		}
	}
	if got := F32ToBF16(math.Float32frombits(0x3f808000)); got != 0x3f80 { // tie, even stays
		t.Errorf("tie rounding: %#04x", got)
	}
	if got := F32ToBF16(math.Float32frombits(0x3f818000)); got != 0x3f82 { // tie, odd rounds up
		t.Errorf("tie rounding: %#04x", got)
	}
}

func TestF8E4M3(t *testing.T) {
	for _, c := range []struct {
		v    uint8
		want float32
	}{
		{0x00, 0}, {0x80, float32(math.Copysign(0, -1))},
		{0x38, 1},   // exponent 7, mantissa 0
		{0x7e, 448}, // max finite
		{0xfe, -448},
		{0x7f, float32(math.NaN())}, {0xff, float32(math.NaN())},
		{0x01, float32(math.Ldexp(1, -9))}, // min subnormal
		{0x07, float32(math.Ldexp(7, -9))}, // max subnormal
		{0x08, float32(math.Ldexp(1, -6))}, // min normal
		{0x78, 256},                        // exponent 15 is finite in e4m3fn
	} {
		if got := F8E4M3ToF32(c.v); !same(got, c.want) {
			t.Errorf("F8E4M3ToF32(%#02x) = %g, want %g", c.v, got, c.want)
		}
	}
}

func TestF8E5M2(t *testing.T) {
	for _, c := range []struct {
		v    uint8
		want float32
	}{
		{0x00, 0}, {0x3c, 1}, {0x7b, 57344}, {0xfb, -57344},
		{0x7c, float32(math.Inf(1))}, {0xfc, float32(math.Inf(-1))}, {0x7e, float32(math.NaN())},
		{0x01, float32(math.Ldexp(1, -16))}, {0x04, float32(math.Ldexp(1, -14))},
	} {
		if got := F8E5M2ToF32(c.v); !same(got, c.want) {
			t.Errorf("F8E5M2ToF32(%#02x) = %g, want %g", c.v, got, c.want)
		}
	}
}

func TestToFloat32(t *testing.T) {
	le := binary.LittleEndian
	for _, c := range []struct {
		dt   DType
		raw  []byte
		want []float32
	}{
		{F32, le.AppendUint32(le.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-3)), []float32{1.5, -3}},
		{F16, le.AppendUint16(le.AppendUint16(nil, 0x3c00), 0xc000), []float32{1, -2}},
		{BF16, le.AppendUint16(nil, 0x3f80), []float32{1}},
		{F8E4M3, []byte{0x38, 0x7e}, []float32{1, 448}},
		{F8E5M2, []byte{0x3c}, []float32{1}},
		{I64, le.AppendUint64(nil, uint64(0xffffffffffffffff)), []float32{-1}},
		{I32, le.AppendUint32(nil, 7), []float32{7}},
		{U8, []byte{255, 0}, []float32{255, 0}},
	} {
		t.Run(c.dt.String(), func(t *testing.T) {
			got := make([]float32, len(c.want))
			if err := ToFloat32(c.dt, c.raw, got); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if !same(got[i], c.want[i]) {
					t.Errorf("[%d] = %g, want %g", i, got[i], c.want[i])
				}
			}
		})
	}
	if err := ToFloat32(F16, []byte{1, 2, 3}, make([]float32, 2)); err == nil {
		t.Error("size mismatch accepted")
	}
}

func TestParseDType(t *testing.T) {
	for _, name := range []string{"F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "U8"} {
		dt, err := ParseDType(name)
		if err != nil || dt.String() != name {
			t.Errorf("ParseDType(%q) = %v, %v", name, dt, err)
		}
	}
	if _, err := ParseDType("F64"); err == nil {
		t.Error("F64 accepted")
	}
}
