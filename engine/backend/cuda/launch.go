package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// maxDims mirrors MAXDIMS in kernels/common.cuh.
const maxDims = 6

// dims mirrors struct Dims in kernels/common.cuh: an output shape and the
// element strides of up to two sources per output dimension.
type dims struct {
	rank   int32
	shape  [maxDims]int32
	sa, sb [maxDims]int32
}

// words packs the struct as the kernel reads it (19 little-endian int32s).
func (x *dims) words() []uint64 {
	vals := make([]int32, 0, 1+3*maxDims)
	vals = append(vals, x.rank)
	vals = append(vals, x.shape[:]...)
	vals = append(vals, x.sa[:]...)
	vals = append(vals, x.sb[:]...)
	out := make([]uint64, (len(vals)+1)/2)
	for i, v := range vals {
		out[i/2] |= uint64(uint32(v)) << (32 * (i % 2))
	}
	return out
}

// arg is one kernel parameter: a run of 8-byte words the kernel reads from
// (scalars use the low bytes of one word).
type arg []uint64

func ptrArg(p uint64) arg { return arg{p} }
func i32(v int) arg {
	if v < math.MinInt32 || v > math.MaxInt32 {
		panic(fmt.Sprintf("cuda: kernel argument %d overflows int32", v))
	}
	return arg{uint64(uint32(int32(v)))}
}
func f32(v float32) arg   { return arg{uint64(math.Float32bits(v))} }
func dimsArg(x *dims) arg { return x.words() }
func boolArg(v bool) arg {
	if v {
		return i32(1)
	}
	return i32(0)
}

// function returns the kernel called name, searching the loaded modules.
func (d *Device) function(name string) (uintptr, error) {
	if f, ok := d.funcs[name]; ok {
		return f, nil
	}
	for _, m := range d.modules {
		var f uintptr
		if d.drv.cuModuleGetFunction(&f, m, name) == cudaSuccess {
			d.funcs[name] = f
			return f, nil
		}
	}
	return 0, fmt.Errorf("cuda: kernel %s not found in the loaded modules (rebuild kernels)", name)
}

// launch queues kernel name on the stream (owner goroutine only). Failures
// become the sticky error.
func (d *Device) launch(name string, grid [3]int, block int, shmem int, args ...arg) {
	if d.failed() {
		return
	}
	f, err := d.function(name)
	if err != nil {
		d.setErr(err)
		return
	}
	words := d.launchWords[:0]
	for _, a := range args {
		words = append(words, a...)
	}
	d.launchWords = words
	ptrs := d.launchPtrs[:0]
	off := 0
	for _, a := range args {
		ptrs = append(ptrs, unsafe.Pointer(&words[off]))
		off += len(a)
	}
	d.launchPtrs = ptrs
	var params unsafe.Pointer
	if len(ptrs) > 0 {
		params = unsafe.Pointer(&ptrs[0])
	}
	var r result
	d.profiledCall(name, func() {
		r = d.drv.cuLaunchKernel(f, uint32(grid[0]), uint32(grid[1]), uint32(grid[2]), uint32(block), 1, 1, uint32(shmem), d.stream, params, nil)
	})
	if r != cudaSuccess {
		d.setErr(d.drv.errorf("cuLaunchKernel("+name+")", r))
	}
}

// elementwiseBlocks is the grid size of a grid-stride elementwise kernel.
func elementwiseBlocks(n int) int { return max(1, min((n+255)/256, 65536)) }

// launch1D queues a grid-stride kernel over n elements.
func (d *Device) launch1D(name string, n int, args ...arg) {
	if n == 0 {
		return
	}
	d.launch(name, [3]int{elementwiseBlocks(n), 1, 1}, 256, 0, args...)
}

// checkLen panics when a tensor is too large for the 32-bit kernel indices.
func checkLen(op string, s tensor.Shape) {
	if s.NumElements() > math.MaxInt32 {
		panic(fmt.Sprintf("cuda %s: %v has more than 2^31-1 elements", op, s))
	}
}
