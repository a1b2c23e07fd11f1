package rng

import "math"

// This file evaluates, one lane at a time, the float32 logarithm and
// sine/cosine that PyTorch's AVX2 normal kernel uses (avx_mathfun.h, itself
// a port of Julien Pommier's sse_mathfun, which follows the Cephes
// single-precision routines). Every arithmetic step is rounded to float32 in
// the same order as the vector code.
//
// PyTorch's x86-64 builds compile that code with GCC, whose default
// -ffp-contract=fast fuses each multiply whose only consumer is an add or
// subtract into one fused multiply-add (FMA, a single rounding). The
// reference tensors are matched bit for bit only with those fusions, so every
// such multiply-add below goes through fma32; plain products carry explicit
// float32 conversions so that the Go compiler cannot fuse anything else.
// (Of the fusions, the log and sine polynomials, the y*z + e*q1 and
// c*z - z/2 steps were each shown necessary by the fixtures; the fusions in
// the argument reduction and the cosine polynomial change no fixture value
// either way and follow the same GCC rule.)

// Cephes single-precision coefficients, as float32 constants.
const (
	sqrtHalf = float32(0.707106781186547524)

	logP0 = float32(7.0376836292e-2)
	logP1 = float32(-1.1514610310e-1)
	logP2 = float32(1.1676998740e-1)
	logP3 = float32(-1.2420140846e-1)
	logP4 = float32(+1.4249322787e-1)
	logP5 = float32(-1.6668057665e-1)
	logP6 = float32(+2.0000714765e-1)
	logP7 = float32(-2.4999993993e-1)
	logP8 = float32(+3.3333331174e-1)
	logQ1 = float32(-2.12194440e-4)
	logQ2 = float32(0.693359375)

	fourOverPi = float32(1.27323954473516)
	negDP1     = float32(-0.78515625)
	negDP2     = float32(-2.4187564849853515625e-4)
	negDP3     = float32(-3.77489497744594108e-8)
	sinP0      = float32(-1.9515295891e-4)
	sinP1      = float32(8.3321608736e-3)
	sinP2      = float32(-1.6666654611e-1)
	cosP0      = float32(2.443315711809948e-005)
	cosP1      = float32(-1.388731625493765e-003)
	cosP2      = float32(4.166664568298827e-002)

	minNormPos = float32(1.17549435e-38) // 0x00800000
)

// log32 is the natural logarithm of log256_ps for one lane. It returns NaN
// for x <= 0 and treats subnormal inputs as the smallest normal number.
func log32(x float32) float32 {
	if !(x > 0) {
		return float32(math.NaN())
	}
	if x < minNormPos {
		x = minNormPos
	}
	bits := math.Float32bits(x)
	e := float32(int32(bits>>23)-0x7f) + 1
	// Keep the mantissa and give it the exponent of 0.5: m in [0.5, 1).
	m := math.Float32frombits(bits&^0x7f800000 | 0x3f000000)
	var t float32
	if m < sqrtHalf {
		e -= 1
		t = m
	}
	x = (m - 1) + t

	z := x * x
	y := logP0
	y = fma32(y, x, logP1)
	y = fma32(y, x, logP2)
	y = fma32(y, x, logP3)
	y = fma32(y, x, logP4)
	y = fma32(y, x, logP5)
	y = fma32(y, x, logP6)
	y = fma32(y, x, logP7)
	y = fma32(y, x, logP8)
	y = y * x
	y = fma32(y, z, float32(e*logQ1)) // y*z + e*q1: the first product fuses
	y = fma32(z, -0.5, y)             // exact product; fused or not alike
	x = x + y
	x = fma32(e, logQ2, x)
	return x
}

// sincos32 is sincos256_ps for one lane: the sine and cosine of x, accurate
// for |x| below about 8192.
func sincos32(x float32) (sin, cos float32) {
	const signBit = 0x80000000
	sinSign := math.Float32bits(x) & signBit
	x = math.Float32frombits(math.Float32bits(x) &^ signBit)

	// Octant: j = (int(x*4/π) + 1) &^ 1.
	j := (int32(float32(x*fourOverPi)) + 1) &^ 1
	y := float32(j)
	sinSign ^= uint32(j&4) << 29
	cosSign := uint32(^(j-2)&4) << 29
	useCosPoly := j&2 == 0 // the "first polynomial" gives cos; second gives sin

	// Extended-precision reduction: x - y*π/4 in three parts.
	x = fma32(y, negDP1, x)
	x = fma32(y, negDP2, x)
	x = fma32(y, negDP3, x)

	z := x * x
	c := cosP0
	c = fma32(c, z, cosP1)
	c = fma32(c, z, cosP2)
	c = c * z
	c = fma32(c, z, -float32(z*0.5)) // c*z - z/2: the first product fuses
	c = c + 1

	s := sinP0
	s = fma32(s, z, sinP1)
	s = fma32(s, z, sinP2)
	s = s * z
	s = fma32(s, x, x)

	// The vector code selects with bit masks and then adds the selected
	// value to +0, which turns a -0 into +0; do the same.
	var sinAbs, cosAbs float32
	if useCosPoly {
		sinAbs, cosAbs = 0+s, c+0
	} else {
		sinAbs, cosAbs = c+0, 0+s
	}
	sin = math.Float32frombits(math.Float32bits(sinAbs) ^ sinSign)
	cos = math.Float32frombits(math.Float32bits(cosAbs) ^ cosSign)
	return sin, cos
}

// fma32 returns a*b + c rounded once to float32, as the vfmadd*ps
// instructions compute it. The product of two float32 values is exact in
// float64; the sum is then rounded to float64 "to odd" (truncated, with the
// last bit set when inexact), which makes the final rounding to float32
// correct: float64 carries more than 24+2 bits. Rounding the float64 sum to
// nearest instead could round twice and miss by one unit.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	q := float64(c)
	s := p + q
	// TwoSum: p + q == s + err exactly.
	qv := s - p
	err := (p - (s - qv)) + (q - qv)
	if err != 0 {
		bits := math.Float64bits(s)
		if bits&1 == 0 {
			if (err > 0) == (s > 0) {
				bits++ // the exact sum lies farther from zero than s
			} else {
				bits--
			}
			s = math.Float64frombits(bits)
		}
	}
	return float32(s)
}
