package engine

import "github.com/darkroom-ai/darkroom/engine/backend/cpu/gemm"

// CPUKernel describes the matrix-multiply micro-kernel the CPU device uses
// on this machine, chosen at start-up from what the CPU supports:
// "AVX-512 (avx512-12x32)", "AVX2+FMA (avx2-6x16)" or "generic (pure Go,
// generic4x4)".
func CPUKernel() string { return gemm.KernelName() }
