// Package gemm provides the single-precision matrix multiply (Sgemm,
// SgemmStridedBatched) and 2-D convolution (Conv2D) used by the CPU backend.
//
// Sgemm follows the BLIS design: op(A) and op(B) are packed into panels that
// fit the caches, and a register-blocked micro-kernel, written in assembly
// where the CPU allows (AVX-512 or AVX2+FMA on amd64, chosen at run time),
// computes small tiles of C. A pure-Go kernel serves every other CPU; build
// with the purego tag to use it everywhere. Conv2D runs as one such product
// per image, packing its right operand straight from the image (an implicit
// im2col). docs/performance.md has measurements.
package gemm

import (
	"fmt"
	"runtime"
)

// smallProduct is the largest m·n·k computed by plain loops, below which
// packing costs more than it saves.
const smallProduct = 8 * 8 * 8

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices, where
// op(X) is X, or Xᵀ when the matching trans flag is set. op(A) is m×k, op(B)
// is k×n and C is m×n; lda, ldb and ldc are the row strides of the stored
// matrices (so A is stored m×k, or k×m when transA is set). When beta is 0, C
// is not read, and NaNs in it are overwritten. Only the m×n elements of C are
// written; the padding between its rows is left alone.
//
// Large products run on up to GOMAXPROCS goroutines, all finished before
// Sgemm returns; small ones run on the caller's goroutine. Sgemm may be
// called concurrently as long as the Cs do not overlap. It panics if a
// dimension is negative or a slice is too short for its dimensions and
// stride.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemm(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	sgemm(bestKernel, runtime.GOMAXPROCS(0), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// sgemm is Sgemm with the kernel and thread count given, for checked
// arguments.
func sgemm(kern *kernel, maxWorkers int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if m*n*k <= smallProduct {
		smallGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	workers := workersFor(maxWorkers, m, n, k)
	gemmPacked(kern, workers, m, n, k, alpha, matrix{a, lda, transA}, matrix{b, ldb, transB}, beta, c, ldc)
}

// SgemmStridedBatched computes batch independent products
//
//	C_i = alpha·op(A_i)·op(B_i) + beta·C_i,  i < batch,
//
// with the same shapes and strides as Sgemm, where A_i starts at
// a[i·strideA], B_i at b[i·strideB] and C_i at c[i·strideC]. A stride of 0
// reuses one matrix for every product; the C_i must not overlap. Many small
// products are spread over goroutines whole, large ones are each split as
// Sgemm splits them.
func SgemmStridedBatched(transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	if batch < 0 || strideA < 0 || strideB < 0 || strideC < 0 {
		panic(fmt.Sprintf("gemm: negative batch %d or strides %d, %d, %d", batch, strideA, strideB, strideC))
	}
	if batch == 0 {
		return
	}
	last := batch - 1
	checkGemm(transA, transB, m, n, k, tail(a, last*strideA), lda, tail(b, last*strideB), ldb, tail(c, last*strideC), ldc)
	if m > 0 && n > 0 && strideC < (m-1)*ldc+n && batch > 1 {
		panic(fmt.Sprintf("gemm: strideC %d makes %d×%d outputs with ldc %d overlap", strideC, m, n, ldc))
	}
	maxWorkers := runtime.GOMAXPROCS(0)
	per := workersFor(maxWorkers, m, n, k)
	if per >= maxWorkers || batch == 1 {
		for i := range batch {
			sgemm(bestKernel, maxWorkers, transA, transB, m, n, k, alpha, tail(a, i*strideA), lda, tail(b, i*strideB), ldb, beta, tail(c, i*strideC), ldc)
		}
		return
	}
	// Each product is too small to split well: give whole products to
	// workers.
	workers := min(maxWorkers, batch)
	parallelFor(workers, batch, func(_, i int) {
		sgemm(bestKernel, 1, transA, transB, m, n, k, alpha, tail(a, i*strideA), lda, tail(b, i*strideB), ldb, beta, tail(c, i*strideC), ldc)
	})
}

// tail returns s[off:], or nil when off is past the end: empty matrices may
// lie past the end of their slice, and for others the length check reports
// the problem.
func tail(s []float32, off int) []float32 {
	if off > len(s) {
		return nil
	}
	return s[off:]
}

// checkGemm panics unless the arguments describe a valid product.
func checkGemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("gemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	checkMatrix("a", ar, ac, a, lda)
	checkMatrix("b", br, bc, b, ldb)
	checkMatrix("c", m, n, c, ldc)
}

// checkMatrix panics unless s holds a rows×cols matrix with row stride ld.
func checkMatrix(name string, rows, cols int, s []float32, ld int) {
	if ld < max(1, cols) {
		panic(fmt.Sprintf("gemm: ld%s %d < %d columns", name, ld, cols))
	}
	if rows == 0 || cols == 0 {
		return
	}
	if need := (rows-1)*ld + cols; len(s) < need {
		panic(fmt.Sprintf("gemm: len(%s) %d < %d for a %d×%d matrix with stride %d", name, len(s), need, rows, cols, ld))
	}
}

// scaleC sets C = beta·C, writing zeros without reading C when beta is 0.
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// smallGemm computes a product too small to be worth packing.
func smallGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	scaleC(m, n, beta, c, ldc)
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if transB {
			for j := range row {
				brow := b[j*ldb : j*ldb+k]
				var s float32
				if transA {
					for p, bv := range brow {
						s += a[p*lda+i] * bv
					}
				} else {
					arow := a[i*lda : i*lda+k]
					for p, bv := range brow {
						s += arow[p] * bv
					}
				}
				row[j] += alpha * s
			}
			continue
		}
		for p := 0; p < k; p++ {
			var av float32
			if transA {
				av = alpha * a[p*lda+i]
			} else {
				av = alpha * a[i*lda+p]
			}
			brow := b[p*ldb : p*ldb+n]
			for j, bv := range brow {
				row[j] += av * bv
			}
		}
	}
}
