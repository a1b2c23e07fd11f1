package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// benchShape is a product to time.
type benchShape struct {
	name           string
	m, n, k        int
	transA, transB bool
}

var gemmBenchShapes = []benchShape{
	{"256", 256, 256, 256, false, false},
	{"1024", 1024, 1024, 1024, false, false},
	{"1024/tA", 1024, 1024, 1024, true, false},
	{"1024/tB", 1024, 1024, 1024, false, true},
	// SD1.5 at 512²: 4096 latent tokens, width 320, head dim 40.
	{"4096x4096x320", 4096, 4096, 320, false, false},
	{"linear/4096x320x320/tB", 4096, 320, 320, false, true},
	{"linear/4096x1280x320/tB", 4096, 1280, 320, false, true},
	{"qk/4096x4096x40/tB", 4096, 4096, 40, false, true},
	{"pv/4096x40x4096", 4096, 40, 4096, false, false},
	// The CPU backend's attention block: 64 query rows at a time.
	{"attnblock/qk/64x4096x40/tB", 64, 4096, 40, false, true},
	{"attnblock/pv/64x40x4096", 64, 40, 4096, false, false},
	{"small/16x16x16", 16, 16, 16, false, false},
	{"small/32x32x32", 32, 32, 32, false, false},
	{"small/64x64x64", 64, 64, 64, false, false},
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = rng.Float32()*2 - 1
	}
	return s
}

// benchOperands returns A, B, C with the minimal leading dimensions.
func benchOperands(s benchShape) (a []float32, lda int, b []float32, ldb int, c []float32) {
	rng := rand.New(rand.NewPCG(1, 1))
	lda, ldb = s.k, s.n
	if s.transA {
		lda = s.m
	}
	if s.transB {
		ldb = s.k
	}
	return randSlice(rng, s.m*s.k), lda, randSlice(rng, s.k*s.n), ldb, make([]float32, s.m*s.n)
}

func reportGFLOPS(b *testing.B, flops float64) {
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func BenchmarkSgemm(b *testing.B) {
	for _, s := range gemmBenchShapes {
		b.Run(s.name, func(b *testing.B) {
			a, lda, bm, ldb, c := benchOperands(s)
			b.SetBytes(int64(4 * (s.m*s.k + s.k*s.n + s.m*s.n)))
			for b.Loop() {
				Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, s.n)
			}
			reportGFLOPS(b, 2*float64(s.m)*float64(s.n)*float64(s.k))
		})
	}
}

// BenchmarkSgemmKernel times each kernel single-threaded at 1024³.
func BenchmarkSgemmKernel(b *testing.B) {
	s := benchShape{name: "1024", m: 1024, n: 1024, k: 1024}
	for _, kern := range availableKernels() {
		b.Run(fmt.Sprintf("%s/%s/1thread", kern.name, s.name), func(b *testing.B) {
			a, lda, bm, ldb, c := benchOperands(s)
			for b.Loop() {
				sgemm(kern, 1, false, false, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, s.n)
			}
			reportGFLOPS(b, 2*float64(s.m)*float64(s.n)*float64(s.k))
		})
	}
}

// BenchmarkGonumSgemm is the baseline: gonum's pure-Go Sgemm, row-major.
func BenchmarkGonumSgemm(b *testing.B) {
	for _, s := range gemmBenchShapes {
		if s.name != "256" && s.name != "1024" && s.name != "4096x4096x320" {
			continue
		}
		b.Run(s.name, func(b *testing.B) {
			a, lda, bm, ldb, c := benchOperands(s)
			tA, tB := blas.NoTrans, blas.NoTrans
			if s.transA {
				tA = blas.Trans
			}
			if s.transB {
				tB = blas.Trans
			}
			b.SetBytes(int64(4 * (s.m*s.k + s.k*s.n + s.m*s.n)))
			for b.Loop() {
				gonum.Implementation{}.Sgemm(tA, tB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, s.n)
			}
			reportGFLOPS(b, 2*float64(s.m)*float64(s.n)*float64(s.k))
		})
	}
}

// convBenchShapes are the convolutions of SD1.5 at 512² (latent 64×64) and
// of its VAE decoder.
var convBenchShapes = []struct {
	name                        string
	c, h, w, oc, k, stride, pad int
}{
	{"3x3/320-320/64x64", 320, 64, 64, 320, 3, 1, 1},
	{"3x3/640-640/32x32", 640, 32, 32, 640, 3, 1, 1},
	{"3x3/1280-1280/16x16", 1280, 16, 16, 1280, 3, 1, 1},
	{"3x3/4-320/64x64", 4, 64, 64, 320, 3, 1, 1},
	{"3x3s2/320-320/64x64", 320, 64, 64, 320, 3, 2, 1},
	{"1x1/320-320/64x64", 320, 64, 64, 320, 1, 1, 0},
	{"vae/3x3/128-128/512x512", 128, 512, 512, 128, 3, 1, 1},
}

func BenchmarkConv2D(b *testing.B) {
	for _, s := range convBenchShapes {
		b.Run(s.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(2, 2))
			x := randSlice(rng, s.c*s.h*s.w)
			weight := randSlice(rng, s.oc*s.c*s.k*s.k)
			bias := randSlice(rng, s.oc)
			oh := (s.h+2*s.pad-s.k)/s.stride + 1
			ow := (s.w+2*s.pad-s.k)/s.stride + 1
			dst := make([]float32, s.oc*oh*ow)
			for b.Loop() {
				Conv2D(dst, x, 1, s.c, s.h, s.w, weight, s.oc, s.k, s.k, s.stride, s.stride, s.pad, s.pad, bias)
			}
			reportGFLOPS(b, 2*float64(s.oc)*float64(s.c*s.k*s.k)*float64(oh*ow))
		})
	}
}

// BenchmarkMicroKernel times one micro-kernel call on L1-resident panels,
// the ceiling for the whole product.
func BenchmarkMicroKernel(b *testing.B) {
	const kc = 256
	for _, kern := range availableKernels() {
		b.Run(kern.name, func(b *testing.B) {
			a := make([]float32, kern.mr*kc)
			bp := make([]float32, kern.nr*kc)
			c := make([]float32, kern.mr*kern.nr)
			for i := range a {
				a[i] = 1
			}
			for i := range bp {
				bp[i] = 1
			}
			for b.Loop() {
				kern.micro(kc, a, bp, c, kern.nr, 1, 1)
			}
			reportGFLOPS(b, 2*float64(kern.mr*kern.nr*kc))
		})
	}
}
