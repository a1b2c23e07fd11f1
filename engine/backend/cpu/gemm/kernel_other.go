//go:build !amd64 || purego

package gemm

// archKernels lists the assembly kernels this CPU supports: none here.
func archKernels() []*kernel { return nil }

// transpose8 has no fast path here: it does no columns.
func transpose8(dst []float32, w int, src []float32, ld, kc int) int { return 0 }

// copyRows has no fast path here.
func copyRows(dst, src []float32, offs []int, width, ldd int) bool { return false }
