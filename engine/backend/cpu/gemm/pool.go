package gemm

import (
	"sync"
	"unsafe"
)

// bufPool caches packing buffers between calls, so that steady-state calls
// allocate no large memory. It is the package's only shared state.
var bufPool sync.Pool // of *[]float32

// cacheLine is the alignment of every pooled buffer, in float32s.
const cacheLine = 64 / 4

// getBuf returns a 64-byte aligned buffer of n floats with unspecified
// contents. Return it with putBuf.
func getBuf(n int) *[]float32 {
	if p, ok := bufPool.Get().(*[]float32); ok {
		if cap(*p) >= n {
			*p = (*p)[:n]
			return p
		}
		// Too small: drop it and let the collector reclaim it.
	}
	raw := make([]float32, n+cacheLine)
	off := 0
	if r := uintptr(unsafe.Pointer(&raw[0])) % 64; r != 0 {
		off = int(64-r) / 4
	}
	s := raw[off : off+n : off+n]
	return &s
}

// putBuf returns a buffer from getBuf to the pool.
func putBuf(p *[]float32) { bufPool.Put(p) }
