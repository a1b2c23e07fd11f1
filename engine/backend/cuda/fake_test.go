package cuda

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/kernels"
)

// fakeGPU stands in for the driver and cuBLAS so that the Device's Go
// machinery (allocator, staging copies, collection of dropped tensors,
// out-of-memory reporting, launch arguments) is tested without a GPU.
type fakeGPU struct {
	mem      map[uint64][]byte
	next     uint64
	budget   uint64
	live     uint64
	host     [][]byte
	funcs    []string
	launches []string
	gemms    [][]int32
	// im2colCols records the column buffer of each im2col launch.
	im2colCols []uint64
	// Stream capture: while capturing, launches and GEMMs go to captured;
	// graphs holds each ended capture and a graph launch replays one into
	// launches.
	capturing     bool
	captured      []string
	graphs        [][]string
	graphLaunches int
	graphsFreed   int
}

// record notes a kernel or GEMM: queued now, or captured into a graph.
func (f *fakeGPU) record(name string) {
	if f.capturing {
		f.captured = append(f.captured, name)
		return
	}
	f.launches = append(f.launches, name)
}

func (f *fakeGPU) at(p, n uint64) []byte {
	for base, b := range f.mem {
		if p >= base && p+n <= base+uint64(len(b)) {
			return b[p-base : p-base+n]
		}
	}
	panic(fmt.Sprintf("fake gpu: access of %d bytes at %#x outside every allocation", n, p))
}

func newFakeDevice(t *testing.T, budget uint64) (*Device, *fakeGPU) {
	t.Helper()
	return newFakeDeviceIn(t, budget, tensor.F32)
}

// newFakeDeviceIn is newFakeDevice storing tensors in precision dt.
func newFakeDeviceIn(t testing.TB, budget uint64, dt tensor.DType) (*Device, *fakeGPU) {
	t.Helper()
	f := &fakeGPU{mem: map[uint64][]byte{}, next: 1 << 32, budget: budget}
	ok := func() result { return cudaSuccess }
	drv := &driver{lib: &library{path: "fake"}, version: 13000}
	drv.cuDeviceGet = func(dev *int32, ordinal int32) result { *dev = ordinal; return ok() }
	drv.cuDevicePrimaryCtxRetain = func(ctx *uintptr, dev int32) result { *ctx = 1; return ok() }
	drv.cuDevicePrimaryCtxRelease = func(int32) result { return ok() }
	drv.cuCtxSetCurrent = func(uintptr) result { return ok() }
	drv.cuStreamCreate = func(s *uintptr, flags uint32) result { *s = 1; return ok() }
	drv.cuStreamDestroy = func(uintptr) result { return ok() }
	drv.cuStreamSynchronize = func(uintptr) result { return ok() }
	drv.cuModuleLoadData = func(m *uintptr, image unsafe.Pointer) result { *m = 1; return ok() }
	drv.cuModuleUnload = func(uintptr) result { return ok() }
	drv.cuModuleGetFunction = func(fn *uintptr, m uintptr, name string) result {
		f.funcs = append(f.funcs, name)
		*fn = uintptr(len(f.funcs))
		return ok()
	}
	drv.cuFuncSetAttribute = func(uintptr, int32, int32) result { return ok() }
	drv.cuLaunchKernel = func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, s uintptr, params, extra unsafe.Pointer) result {
		name := f.funcs[fn-1]
		f.record(name)
		if strings.HasPrefix(name, "im2col") {
			// Parameter 1 of im2col is the column buffer.
			f.im2colCols = append(f.im2colCols, **(**uint64)(unsafe.Add(params, unsafe.Sizeof(uintptr(0)))))
		}
		return ok()
	}
	drv.cuMemAlloc = func(p *uint64, size uint64) result {
		if f.live+size > f.budget {
			return cudaErrOutOfMemory
		}
		*p = f.next
		f.next += (size + 4095) / 4096 * 4096
		f.mem[*p] = make([]byte, size)
		f.live += size
		return ok()
	}
	drv.cuMemFree = func(p uint64) result {
		f.live -= uint64(len(f.mem[p]))
		delete(f.mem, p)
		return ok()
	}
	drv.cuMemGetInfo = func(free, total *uint64) result {
		*free, *total = f.budget-f.live, f.budget
		return ok()
	}
	drv.cuMemHostAlloc = func(p *unsafe.Pointer, size uint64, flags uint32) result {
		b := make([]byte, size)
		f.host = append(f.host, b)
		*p = unsafe.Pointer(&b[0])
		return ok()
	}
	drv.cuMemFreeHost = func(unsafe.Pointer) result { return ok() }
	drv.cuMemcpyHtoDAsync = func(dst uint64, src unsafe.Pointer, n uint64, s uintptr) result {
		copy(f.at(dst, n), unsafe.Slice((*byte)(src), n))
		return ok()
	}
	drv.cuMemcpyDtoHAsync = func(dst unsafe.Pointer, src uint64, n uint64, s uintptr) result {
		copy(unsafe.Slice((*byte)(dst), n), f.at(src, n))
		return ok()
	}
	drv.cuMemcpyDtoDAsync = func(dst, src uint64, n uint64, s uintptr) result {
		if f.capturing {
			f.captured = append(f.captured, "memcpy")
			return ok()
		}
		copy(f.at(dst, n), f.at(src, n))
		return ok()
	}
	drv.cuStreamBeginCapture = func(s uintptr, mode int32) result {
		f.capturing, f.captured = true, nil
		return ok()
	}
	drv.cuStreamEndCapture = func(s uintptr, g *uintptr) result {
		f.capturing = false
		f.graphs = append(f.graphs, f.captured)
		*g = uintptr(len(f.graphs))
		return ok()
	}
	drv.cuGraphInstantiateWithFlags = func(exec *uintptr, g uintptr, flags uint64) result { *exec = g; return ok() }
	drv.cuGraphGetNodes = func(g uintptr, nodes *uintptr, n *uint64) result {
		*n = uint64(len(f.graphs[g-1]))
		return ok()
	}
	drv.cuGraphLaunch = func(exec uintptr, s uintptr) result {
		f.launches = append(f.launches, f.graphs[exec-1]...)
		f.graphLaunches++
		return ok()
	}
	drv.cuGraphExecDestroy = func(uintptr) result { return ok() }
	drv.cuGraphDestroy = func(uintptr) result { f.graphsFreed++; return ok() }
	blas := &cublas{
		create:      func(h *uintptr) int32 { *h = 1; return 0 },
		destroy:     func(uintptr) int32 { return 0 },
		setStream:   func(uintptr, uintptr) int32 { return 0 },
		setMathMode: func(uintptr, int32) int32 { return 0 },
		sgemm: func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32 {
			f.gemms = append(f.gemms, []int32{ta, tb, m, n, k, lda, ldb, ldc})
			f.record("sgemm")
			return 0
		},
	}
	// im2col: cuDNN, if the machine has it, must not see the fake pointers.
	d := newDevice(GPUInfo{Name: "fake", ComputeMajor: 9, MemoryTotal: budget}, drv, blas, Options{Conv: ConvIm2col, Precision: dt})
	d.gcEvery = 0
	if err := d.start([]kernels.Module{{Name: "fake", Image: []byte{0}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, f
}

func TestFakeUploadDownloadRoundTrip(t *testing.T) {
	d, _ := newFakeDevice(t, 64<<20)
	for _, n := range []int{1, 1000, stagingBytes/4 + 12345} { // the last spans two staging chunks
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(i%977) - 0.5
			}
			x := d.Upload(v, n)
			got, err := d.Download(x)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, v) {
				t.Errorf("round trip of %d floats differs", n)
			}
			d.Free(x)
		})
	}
	t.Run("raw_f16", func(t *testing.T) {
		raw := []byte{0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38} // 1, -2, 0.5
		x, err := d.UploadRaw(raw, tensor.F16, 3)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.Download(x)
		if err != nil || !slices.Equal(got, []float32{1, -2, 0.5}) {
			t.Errorf("F16 upload: %v, %v", got, err)
		}
	})
}

// waitReleased waits until the garbage collector has handed at least one
// dropped tensor's block to the device.
func waitReleased(t *testing.T, d *Device) {
	t.Helper()
	for range 200 {
		runtime.GC()
		if d.releasedCount() > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no dropped tensor was collected")
}

func TestFakeDroppedTensorsAreReused(t *testing.T) {
	d, _ := newFakeDevice(t, 64<<20)
	func() {
		for range 4 {
			d.Alloc(256, 1024) // dropped without Free
		}
	}()
	waitReleased(t, d)
	_, cached, before := d.MemoryStats() // run drains the released blocks
	if cached == 0 {
		t.Fatalf("no block came back to the pool")
	}
	x := d.Alloc(256, 1024)
	if _, _, after := d.MemoryStats(); after != before {
		t.Errorf("a collected block was not reused: %d new cuMemAlloc calls", after-before)
	}
	d.Free(x)
}

func TestFakeOutOfMemory(t *testing.T) {
	d, _ := newFakeDevice(t, 8<<20)
	func() { d.Alloc(1 << 20) }() // 4 MiB, dropped
	y := d.Alloc(3 << 19)         // 6 MiB: fits only once the dropped tensor is collected
	if err := d.Sync(context.Background()); err != nil {
		t.Fatalf("allocation after reclaiming a dropped tensor: %v", err)
	}
	z := d.Alloc(3 << 19) // 6 MiB more while y is held: must fail
	err := d.Sync(context.Background())
	var oom *OutOfMemoryError
	if !errors.As(err, &oom) || !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("Sync = %v, want an out-of-memory error", err)
	}
	if oom.Requested != 6<<20 || oom.Total != 8<<20 || !strings.Contains(err.Error(), "requested 6.0 MiB") {
		t.Errorf("error %q: want the request (6 MiB) and the card's memory (8 MiB)", err)
	}
	if _, err := d.Download(z); err == nil {
		t.Errorf("Download after a failed allocation returned no error")
	}
	d.Free(y)
}

func TestFakeFreeTwicePanics(t *testing.T) {
	d, _ := newFakeDevice(t, 1<<20)
	x := d.Alloc(10)
	d.Free(x)
	defer func() {
		if recover() == nil {
			t.Error("second Free did not panic")
		}
	}()
	d.Free(x.Reshape(2, 5))
}

func TestFakeForeignTensorPanics(t *testing.T) {
	d, _ := newFakeDevice(t, 1<<20)
	c := cpu.New()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "does not live on") {
			t.Errorf("recover() = %v, want a panic naming the device", r)
		}
	}()
	d.Unary(backend.SiLU, d.Alloc(3), c.Alloc(3))
}

// TestFakeGemmMapping checks the row-major to column-major mapping of the
// cuBLAS calls (m, n, k and leading dimensions) and the launch sequence.
func TestFakeGemmMapping(t *testing.T) {
	d, f := newFakeDevice(t, 1<<20)
	x, w, b, y := d.Alloc(5, 17), d.Alloc(9, 17), d.Alloc(9), d.Alloc(5, 9)
	d.Linear(y, x, w, b)
	cw, cx, cy := d.Alloc(6, 4, 3, 3), d.Alloc(2, 4, 8, 8), d.Alloc(2, 6, 8, 8)
	d.Conv2D(cy, cx, cw, nil, backend.Conv2DSame(1, 1))
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantLaunch := []string{"sgemm", "bias_rows_f32", "im2col_f32", "sgemm", "im2col_f32", "sgemm"}
	if !slices.Equal(f.launches, wantLaunch) {
		t.Errorf("launches %v, want %v", f.launches, wantLaunch)
	}
	for i, want := range [][]int32{
		{cublasOpT, cublasOpN, 9, 5, 17, 17, 17, 9},   // Linear: yᵀ[9,5] = w[9,17]·xᵀ
		{cublasOpN, cublasOpN, 64, 6, 36, 64, 36, 64}, // conv: outᵀ[64,6] = colᵀ·wᵀ
	} {
		if !slices.Equal(f.gemms[i], want) {
			t.Errorf("gemm %d: (ta tb m n k lda ldb ldc) = %v, want %v", i, f.gemms[i], want)
		}
	}
}

// TestFakeFreeWaitsForEarlierOps frees a tensor while ops submitted before
// the Free have not run yet: a Conv2D (whose im2col buffer is allocated
// when it runs, from the same size class) and a later op that reads the
// tensor. The freed block must not become the im2col buffer.
func TestFakeFreeWaitsForEarlierOps(t *testing.T) {
	d, f := newFakeDevice(t, 1<<30)
	x := d.Alloc(1, 2, 8, 8)
	w := d.Alloc(3, 2, 3, 3)
	conv := d.Alloc(1, 3, 8, 8)
	// 18×64 floats of im2col (4,608 bytes) and 1,200 floats (4,800 bytes)
	// share the 5,120-byte size class.
	if bucketSize(18*64*4) != bucketSize(1200*4) {
		t.Fatal("test sizes are not in one size class")
	}
	tt := d.Alloc(1200)
	ttPtr := tt.Buf.(*buffer).ptr
	y := d.Alloc(1200)
	release := make(chan struct{})
	d.work <- func() { <-release } // hold the owner goroutine
	d.Conv2D(conv, x, w, nil, backend.Conv2DSame(1, 1))
	d.Unary(backend.Neg, y, tt)
	d.Free(tt)
	close(release)
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.im2colCols) != 1 {
		t.Fatalf("%d im2col launches, want 1", len(f.im2colCols))
	}
	if f.im2colCols[0] == ttPtr {
		t.Fatal("the im2col buffer reused the freed tensor's block while a later op still reads it")
	}
}
