package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
)

// f32ToF16Reference is F32ToF16 as it was written before its normal-range
// rounding lost its branches: the rounding the tests hold it to.
func f32ToF16Reference(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 // NaN
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is correct (up to inf)
	}
	return sign | uint16(r)
}

// TestF32ToF16MatchesReference compares F32ToF16 with the reference for
// both signs, every exponent and every top-10 mantissa pattern (the
// binary16 mantissa), each with the low-13-bit patterns rounding turns on
// (zero, one, just below, at and above the tie, all ones) and, for the
// exponents whose results are subnormal, the same around every shift's
// tie; plus 2^22 random patterns. DARKROOM_TEST_ALL_F32=1 compares all
// 2^32 patterns instead (about 20 s of CPU time).
func TestF32ToF16MatchesReference(t *testing.T) {
	check := func(b uint32) bool {
		f := math.Float32frombits(b)
		if got, want := F32ToF16(f), f32ToF16Reference(f); got != want {
			t.Errorf("F32ToF16(%#08x) = %#04x, reference %#04x", b, got, want)
			return false
		}
		return true
	}
	if os.Getenv("DARKROOM_TEST_ALL_F32") == "1" {
		workers := uint64(runtime.GOMAXPROCS(0))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var bad []uint32
		for w := range workers {
			wg.Go(func() {
				for b := w; b < 1<<32; b += workers {
					f := math.Float32frombits(uint32(b))
					if F32ToF16(f) != f32ToF16Reference(f) {
						mu.Lock()
						bad = append(bad, uint32(b))
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		for _, b := range bad {
			check(b)
		}
		return
	}
	var lows []uint32
	for shift := uint32(13); shift <= 24; shift++ { // 13: normal results; 14..24: subnormal
		half := uint32(1) << (shift - 1)
		lows = append(lows, 0, 1, half-1, half, half+1, 2*half-1, half|1, half>>1)
	}
	for sign := range uint32(2) {
		for exp := range uint32(256) {
			for top := range uint32(1 << 10) {
				for _, low := range lows {
					if !check(sign<<31 | exp<<23 | (top<<13 | low&0x1fff)) {
						return
					}
					if low > 0x1fff && !check(sign<<31|exp<<23|(top<<13|low)&0x7fffff) {
						return
					}
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 1 << 22 {
		if !check(r.Uint32()) {
			return
		}
	}
}

// twoStep is the conversion Convert replaces: widen to float32 with
// ToFloat32, then narrow with the reference F32ToF16 / F32ToBF16 (or keep
// the float32 bits). Bytes already in the destination dtype were copied
// unchanged.
func twoStep(t testing.TB, dst DType, src DType, raw []byte) []byte {
	t.Helper()
	if src == dst {
		return append([]byte(nil), raw...)
	}
	wide := make([]float32, len(raw)/src.Size())
	if err := ToFloat32(src, raw, wide); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(wide)*dst.Size())
	le := binary.LittleEndian
	for i, f := range wide {
		switch dst {
		case F32:
			le.PutUint32(out[4*i:], math.Float32bits(f))
		case F16:
			le.PutUint16(out[2*i:], f32ToF16Reference(f))
		case BF16:
			le.PutUint16(out[2*i:], F32ToBF16(f))
		}
	}
	return out
}

// allPatterns returns every bit pattern of a 1- or 2-byte dtype, little
// endian.
func allPatterns(dt DType) []byte {
	switch dt.Size() {
	case 1:
		raw := make([]byte, 256)
		for v := range raw {
			raw[v] = byte(v)
		}
		return raw
	case 2:
		raw := make([]byte, 2<<16)
		for v := range 1 << 16 {
			binary.LittleEndian.PutUint16(raw[2*v:], uint16(v))
		}
		return raw
	}
	panic("allPatterns: " + dt.String())
}

// f32Samples holds float32 edge cases (zeros, infinities, NaNs, the
// binary16 and bfloat16 rounding boundaries and subnormal ranges) and
// random bit patterns.
func f32Samples() []byte {
	bitsList := []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff, 0x00000001, 0x007fffff, 0x00800000, 0x7f7fffff}
	for _, f := range []float64{1, -1, 65504, 65519.99, 65520, 65536, 1e-8, 5.96e-8, 2.98e-8, 6.1e-5, 3.4e38} {
		b := math.Float32bits(float32(f))
		bitsList = append(bitsList, b-1, b, b+1, b|0x80000000)
	}
	// Every binary16 exponent with tie and near-tie low bits, both signs.
	for e := uint32(100); e < 145; e++ {
		for _, low := range []uint32{0, 0x0fff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fff, 0x8000, 0x8001, 0x18000, 0x7fffff} {
			bitsList = append(bitsList, e<<23|low, 0x80000000|e<<23|low)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1 << 16 {
		bitsList = append(bitsList, r.Uint32())
	}
	raw := make([]byte, 4*len(bitsList))
	for i, b := range bitsList {
		binary.LittleEndian.PutUint32(raw[4*i:], b)
	}
	return raw
}

func intSamples(dt DType) []byte {
	le := binary.LittleEndian
	var raw []byte
	switch dt {
	case I64:
		for _, v := range []int64{0, 1, -1, 2047, 2049, 65504, 65520, 1 << 24, 1<<24 + 1, math.MaxInt64, math.MinInt64} {
			raw = le.AppendUint64(raw, uint64(v))
		}
	case I32:
		for _, v := range []int32{0, 1, -1, 2049, 65519, 65521, 1<<24 + 1, math.MaxInt32, math.MinInt32} {
			raw = le.AppendUint32(raw, uint32(v))
		}
	case U8:
		raw = allPatterns(U8)
	}
	return raw
}

// TestConvertMatchesTwoStep proves Convert bit-identical to the float32
// round trip for every F16, BF16 and F8 bit pattern (NaNs, infinities,
// subnormals included), for float32 edge cases and random float32 bits,
// and for integer storage.
func TestConvertMatchesTwoStep(t *testing.T) {
	sources := []struct {
		dt  DType
		raw []byte
	}{
		{F16, allPatterns(F16)},
		{BF16, allPatterns(BF16)},
		{F8E4M3, allPatterns(F8E4M3)},
		{F8E5M2, allPatterns(F8E5M2)},
		{F32, f32Samples()},
		{I64, intSamples(I64)},
		{I32, intSamples(I32)},
		{U8, intSamples(U8)},
	}
	for _, s := range sources {
		for _, dst := range []DType{F32, F16, BF16} {
			t.Run(fmt.Sprintf("%v_to_%v", s.dt, dst), func(t *testing.T) {
				n := len(s.raw) / s.dt.Size()
				got := make([]byte, n*dst.Size())
				if err := Convert(dst, got, s.dt, s.raw); err != nil {
					t.Fatal(err)
				}
				want := twoStep(t, dst, s.dt, s.raw)
				bad := 0
				for i := range n {
					g := got[i*dst.Size() : (i+1)*dst.Size()]
					w := want[i*dst.Size() : (i+1)*dst.Size()]
					if string(g) != string(w) {
						if bad++; bad <= 5 {
							t.Errorf("element %d (source bytes %x): got %x, want %x", i, s.raw[i*s.dt.Size():(i+1)*s.dt.Size()], g, w)
						}
					}
				}
				if bad > 5 {
					t.Errorf("%d of %d elements differ", bad, n)
				}
			})
		}
	}
}

// TestF8Exact checks the claim that makes the F8 tables conversions rather
// than roundings: every F8 value (E4M3 and E5M2) is exact in F16 and in
// BF16.
func TestF8Exact(t *testing.T) {
	for v := range 256 {
		for _, c := range []struct {
			name string
			wide float32
			f16  uint16
			bf16 uint16
		}{
			{"E4M3", F8E4M3ToF32(uint8(v)), f8E4M3To16(uint8(v), false), f8E4M3To16(uint8(v), true)},
			{"E5M2", F8E5M2ToF32(uint8(v)), f8E5M2To16(uint8(v), false), f8E5M2To16(uint8(v), true)},
		} {
			if math.IsNaN(float64(c.wide)) {
				if !math.IsNaN(float64(F16ToF32(c.f16))) || !math.IsNaN(float64(BF16ToF32(c.bf16))) {
					t.Errorf("%s %#02x: NaN became %#04x / %#04x", c.name, v, c.f16, c.bf16)
				}
				continue
			}
			if got := F16ToF32(c.f16); !same(got, c.wide) {
				t.Errorf("%s %#02x = %g, as F16 %#04x = %g", c.name, v, c.wide, c.f16, got)
			}
			if got := BF16ToF32(c.bf16); !same(got, c.wide) {
				t.Errorf("%s %#02x = %g, as BF16 %#04x = %g", c.name, v, c.wide, c.bf16, got)
			}
		}
	}
}

func TestConvertEdges(t *testing.T) {
	le := binary.LittleEndian
	cases := []struct {
		name     string
		dst, src DType
		in       []byte
		want     []byte
	}{
		{"F16 subnormal to BF16", BF16, F16, le.AppendUint16(nil, 0x0001), le.AppendUint16(nil, 0x3380)},       // 2^-24
		{"F16 max to BF16 rounds up", BF16, F16, le.AppendUint16(nil, 0x7bff), le.AppendUint16(nil, 0x4780)},   // 65504 -> 65536
		{"BF16 above F16 range to inf", F16, BF16, le.AppendUint16(nil, 0x4780), le.AppendUint16(nil, 0x7c00)}, // 65536
		{"BF16 tiny to F16 zero", F16, BF16, le.AppendUint16(nil, 0x3300), le.AppendUint16(nil, 0x0000)},       // 2^-25: tie to even
		{"BF16 to F16 subnormal", F16, BF16, le.AppendUint16(nil, 0xb380), le.AppendUint16(nil, 0x8001)},       // -2^-24
		{"E4M3 max to F16", F16, F8E4M3, []byte{0x7e}, le.AppendUint16(nil, 0x5f00)},                           // 448
		{"E4M3 min subnormal to BF16", BF16, F8E4M3, []byte{0x81}, le.AppendUint16(nil, 0xbb00)},               // -2^-9
		{"E5M2 NaN to F16 is quiet", F16, F8E5M2, []byte{0xfd}, le.AppendUint16(nil, 0xfe00)},                  //
		{"E4M3 NaN to BF16", BF16, F8E4M3, []byte{0xff}, le.AppendUint16(nil, 0x7fc0)},                         //
		{"F16 to F32", F32, F16, le.AppendUint16(nil, 0xc000), le.AppendUint32(nil, math.Float32bits(-2))},     //
		{"BF16 to F32", F32, BF16, le.AppendUint16(nil, 0x3f80), le.AppendUint32(nil, math.Float32bits(1))},    //
		{"E5M2 to F32", F32, F8E5M2, []byte{0x7b}, le.AppendUint32(nil, math.Float32bits(57344))},              //
		{"same dtype copies", F16, F16, le.AppendUint16(nil, 0x7d01), le.AppendUint16(nil, 0x7d01)},            // payload kept
		{"empty", BF16, F32, nil, nil}, //
		{"I64 to BF16", BF16, I64, le.AppendUint64(nil, uint64(1<<40+1)), le.AppendUint16(nil, F32ToBF16(1<<40))}, //
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := make([]byte, len(c.want))
			if err := Convert(c.dst, got, c.src, c.in); err != nil {
				t.Fatal(err)
			}
			if string(got) != string(c.want) {
				t.Errorf("got %x, want %x", got, c.want)
			}
		})
	}
}

func TestConvertErrors(t *testing.T) {
	for _, c := range []struct {
		name     string
		dst, src DType
		dstLen   int
		srcLen   int
		want     string
	}{
		{"short destination", F16, F32, 2, 8, "convert F32 to F16: 8 source bytes for 2 destination bytes"},
		{"ragged source", BF16, F16, 2, 3, "convert F16 to BF16: 3 source bytes for 2 destination bytes"},
		{"F8 destination", F8E4M3, F16, 1, 2, "convert F16 to F8_E4M3: unsupported destination dtype"},
		{"invalid source", F16, Invalid, 2, 2, "convert: unsupported source dtype invalid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Convert(c.dst, make([]byte, c.dstLen), c.src, make([]byte, c.srcLen))
			if err == nil || err.Error() != c.want {
				t.Errorf("error = %v, want %q", err, c.want)
			}
		})
	}
}

// BenchmarkConvert compares the one-pass conversion with the float32 round
// trip it replaces, for 2M elements (4 MiB of F16/BF16 output).
func BenchmarkConvert(b *testing.B) {
	const n = 2 << 20 // elements: 4 MiB of F16/BF16
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct{ src, dst DType }{
		{F32, F16}, {F32, BF16}, {BF16, F16}, {F16, BF16}, {F8E4M3, F16}, {F8E4M3, BF16}, {F8E5M2, BF16}, {F16, F32}, {BF16, F32},
	} {
		// Values distributed like weights (N(0, 0.05²)); F8 bytes at random.
		raw := make([]byte, n*c.src.Size())
		le := binary.LittleEndian
		for i := range n {
			f := float32(0.05 * r.NormFloat64())
			switch c.src {
			case F32:
				le.PutUint32(raw[4*i:], math.Float32bits(f))
			case F16:
				le.PutUint16(raw[2*i:], F32ToF16(f))
			case BF16:
				le.PutUint16(raw[2*i:], F32ToBF16(f))
			default:
				raw[i] = byte(r.Uint32())
			}
		}
		dst := make([]byte, n*c.dst.Size())
		name := fmt.Sprintf("%v_to_%v", c.src, c.dst)
		b.Run(name+"/one-pass", func(b *testing.B) {
			b.SetBytes(int64(len(dst)))
			for b.Loop() {
				if err := Convert(c.dst, dst, c.src, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/via-f32", func(b *testing.B) {
			b.SetBytes(int64(len(dst)))
			for b.Loop() {
				twoStep(b, c.dst, c.src, raw)
			}
		})
	}
}
