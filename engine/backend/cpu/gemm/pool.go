package gemm

import (
	"math/bits"
	"sync"
	"unsafe"
)

// bufPools cache packing buffers between calls, so that steady-state calls
// allocate no large memory. Pool i holds buffers of 2^i floats, so a buffer
// taken from a pool always fits. They are the package's only shared state.
var bufPools [48]sync.Pool // of *[]float32

// cacheLine is the alignment of every pooled buffer, in float32s.
const cacheLine = 64 / 4

// getBuf returns a 64-byte aligned buffer of n floats with unspecified
// contents. Return it with putBuf.
func getBuf(n int) *[]float32 {
	class := bits.Len(uint(max(n, 1) - 1))
	if p, ok := bufPools[class].Get().(*[]float32); ok {
		*p = (*p)[:n]
		return p
	}
	size := 1 << class
	raw := make([]float32, size+cacheLine)
	off := 0
	if r := uintptr(unsafe.Pointer(&raw[0])) % 64; r != 0 {
		off = int(64-r) / 4
	}
	s := raw[off : off+n : off+size]
	return &s
}

// putBuf returns a buffer from getBuf to its pool.
func putBuf(p *[]float32) {
	class := bits.Len(uint(cap(*p) - 1))
	bufPools[class].Put(p)
}
