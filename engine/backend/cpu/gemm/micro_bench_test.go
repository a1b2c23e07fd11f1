package gemm

import "testing"

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
