package gemm

import "strings"

// kernel is a register-blocked micro-kernel plus the cache blocking that
// suits it.
type kernel struct {
	name string
	// mr×nr is the tile of C one call of micro computes.
	mr, nr int
	// kc is the depth of a packed panel, mc the rows of A packed per block,
	// nc the columns of B packed per task.
	kc, mc, nc int
	// micro computes C[mr×nr] = alpha·Σ_p a[p·mr+i]·b[p·nr+j] + beta·C for
	// p < k, where C row i starts at c[i·ldc]. When beta is 0, C is not read.
	micro func(k int, a, b, c []float32, ldc int, alpha, beta float32)
	// direct, when not nil, is micro reading A unpacked: tile row i, column
	// p at a[i·lda+p].
	direct func(k int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32)
	// half, when not nil, computes only the first half.nr columns of a
	// strip, for strips with no more columns than that.
	half *halfKernel
}

// halfKernel is a narrower variant of a kernel for the last strip of B: it
// reads the same packed panels but computes mr×nr tiles for a smaller nr.
type halfKernel struct {
	nr     int
	micro  func(k int, a, b, c []float32, ldc int, alpha, beta float32)
	direct func(k int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32)
}

// genericKernel is the portable pure-Go kernel.
var genericKernel = &kernel{
	name: "generic4x4",
	mr:   4, nr: 4,
	kc: 256, mc: 128, nc: 512,
	micro: micro4x4Generic,
}

// bestKernel is the fastest kernel this CPU runs, chosen once at start-up.
var bestKernel = pickKernel()

// pickKernel returns the first architecture kernel the CPU supports, else the
// generic one.
func pickKernel() *kernel {
	if ks := archKernels(); len(ks) > 0 {
		return ks[0]
	}
	return genericKernel
}

// KernelName describes the micro-kernel Sgemm and Conv2D use on this CPU:
// "AVX-512 (avx512-12x32)", "AVX2+FMA (avx2-6x16)" or "generic (pure Go,
// generic4x4)" (the only one of builds with the purego tag and of other
// architectures).
func KernelName() string { return kernelName(bestKernel) }

func kernelName(k *kernel) string {
	isa := map[string]string{
		"avx512-12x32": "AVX-512",
		"avx2-6x16":    "AVX2+FMA",
		"generic4x4":   "generic (pure Go,",
	}[k.name]
	if isa == "" {
		return k.name
	}
	if strings.HasSuffix(isa, ",") {
		return isa + " " + k.name + ")"
	}
	return isa + " (" + k.name + ")"
}

// availableKernels lists every kernel this CPU can run, best first.
func availableKernels() []*kernel {
	return append(archKernels(), genericKernel)
}

// micro4x4Generic is the pure-Go 4×4 micro-kernel.
func micro4x4Generic(k int, a, b, c []float32, ldc int, alpha, beta float32) {
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	var c20, c21, c22, c23 float32
	var c30, c31, c32, c33 float32
	a = a[:4*k]
	b = b[:4*k]
	for len(a) >= 4 && len(b) >= 4 {
		a0, a1, a2, a3 := a[0], a[1], a[2], a[3]
		b0, b1, b2, b3 := b[0], b[1], b[2], b[3]
		a, b = a[4:], b[4:]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	store4(c[0*ldc:], c00, c01, c02, c03, alpha, beta)
	store4(c[1*ldc:], c10, c11, c12, c13, alpha, beta)
	store4(c[2*ldc:], c20, c21, c22, c23, alpha, beta)
	store4(c[3*ldc:], c30, c31, c32, c33, alpha, beta)
}

// store4 writes alpha·v + beta·row for four values, not reading row when beta
// is 0.
func store4(row []float32, v0, v1, v2, v3, alpha, beta float32) {
	row = row[:4:4]
	if beta == 0 {
		row[0], row[1], row[2], row[3] = alpha*v0, alpha*v1, alpha*v2, alpha*v3
		return
	}
	row[0] = alpha*v0 + beta*row[0]
	row[1] = alpha*v1 + beta*row[1]
	row[2] = alpha*v2 + beta*row[2]
	row[3] = alpha*v3 + beta*row[3]
}
