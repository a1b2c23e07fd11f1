// Package cuda is darkroom's NVIDIA GPU backend. It needs no CUDA SDK to
// build (CGO_ENABLED=0 works): the driver API (libcuda.so.1), cuBLAS,
// cuBLASLt, cuDNN (optional) and NVML are loaded at run time with purego,
// driver entry points are resolved with cuGetProcAddress pinned to the
// CUDA 12.0 ABI so CUDA 12 and 13 drivers both work, and the kernels come
// from fatbins embedded by package kernels. Without a driver or GPU, Open returns an error wrapping
// ErrNoDevice and the engine falls back to the CPU backend.
//
// Threading: each Device owns one goroutine locked to an OS thread
// (runtime.LockOSThread) on which the CUDA context is current; every
// driver and cuBLAS call of the device runs there. Device methods validate
// their arguments on the caller's goroutine (shape misuse panics there, as
// on the CPU), then submit a closure to the owner without waiting: ops run
// in submission order, a caller's Go code overlaps with the owner's kernel
// launches, and a Device may be used from any goroutine. Allocation takes
// cached blocks on the caller's goroutine (cuMemAlloc only on the owner). Kernels run asynchronously on one stream; failures (out of
// memory, kernel faults) become a sticky error that Sync and Download
// return.
package cuda

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/kernels"
)

// stagingBytes is the size of the pinned host buffer uploads and downloads
// go through.
const stagingBytes = 16 << 20

// Options configure Open.
type Options struct {
	// Ordinal is the CUDA device number (0 for the first GPU).
	Ordinal int
	// TF32 lets cuBLAS use TF32 tensor cores for float32 GEMMs (about 3e-4
	// relative error instead of 1e-6). Off by default: the fp32 mode is the
	// parity mode checked against the CPU backend.
	TF32 bool
	// Precision is the storage and tensor-core input type of every tensor
	// on the device: tensor.F32 (the zero value means F32), tensor.F16 or
	// tensor.BF16. The 16-bit modes accumulate GEMMs, attention and
	// normalisation statistics in float32.
	Precision tensor.DType
	// Profile records CUDA events around every kernel and GEMM so that
	// ProfileReport can tell where the GPU time goes (darkroom bench
	// --profile). It switches graph recording off.
	Profile bool
	// NoGraphs switches CUDA graph recording off (RecordGraph then returns
	// an error wrapping backend.ErrGraphsUnavailable and callers run their
	// ops one by one).
	NoGraphs bool
	// Conv picks the convolution algorithm (ConvAuto: cuDNN when it is
	// installed, else im2col).
	Conv ConvStrategy
	// NoFusedGemm adds biases and residuals with separate kernels instead
	// of cuBLASLt epilogues.
	NoFusedGemm bool
	// TuningCache is the file that keeps the per-geometry convolution
	// measurements between processes (see tuning.go): "" is
	// DefaultTuningCache(), "off" measures in every process.
	TuningCache string
}

// ConvStrategy selects how Conv2D runs.
type ConvStrategy uint8

// Convolution strategies.
const (
	// ConvAuto uses cuDNN's implicit-GEMM convolutions when libcudnn is
	// found and takes the case, else im2col.
	ConvAuto ConvStrategy = iota
	// ConvCudnn requires cuDNN: Open fails without it.
	ConvCudnn
	// ConvIm2col always uses im2col + cuBLAS.
	ConvIm2col
)

// Device is one GPU. Create it with Open; Close releases it.
type Device struct {
	info GPUInfo
	drv  *driver
	blas *cublas
	opts Options

	// dtype is the storage type of the device's tensors, es its size in
	// bytes and sfx the suffix of its kernels ("f32", "f16", "bf16").
	dtype tensor.DType
	es    uint64
	sfx   string

	// noRowsKernel records that the loaded fatbins predate binary_rows
	// (owner goroutine only).
	noRowsKernel bool

	work chan func()
	quit chan struct{}
	wg   sync.WaitGroup

	// Owned by the owner goroutine.
	dev     int32
	ctx     uintptr
	stream  uintptr
	handle  uintptr
	modules []uintptr
	funcs   map[string]uintptr
	// poolMu guards pool, which callers use directly for cached blocks,
	// and the graph arenas.
	poolMu sync.Mutex
	pool   pool
	// arenaOf maps the blocks of live graphs to their arena; rec is the
	// arena being recorded as the owner goroutine sees it (set by the op
	// that begins the capture, cleared by the one that ends it) and
	// recCaller as the recording caller sees it.
	arenaOf        map[uint64]*arena
	rec, recCaller *arena
	// graphs holds the live recorded graphs (owner goroutine).
	graphs map[*graphState]struct{}
	// closed is set by Close: graphs dropped afterwards have nothing to free.
	closed atomic.Bool
	// im2colLimit caps the im2col buffer of Conv2D, in floats.
	im2colLimit int
	staging     unsafe.Pointer
	// stagingBusy is set while an async copy may still read staging.
	stagingBusy bool
	// gcEvery is how many bytes of fresh cuMemAlloc trigger a background
	// garbage collection, so unreachable tensors return to the pool.
	gcEvery uint64
	// launchWords and launchPtrs hold kernel arguments for cuLaunchKernel.
	launchWords []uint64
	launchPtrs  []unsafe.Pointer
	// alpha and beta hold GEMM scalars; their addresses are passed to
	// cuBLAS.
	alpha, beta float32
	// prof holds the events of Options.Profile.
	prof profile
	// dnn is the cuDNN convolution path (disabled when cuDNN is missing);
	// convChoices holds the measured strategy per geometry (ConvAuto).
	dnn         convDNN
	convChoices map[convKey]convChoice
	// tune is the tuning cache (nil when off); tunedHits counts the
	// geometries it answered.
	tune      *tuning
	tunedHits int
	// ep runs GEMMs with a fused bias through cuBLASLt.
	ep epilogueLt

	errMu sync.Mutex
	err   error // sticky: the first device failure

	releasedMu sync.Mutex
	// releasedBlocks are blocks of tensors the garbage collector found
	// unreachable; the owner goroutine returns them to the pool.
	releasedBlocks []block
}

var _ backend.Device = (*Device)(nil)

// Open starts the GPU ordinal opts.Ordinal: it retains the device's primary
// context on a dedicated OS thread, creates a stream and a cuBLAS handle,
// and loads the kernels. The error wraps ErrNoDevice when there is no
// driver or no such GPU.
func Open(opts Options) (*Device, error) {
	drv, err := driverOnce()
	if err != nil {
		return nil, err
	}
	var n int32
	if r := drv.cuDeviceGetCount(&n); r != cudaSuccess || n == 0 {
		return nil, fmt.Errorf("%w: the driver sees no GPU", ErrNoDevice)
	}
	if opts.Ordinal < 0 || opts.Ordinal >= int(n) {
		return nil, fmt.Errorf("%w: GPU %d requested, %d present", ErrNoDevice, opts.Ordinal, n)
	}
	info, err := gpuInfo(drv, opts.Ordinal)
	if err != nil {
		return nil, err
	}
	blas, err := cublasOnce()
	if err != nil {
		return nil, err
	}
	switch opts.Precision {
	case tensor.Invalid, tensor.F32:
		opts.Precision = tensor.F32
	case tensor.F16, tensor.BF16:
	default:
		return nil, fmt.Errorf("cuda: precision %v: want F32, F16 or BF16", opts.Precision)
	}
	mods, err := kernelModules()
	if err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	d := newDevice(info, drv, blas, opts)
	if err := d.start(mods); err != nil {
		return nil, err
	}
	return d, nil
}

// start runs the owner goroutine and waits for its setup.
func (d *Device) start(mods []kernels.Module) error {
	ready := make(chan error)
	d.wg.Add(1)
	go d.loop(mods, ready)
	if err := <-ready; err != nil {
		d.wg.Wait()
		return err
	}
	return nil
}

// newDevice builds an unstarted Device over loaded libraries.
func newDevice(info GPUInfo, drv *driver, blas *cublas, opts Options) *Device {
	dt := opts.Precision
	if dt == tensor.Invalid {
		dt = tensor.F32
	}
	return &Device{
		info: info, drv: drv, blas: blas, opts: opts,
		dtype: dt, es: uint64(dt.Size()), sfx: kernelSuffix(dt),
		work:        make(chan func(), queueDepth),
		quit:        make(chan struct{}),
		funcs:       map[string]uintptr{},
		pool:        pool{free: map[uint64][]uint64{}},
		arenaOf:     map[uint64]*arena{},
		graphs:      map[*graphState]struct{}{},
		convChoices: map[convKey]convChoice{},
		im2colLimit: im2colMaxFloats,
		gcEvery:     gcEveryBytes,
	}
}

// tuningKey is what this device's measurements are valid for.
func (d *Device) tuningKey() tuningKey {
	k := tuningKey{GPU: d.info.Name, Arch: d.info.Arch(), Driver: nvmlDriverVersion(), CUDA: versionString(d.drv.version),
		TF32: d.opts.TF32, Workmax: cudnnWorkspaceLimit}
	if d.blas != nil {
		k.CUBLAS = d.blas.Version()
	}
	if d.dnn.lib != nil {
		k.CUDNN = d.dnn.lib.Version()
	}
	return k
}

// kernelModules returns the embedded fatbins, or those in the folder named
// by DARKROOM_CUDA_KERNELS (for kernel development without a rebuild of
// the Go binary).
func kernelModules() ([]kernels.Module, error) {
	if dir := os.Getenv("DARKROOM_CUDA_KERNELS"); dir != "" {
		return kernels.ModulesFrom(os.DirFS(dir))
	}
	return kernels.Modules()
}

// loop is the owner goroutine: it makes the context current on its locked
// OS thread and runs submitted work until Close.
func (d *Device) loop(mods []kernels.Module, ready chan<- error) {
	defer d.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.setup(mods); err != nil {
		d.teardown()
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case f := <-d.work:
			f()
		case <-d.quit:
			d.teardown()
			return
		}
	}
}

func (d *Device) setup(mods []kernels.Module) error {
	drv := d.drv
	if r := drv.cuDeviceGet(&d.dev, int32(d.info.Ordinal)); r != cudaSuccess {
		return drv.errorf("cuDeviceGet", r)
	}
	if r := drv.cuDevicePrimaryCtxRetain(&d.ctx, d.dev); r != cudaSuccess {
		return drv.errorf("cuDevicePrimaryCtxRetain", r)
	}
	if r := drv.cuCtxSetCurrent(d.ctx); r != cudaSuccess {
		return drv.errorf("cuCtxSetCurrent", r)
	}
	if r := drv.cuStreamCreate(&d.stream, 1); r != cudaSuccess { // CU_STREAM_NON_BLOCKING
		return drv.errorf("cuStreamCreate", r)
	}
	if st := d.blas.create(&d.handle); st != 0 {
		return cublasErr("cublasCreate", st)
	}
	if st := d.blas.setStream(d.handle, d.stream); st != 0 {
		return cublasErr("cublasSetStream", st)
	}
	mode := int32(cublasDefaultMath)
	if d.opts.TF32 {
		mode = cublasTF32Math
	}
	if st := d.blas.setMathMode(d.handle, mode); st != 0 {
		return cublasErr("cublasSetMathMode", st)
	}
	for _, m := range mods {
		var h uintptr
		if r := drv.cuModuleLoadData(&h, unsafe.Pointer(&m.Image[0])); r != cudaSuccess {
			return fmt.Errorf("load kernel module %s for %s: %w", m.Name, d.info.Arch(), drv.errorf("cuModuleLoadData", r))
		}
		d.modules = append(d.modules, h)
	}
	// The widest attention variant needs more than the default 48 KiB of
	// dynamic shared memory.
	if f, err := d.function("attention_" + d.sfx + "_d256"); err == nil {
		drv.cuFuncSetAttribute(f, funcAttrMaxDynamicSMB, int32(attentionSharedBytes(256)))
	}
	// So do the wider tensor-core variants' two-stage tiles.
	if d.dtype != tensor.F32 {
		for _, w := range flashWidths {
			for _, warps := range []int{4, 8} {
				if f, err := d.function(d.flashPlanFor(w, warps).name); err == nil {
					drv.cuFuncSetAttribute(f, funcAttrMaxDynamicSMB, int32(flashSharedBytes(w)))
				}
			}
		}
	}
	d.ep.setup(d)
	if d.opts.Conv != ConvIm2col {
		d.dnn.setup(d)
		if d.opts.Conv == ConvCudnn && !d.dnn.available() {
			return fmt.Errorf("cuda: --conv cudnn: %s", d.dnn.info())
		}
	}
	path := d.opts.TuningCache
	if path == "" {
		path = DefaultTuningCache()
	}
	if path != "" && path != "off" {
		d.tune = loadTuning(path, d.tuningKey())
	}
	var p unsafe.Pointer
	if r := drv.cuMemHostAlloc(&p, stagingBytes, 0); r == cudaSuccess {
		d.staging = p
	}
	return nil
}

func (d *Device) teardown() {
	drv := d.drv
	if d.stream != 0 {
		drv.cuStreamSynchronize(d.stream)
	}
	d.dropGraphs()
	d.poolRelease()
	d.releaseProfile()
	// A cache that cannot be written costs the next process its
	// measurements, nothing else.
	_ = d.tune.save()
	d.dnn.teardown()
	d.ep.teardown(d)
	if d.staging != nil {
		drv.cuMemFreeHost(d.staging)
		d.staging = nil
	}
	for _, m := range d.modules {
		drv.cuModuleUnload(m)
	}
	d.modules = nil
	if d.handle != 0 {
		d.blas.destroy(d.handle)
		d.handle = 0
	}
	if d.stream != 0 {
		drv.cuStreamDestroy(d.stream)
		d.stream = 0
	}
	if d.ctx != 0 {
		drv.cuDevicePrimaryCtxRelease(d.dev)
		d.ctx = 0
	}
}

// Close waits for queued work, frees the device's memory and stops the
// owner goroutine. The Device must not be used afterwards.
func (d *Device) Close() error {
	// Graphs dropped from now on leave their memory to teardown.
	d.closed.Store(true)
	err := d.Sync(context.Background())
	close(d.quit)
	d.wg.Wait()
	return err
}

// errWhileRecording is returned by Sync and Download while a graph is
// being recorded (they would end the capture); the recording then fails.
var errWhileRecording = errors.New("cuda: the device is recording a graph: no Sync or Download until it ends")

// queueDepth is how many submitted ops may wait for the owner goroutine
// before a caller blocks.
const queueDepth = 1024

// enqueue submits f to the owner goroutine and returns at once: the
// caller's Go code (shapes, the next op's arguments) overlaps with the
// owner's kernel launches, and a step is not bound by a round trip per op.
// Work runs in submission order. The tensors in keep stay reachable until
// f has run, so the garbage collector cannot recycle their memory under a
// pending op.
func (d *Device) enqueue(f func(), keep ...*backend.Tensor) {
	d.noteRecorded(keep)
	d.work <- d.op(f, keep)
}

// op wraps f for the owner goroutine: keep stays reachable until f has run,
// and collected tensors' blocks return to the pool after it.
func (d *Device) op(f func(), keep []*backend.Tensor) func() {
	return func() {
		f()
		runtime.KeepAlive(keep)
		d.drainReleased()
	}
}

// tryEnqueue is enqueue for callers that must not block on a closed
// device (garbage-collector cleanups): after Close it drops f.
func (d *Device) tryEnqueue(f func(), keep ...*backend.Tensor) {
	select {
	case d.work <- d.op(f, keep):
	case <-d.quit:
	}
}

// run executes f on the owner goroutine after everything submitted before
// and waits for it to return. The tensors in keep stay reachable until f
// has queued its work.
func (d *Device) run(f func(), keep ...*backend.Tensor) {
	done := make(chan struct{})
	d.work <- func() {
		defer close(done)
		f()
		d.drainReleased()
	}
	<-done
	runtime.KeepAlive(keep)
}

// setErr records the first device failure.
func (d *Device) setErr(err error) {
	if err == nil {
		return
	}
	d.errMu.Lock()
	if d.err == nil {
		d.err = err
	}
	d.errMu.Unlock()
}

// failed reports whether a sticky error is set; ops then queue nothing.
func (d *Device) failed() bool {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err != nil
}

func (d *Device) stickyErr() error {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err
}

// Info describes the GPU.
func (d *Device) Info() GPUInfo { return d.info }

// Options returns the options the device was opened with.
func (d *Device) Options() Options { return d.opts }

// Name describes the device.
func (d *Device) Name() string {
	return fmt.Sprintf("cuda:%d %s (%s, %s, %s)", d.info.Ordinal, d.info.Name, d.info.Arch(), formatBytes(d.info.MemoryTotal), PrecisionName(d.dtype))
}

// PrecisionName is the --precision spelling of a storage type ("fp16").
func PrecisionName(dt tensor.DType) string {
	switch dt {
	case tensor.F16:
		return "fp16"
	case tensor.BF16:
		return "bf16"
	}
	return "fp32"
}

// MemoryStats reports bytes held by tensors, bytes cached for reuse
// (including tensors collected since the last op), and the number of
// cuMemAlloc calls made so far.
func (d *Device) MemoryStats() (inUse, cached uint64, allocs int) {
	d.run(func() {
		d.drainReleased()
		d.poolMu.Lock()
		inUse, cached, allocs = d.pool.inUse, d.pool.cached, d.pool.allocs
		d.poolMu.Unlock()
	})
	return
}

// ResetPeakMemory starts a new peak measurement at the bytes in use now.
func (d *Device) ResetPeakMemory() {
	d.run(func() {
		d.drainReleased()
		d.poolMu.Lock()
		d.pool.peak = d.pool.inUse
		d.poolMu.Unlock()
	})
}

// PeakMemory returns the most bytes of device memory darkroom's tensors
// held at once since ResetPeakMemory (or since the device opened).
func (d *Device) PeakMemory() uint64 {
	var p uint64
	d.run(func() {
		d.poolMu.Lock()
		p = d.pool.peak
		d.poolMu.Unlock()
	})
	return p
}

// ptr returns the device address of t's first element.
func (d *Device) ptr(t *backend.Tensor) uint64 {
	b, ok := t.Buf.(*buffer)
	if !ok || b.dev != d {
		panic(fmt.Sprintf("cuda: tensor %v does not live on %s", t, d.Name()))
	}
	if b.freed {
		panic(fmt.Sprintf("cuda: tensor %v used after Free", t))
	}
	if b.ptr == 0 {
		return 0 // failed allocation; the sticky error stops every op
	}
	return b.ptr + uint64(t.Offset)*d.es
}

// kernelSuffix names the kernel variant for a storage type.
func kernelSuffix(dt tensor.DType) string {
	switch dt {
	case tensor.F16:
		return "f16"
	case tensor.BF16:
		return "bf16"
	}
	return "f32"
}

// kernel returns the name of kernel base in the device's precision.
func (d *Device) kernel(base string) string { return base + "_" + d.sfx }

// cudaType is the cudaDataType_t of the device's storage type.
func (d *Device) cudaType() uintptr {
	switch d.dtype {
	case tensor.F16:
		return cudaR16F
	case tensor.BF16:
		return cudaR16BF
	}
	return cudaR32F
}

// Precision returns the storage type of the device's tensors.
func (d *Device) Precision() tensor.DType { return d.dtype }

// hostBytes converts float32 values to the device's storage bytes.
func (d *Device) hostBytes(v []float32) []byte {
	switch d.dtype {
	case tensor.F16, tensor.BF16:
		out := make([]byte, 2*len(v))
		conv := tensor.F32ToF16
		if d.dtype == tensor.BF16 {
			conv = tensor.F32ToBF16
		}
		for i, f := range v {
			binary.LittleEndian.PutUint16(out[2*i:], conv(f))
		}
		return out
	}
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// optPtr is ptr for an optional tensor (0 for nil).
func (d *Device) optPtr(t *backend.Tensor) uint64 {
	if t == nil {
		return 0
	}
	return d.ptr(t)
}

// alloc allocates scratch bytes on the owner goroutine; a failure becomes
// the sticky error and returns an empty buffer.
func (d *Device) alloc(bytes uint64) *buffer { return d.allocFor(bytes, true) }

// allocFor is alloc for the owner's own scratch memory (owner) or for a
// caller's Alloc (which joins the caller's recording, if any).
func (d *Device) allocFor(bytes uint64, owner bool) *buffer {
	if bytes == 0 {
		return &buffer{dev: d}
	}
	b, err := d.poolGet(bytes, owner)
	if err != nil {
		d.setErr(err)
		return &buffer{dev: d}
	}
	return b
}

// Alloc returns an uninitialised tensor in the device's precision. An
// allocation failure is reported by Sync; the tensor is then unusable.
func (d *Device) Alloc(shape ...int) *backend.Tensor {
	s := tensor.Shape(shape).Clone()
	n := s.NumElements()
	if n < 0 || n > math.MaxInt32 {
		panic(fmt.Sprintf("cuda: tensor of shape %v has %d elements; the limit is 2^31-1", s, n))
	}
	// A cached block is taken here; only a new cuMemAlloc needs the owner.
	var b *buffer
	if n == 0 {
		b = &buffer{dev: d}
	} else if b = d.poolTake(uint64(n)*d.es, false); b == nil {
		d.run(func() { b = d.allocFor(uint64(n)*d.es, false) })
	}
	d.collectWhileRecording()
	if b.ptr != 0 {
		// Memory of a tensor that becomes unreachable without Free goes
		// back to the pool (see drainReleased).
		b.cleanup = runtime.AddCleanup(b, d.released, block{ptr: b.ptr, size: b.size})
	}
	return &backend.Tensor{Shape: s, DType: d.dtype, Buf: b}
}

// Upload copies host float32 data into a new device tensor (rounded to the
// device's precision).
func (d *Device) Upload(data []float32, shape ...int) *backend.Tensor {
	t := d.Alloc(shape...)
	if len(data) != t.Len() {
		panic(fmt.Sprintf("cuda: upload %d values into shape %v", len(data), t.Shape))
	}
	if len(data) > 0 {
		raw := d.hostBytes(data)
		p := d.ptr(t)
		d.run(func() { d.copyIn(p, raw) }, t)
	}
	return t
}

// copyIn queues a host-to-device copy of src to dst through the pinned
// staging buffer (runs on the owner goroutine). src may be reused as soon
// as copyIn returns.
func (d *Device) copyIn(dst uint64, src []byte) {
	if d.failed() || dst == 0 {
		return
	}
	if d.rec != nil {
		// A recorded copy would read the staging buffer's later contents.
		d.rec.bad = "an upload from host memory was queued while recording"
		return
	}
	if d.staging == nil {
		// No pinned memory: copy straight from Go memory and wait.
		r := d.drv.cuMemcpyHtoDAsync(dst, unsafe.Pointer(&src[0]), uint64(len(src)), d.stream)
		if r == cudaSuccess {
			r = d.drv.cuStreamSynchronize(d.stream)
		}
		d.setErr(d.drv.errorf("cuMemcpyHtoD", r))
		return
	}
	stage := unsafe.Slice((*byte)(d.staging), stagingBytes)
	for off := 0; off < len(src); off += stagingBytes {
		if d.stagingBusy {
			if r := d.drv.cuStreamSynchronize(d.stream); r != cudaSuccess {
				d.setErr(d.drv.errorf("cuStreamSynchronize", r))
				return
			}
		}
		n := copy(stage, src[off:])
		if r := d.drv.cuMemcpyHtoDAsync(dst+uint64(off), d.staging, uint64(n), d.stream); r != cudaSuccess {
			d.setErr(d.drv.errorf("cuMemcpyHtoDAsync", r))
			return
		}
		d.stagingBusy = true
	}
}

// copyOut copies device memory into dst, waiting for all queued work.
func (d *Device) copyOut(dst []byte, src uint64) error {
	if err := d.stickyErr(); err != nil {
		return err
	}
	if d.rec != nil {
		d.rec.bad = "a download was asked for while recording"
		return errWhileRecording
	}
	if d.staging == nil {
		r := d.drv.cuMemcpyDtoHAsync(unsafe.Pointer(&dst[0]), src, uint64(len(dst)), d.stream)
		if r == cudaSuccess {
			r = d.drv.cuStreamSynchronize(d.stream)
		}
		return d.drv.errorf("cuMemcpyDtoH", r)
	}
	stage := unsafe.Slice((*byte)(d.staging), stagingBytes)
	for off := 0; off < len(dst); off += stagingBytes {
		n := min(stagingBytes, len(dst)-off)
		if r := d.drv.cuMemcpyDtoHAsync(d.staging, src+uint64(off), uint64(n), d.stream); r != cudaSuccess {
			return d.drv.errorf("cuMemcpyDtoHAsync", r)
		}
		if r := d.drv.cuStreamSynchronize(d.stream); r != cudaSuccess {
			return d.drv.errorf("cuStreamSynchronize", r)
		}
		copy(dst[off:off+n], stage)
	}
	d.stagingBusy = false
	return nil
}

// uploadChunkBytes bounds the host buffer UploadRaw converts weights of
// another dtype in: a tensor of any size goes to the device in chunks of at
// most this many bytes of the device's precision.
const uploadChunkBytes = 4 << 20

// uploadBufs recycles UploadRaw's conversion buffers between tensors.
var uploadBufs = sync.Pool{New: func() any { b := make([]byte, uploadChunkBytes); return &b }}

// UploadRaw copies stored weight bytes into a new device tensor: bytes
// already in the device's precision are copied as they are, others are
// converted on the host straight into the device's precision (F8, BF16 or
// F32 to F16, ...; rounding as Upload of the float32 values would), a few
// MiB at a time.
func (d *Device) UploadRaw(raw []byte, dt tensor.DType, shape ...int) (*backend.Tensor, error) {
	n := tensor.Shape(shape).NumElements()
	if dt.Size() == 0 || len(raw) != dt.Size()*n {
		return nil, fmt.Errorf("cuda: upload %d bytes of %v into shape %v", len(raw), dt, shape)
	}
	if dt != d.dtype {
		// Refuse a dtype pair Convert does not handle before allocating.
		if err := tensor.Convert(d.dtype, nil, dt, nil); err != nil {
			return nil, fmt.Errorf("cuda: upload %v weights: %w", dt, err)
		}
	}
	t := d.Alloc(shape...)
	if n == 0 {
		return t, d.stickyErr()
	}
	p := d.ptr(t)
	if dt == d.dtype {
		d.run(func() { d.copyIn(p, raw) }, t)
		return t, d.stickyErr()
	}
	bp := uploadBufs.Get().(*[]byte)
	defer uploadBufs.Put(bp)
	err := convertChunks(d.dtype, dt, raw, *bp, func(off int, chunk []byte) bool {
		// copyIn has copied chunk into the staging buffer (or to the
		// device) when run returns, so the buffer is free for the next.
		d.run(func() { d.copyIn(p+uint64(off), chunk) }, t)
		return !d.failed()
	})
	if err != nil {
		d.Free(t)
		return nil, fmt.Errorf("cuda: upload %v weights: %w", dt, err)
	}
	return t, d.stickyErr()
}

// convertChunks converts raw (elements of dtype src) to dtype dst through
// buf, one chunk of at most len(buf) destination bytes at a time, and hands
// each chunk to emit with its byte offset in the converted whole. The chunk
// aliases buf: emit must be done with it when it returns. emit returns
// false to stop early (the device failed).
func convertChunks(dst, src tensor.DType, raw []byte, buf []byte, emit func(off int, chunk []byte) bool) error {
	ss, ds := src.Size(), dst.Size()
	if ss == 0 || ds == 0 {
		return fmt.Errorf("convert %v to %v: unsupported dtype", src, dst)
	}
	per := len(buf) / ds // elements per chunk
	if per == 0 {
		return fmt.Errorf("convert %v to %v: a %d-byte buffer holds no element", src, dst, len(buf))
	}
	n := len(raw) / ss
	for i := 0; i < n; i += per {
		m := min(per, n-i)
		chunk := buf[:m*ds]
		if err := tensor.Convert(dst, chunk, src, raw[i*ss:(i+m)*ss]); err != nil {
			return err
		}
		if !emit(i*ds, chunk) {
			return nil
		}
	}
	return nil
}

// Download waits for queued work and copies t to host memory as float32.
func (d *Device) Download(t *backend.Tensor) ([]float32, error) {
	out := make([]float32, t.Len())
	if len(out) == 0 {
		return out, d.stickyErr()
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), 4*len(out))
	if d.dtype != tensor.F32 {
		raw = make([]byte, int(d.es)*len(out))
	}
	var err error
	p := d.ptr(t)
	d.run(func() { err = d.copyOut(raw, p) }, t)
	if errors.Is(err, errWhileRecording) {
		return nil, err
	}
	if err != nil {
		d.setErr(err)
		return nil, err
	}
	if d.dtype != tensor.F32 {
		if err := tensor.ToFloat32(d.dtype, raw, out); err != nil {
			return nil, fmt.Errorf("cuda: download: %w", err)
		}
	}
	return out, nil
}

// Free returns t's memory to the device's cache. Views made by Reshape
// share their tensor's memory: free only one of them, once.
func (d *Device) Free(t *backend.Tensor) {
	b, ok := t.Buf.(*buffer)
	if !ok || b.dev != d {
		panic(fmt.Sprintf("cuda: free of tensor %v that does not live on %s", t, d.Name()))
	}
	if b.freed {
		panic(fmt.Sprintf("cuda: tensor %v freed twice", t))
	}
	b.freed = true
	if b.ptr == 0 {
		return
	}
	b.cleanup.Stop()
	// The block goes back to the pool on the owner goroutine, after every
	// op submitted before the Free has been queued on the stream: an op
	// submitted earlier that allocates scratch memory when it runs (im2col,
	// GroupNorm partials) can then never be handed this block while a later
	// op still reads it, and an out-of-memory reclaim never frees it under a
	// pending op.
	d.enqueue(func() { d.poolPut(b) })
}

// Sync waits for all queued work and returns the sticky device error, or
// ctx's error if it ends first (the work then still completes).
func (d *Device) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	res := make(chan error, 1)
	go func() {
		d.run(func() {
			if d.rec != nil {
				d.rec.bad = "Sync was called while recording"
				res <- errWhileRecording
				return
			}
			res <- d.drv.errorf("cuStreamSynchronize", d.drv.cuStreamSynchronize(d.stream))
		})
	}()
	select {
	case err := <-res:
		if errors.Is(err, errWhileRecording) {
			return err
		}
		d.setErr(err)
		return d.stickyErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}
