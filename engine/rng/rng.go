// Package rng reproduces PyTorch's CPU random number generator, so that a
// seed gives the same initial noise as ComfyUI and diffusers.
//
// torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
// draws from an mt19937 engine and turns the words into normal samples in one
// of two ways, chosen by the element count n of the tensor:
//
//   - n >= 16 (contiguous float32): every element is first filled with a
//     24-bit uniform in [0, 1) (one engine word each). Then each complete
//     block of 16 is transformed by Box-Muller: for j in 0..7,
//     u1 = 1 - x[j], u2 = x[j+8], r = sqrt(-2 log u1), θ = 2π u2,
//     x[j] = r cos θ, x[j+8] = r sin θ. When n is not a multiple of 16, 16
//     fresh uniforms are drawn into the last 16 slots (overwriting the tail
//     of the last complete block) and that block is transformed again.
//     On x86-64 PyTorch runs this in AVX2 with the Cephes-derived
//     polynomials of avx_mathfun.h (log256_ps, sincos256_ps), not with libm;
//     this package evaluates the same float32 polynomials lane by lane.
//   - n < 16: each element is an independent float64 Box-Muller sample
//     cast to float32. A sample takes two 53-bit uniforms (two engine words
//     each): u1 for the angle, u2 for the radius sqrt(-2 log1p(-u2)). The
//     cosine branch is returned and the sine branch is cached in the
//     generator and returned by the next request, as torch caches it in
//     next_double_normal_sample.
//
// The float32 path is verified bit for bit against torch 2.11 on x86-64
// (testdata/reference/randn.*). PyTorch builds without AVX2 (e.g. arm64,
// macOS) use libm's logf/cosf/sinf instead and differ in the last bits. The
// float64 path uses Go's math.Log1p, Sin and Cos, which may differ from
// glibc's by one float64 unit in rare cases; that survives the cast to
// float32 only with probability about 2^-29 per value.
//
// Two successive Randn calls on one generator continue the stream exactly as
// two successive torch.randn calls with the same generator do: the engine
// position carries over, and so does the cached sine sample, which only the
// n < 16 path reads or writes.
package rng

import "math"

// Torch is a torch.Generator("cpu") equivalent: an mt19937 engine seeded with
// manual_seed(seed), plus the normal-distribution state torch keeps. It is
// not safe for concurrent use; Clone it to hand a copy to another goroutine.
type Torch struct {
	engine mt19937
	seed   uint64
	// cached holds the sine half of the last float64 Box-Muller pair until
	// the next small-tensor draw consumes it (torch's
	// next_double_normal_sample).
	cached    float64
	hasCached bool
}

// NewTorch returns a generator in the state of
// torch.Generator("cpu").manual_seed(seed). Only the low 32 bits of seed
// reach the engine, as in torch: seeds 3 and 2^33+3 give the same numbers.
func NewTorch(seed uint64) *Torch {
	g := &Torch{seed: seed}
	g.engine.seed(seed)
	return g
}

// Seed returns the seed the generator was created with (torch's
// initial_seed), all 64 bits of it.
func (g *Torch) Seed() uint64 { return g.seed }

// Uint32 returns the next raw engine word, as torch's CPUGeneratorImpl.random
// does.
func (g *Torch) Uint32() uint32 { return g.engine.uint32() }

// Uint64 returns two engine words joined high word first, as torch's
// CPUGeneratorImpl.random64 does.
func (g *Torch) Uint64() uint64 {
	hi := uint64(g.engine.uint32())
	lo := uint64(g.engine.uint32())
	return hi<<32 | lo
}

// uniform32 is torch's uniform_real_distribution<float>(0, 1): the low 24
// bits of one word, scaled by 2^-24.
func (g *Torch) uniform32() float32 {
	return float32(g.engine.uint32()&(1<<24-1)) * (1.0 / (1 << 24))
}

// uniform64 is torch's uniform_real_distribution<double>(0, 1): the low 53
// bits of a 64-bit draw, scaled by 2^-53.
func (g *Torch) uniform64() float64 {
	return float64(g.Uint64()&(1<<53-1)) * (1.0 / (1 << 53))
}

// NormalFloat64 returns one sample of torch's normal_distribution<double>
// with mean 0 and standard deviation 1, including its cache of the second
// Box-Muller value. This is the per-element path of torch.randn for tensors
// of fewer than 16 elements (before the cast to float32).
func (g *Torch) NormalFloat64() float64 {
	if g.hasCached {
		g.hasCached = false
		return g.cached
	}
	u1 := g.uniform64()
	u2 := g.uniform64()
	r := math.Sqrt(-2 * math.Log1p(-u2))
	theta := 2 * math.Pi * u1
	g.cached = r * math.Sin(theta)
	g.hasCached = true
	return r * math.Cos(theta)
}

// Randn returns n float32 values equal bit for bit to
// torch.randn(shape, generator=g) for any shape with n elements, and advances
// the generator as torch does. n <= 0 returns an empty slice and leaves the
// generator unchanged.
func (g *Torch) Randn(n int) []float32 {
	if n <= 0 {
		return []float32{}
	}
	out := make([]float32, n)
	g.RandnInto(out)
	return out
}

// RandnInto fills dst as Randn(len(dst)) would, without allocating.
func (g *Torch) RandnInto(dst []float32) {
	n := len(dst)
	if n < 16 {
		for i := range dst {
			dst[i] = float32(g.NormalFloat64())
		}
		return
	}
	for i := range dst {
		dst[i] = g.uniform32()
	}
	for i := 0; i+16 <= n; i += 16 {
		boxMuller16((*[16]float32)(dst[i : i+16]))
	}
	if n%16 != 0 {
		tail := (*[16]float32)(dst[n-16:])
		for i := range tail {
			tail[i] = g.uniform32()
		}
		boxMuller16(tail)
	}
}

// twoPi32 is 2π rounded to float32, the constant torch broadcasts.
const twoPi32 = float32(2 * math.Pi)

// boxMuller16 transforms 16 uniforms in place: x[j] and x[j+8] become the
// cosine and sine branch of the pair (1-x[j], x[j+8]).
func boxMuller16(x *[16]float32) {
	for j := 0; j < 8; j++ {
		u1 := 1 - x[j]
		u2 := x[j+8]
		radius := sqrt32(float32(-2 * log32(u1)))
		theta := float32(twoPi32 * u2)
		s, c := sincos32(theta)
		// torch finishes with fmadd(n, std, mean); with std 1 and mean 0
		// that is n + 0, which only turns -0 into +0.
		x[j] = float32(radius*c) + 0
		x[j+8] = float32(radius*s) + 0
	}
}

func sqrt32(x float32) float32 {
	// The float64 square root of a float32, rounded to float32, is the
	// correctly rounded float32 square root (53 >= 2*24+2).
	return float32(math.Sqrt(float64(x)))
}

// Clone returns an independent generator in the same state, like
// torch.Generator.get_state followed by set_state on a new generator.
func (g *Torch) Clone() *Torch {
	c := *g
	return &c
}
