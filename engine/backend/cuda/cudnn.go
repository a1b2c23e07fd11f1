package cuda

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/ebitengine/purego"
)

// This file is the optional cuDNN convolution path: libcudnn is loaded at
// run time like cuBLAS, through its legacy (descriptor) API, which cuDNN 9
// still ships in libcudnn.so.9 and its cnn/ops sub-libraries. The path is
// optional: without cuDNN, or for a geometry it cannot do, Conv2D keeps its
// im2col + GEMM path.

// cuDNN enum values (cuDNN 9 headers: cudnn_graph.h for the data type,
// math type, tensor format and convolution mode; cudnnConvolutionFwdAlgo_t
// for the forward algorithms). The legacy values are the same in cuDNN 8.
const (
	cudnnDataFloat    = 0 // CUDNN_DATA_FLOAT
	cudnnDataHalf     = 2 // CUDNN_DATA_HALF
	cudnnDataBFloat16 = 9 // CUDNN_DATA_BFLOAT16

	cudnnTensorNCHW       = 0 // CUDNN_TENSOR_NCHW
	cudnnCrossCorrelation = 1 // CUDNN_CROSS_CORRELATION

	cudnnDefaultMath                 = 0 // CUDNN_DEFAULT_MATH: TF32 allowed for float on sm_80+
	cudnnTensorOpMath                = 1 // CUDNN_TENSOR_OP_MATH
	cudnnTensorOpMathAllowConversion = 2 // CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: float inputs rounded to half
	cudnnFMAMath                     = 3 // CUDNN_FMA_MATH: CUDA cores only, no TF32

	// cudnnFwdAlgoCount is CUDNN_CONVOLUTION_FWD_ALGO_COUNT: the most
	// results cudnnGetConvolutionForwardAlgorithm_v7 returns.
	cudnnFwdAlgoCount = 8
)

// cudnnFwdAlgoNames names cudnnConvolutionFwdAlgo_t values for profiler
// labels and messages.
var cudnnFwdAlgoNames = [cudnnFwdAlgoCount]string{
	"implicit_gemm", "implicit_precomp_gemm", "gemm", "direct", "fft", "fft_tiling", "winograd", "winograd_nonfused",
}

// cudnnWorkspaceLimit is the largest workspace a convolution may ask for;
// an algorithm that wants more is skipped (im2col's column buffer has the
// same bound).
const cudnnWorkspaceLimit = 512 << 20

// cudnnFwdPerf is cudnnConvolutionFwdAlgoPerf_t (cudnn_cnn.h): algo and
// status are C enums (int), time a float, memory a size_t, so the Go
// layout (memory at byte 16, mathType at 28, 48 bytes in all on 64-bit
// platforms) is the C one; TestCudnnPerfLayout checks it.
type cudnnFwdPerf struct {
	algo        int32
	status      int32
	time        float32
	memory      uintptr
	determinism int32
	mathType    int32
	reserved    [3]int32
}

// cudnnLib is the table of cuDNN entry points the backend uses.
type cudnnLib struct {
	lib *library
	// version is cudnnGetVersion: 91002 for 9.10.2 (8907 for 8.9.7).
	version int

	getVersion    func() uintptr
	errorString   func(st int32) string
	create        func(h *uintptr) int32
	destroy       func(h uintptr) int32
	setStream     func(h, stream uintptr) int32
	createTensor  func(t *uintptr) int32
	destroyTensor func(t uintptr) int32
	setTensor4d   func(t uintptr, format, dataType, n, c, h, w int32) int32
	createFilter  func(f *uintptr) int32
	destroyFilter func(f uintptr) int32
	setFilter4d   func(f uintptr, dataType, format, k, c, h, w int32) int32
	createConv    func(c *uintptr) int32
	destroyConv   func(c uintptr) int32
	setConv2d     func(c uintptr, padH, padW, strideH, strideW, dilationH, dilationW, mode, computeType int32) int32
	setConvMath   func(c uintptr, mathType int32) int32
	outputDim     func(c, x, f uintptr, n, ch, h, w *int32) int32
	forwardAlgo   func(h, x, f, c, y uintptr, requested int32, returned *int32, perf *cudnnFwdPerf) int32

	// findAlgo times every algorithm (cudnnFindConvolutionForwardAlgorithm).
	findAlgo      func(h, x, f, c, y uintptr, requested int32, returned *int32, perf *cudnnFwdPerf) int32
	forwardWsSize func(h, x, f, c, y uintptr, algo int32, size *uintptr) int32
	convForward   func(h uintptr, alpha *float32, xDesc uintptr, x uint64, fDesc uintptr, w uint64, c uintptr, algo int32,
		workspace uint64, workspaceBytes uintptr, beta *float32, yDesc uintptr, y uint64) int32
}

// cudnnOnce caches cuDNN for the process.
var cudnnOnce = sync.OnceValues(func() (*cudnnLib, error) {
	return loadCudnn([]string{"libcudnn.so.9", "libcudnn.so.8"}, defaultSearchDirs())
})

// loadCudnn opens the first of names found by the system loader or in
// dirs and resolves the entry points.
func loadCudnn(names, dirs []string) (*cudnnLib, error) {
	lib, err := openLibrary(names, dirs)
	if err != nil {
		return nil, fmt.Errorf("cuDNN not found (install cuDNN 9, e.g. pip install nvidia-cudnn-cu12, or set LD_LIBRARY_PATH): %w", err)
	}
	preloadCudnnParts(lib.path)
	l := &cudnnLib{lib: lib}
	if err := l.resolve(); err != nil {
		return nil, fmt.Errorf("cuDNN %s: %w", lib.path, err)
	}
	l.version = int(l.getVersion())
	return l, nil
}

// cudnnParts are the sub-libraries that libcudnn.so loads by bare name
// (cuDNN 9, then cuDNN 8), in dependency order.
var cudnnParts = map[string][]string{
	"9": {"libcudnn_graph.so.9", "libcudnn_engines_precompiled.so.9", "libcudnn_engines_runtime_compiled.so.9",
		"libcudnn_heuristic.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9"},
	"8": {"libcudnn_ops_infer.so.8", "libcudnn_cnn_infer.so.8"},
}

// preloadCudnnParts opens, from the folder libcudnn was found in, the
// sub-libraries it will ask the loader for by name: a folder found by
// darkroom's search (a pip wheel's nvidia/cudnn/lib, say) is not on the
// loader's path, and a library already loaded is found by its soname.
// Failures are ignored (cuDNN then reports what is missing when it needs
// it). A library the system loader found by name needs nothing.
func preloadCudnnParts(path string) {
	if !filepath.IsAbs(path) {
		return
	}
	dir, base := filepath.Split(path)
	for _, name := range cudnnParts[base[strings.LastIndexByte(base, '.')+1:]] {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		}
	}
}

func (l *cudnnLib) resolve() error {
	for _, e := range []struct {
		name string
		fn   any
	}{
		{"cudnnGetVersion", &l.getVersion},
		{"cudnnGetErrorString", &l.errorString},
		{"cudnnCreate", &l.create},
		{"cudnnDestroy", &l.destroy},
		{"cudnnSetStream", &l.setStream},
		{"cudnnCreateTensorDescriptor", &l.createTensor},
		{"cudnnDestroyTensorDescriptor", &l.destroyTensor},
		{"cudnnSetTensor4dDescriptor", &l.setTensor4d},
		{"cudnnCreateFilterDescriptor", &l.createFilter},
		{"cudnnDestroyFilterDescriptor", &l.destroyFilter},
		{"cudnnSetFilter4dDescriptor", &l.setFilter4d},
		{"cudnnCreateConvolutionDescriptor", &l.createConv},
		{"cudnnDestroyConvolutionDescriptor", &l.destroyConv},
		{"cudnnSetConvolution2dDescriptor", &l.setConv2d},
		{"cudnnSetConvolutionMathType", &l.setConvMath},
		{"cudnnGetConvolution2dForwardOutputDim", &l.outputDim},
		{"cudnnGetConvolutionForwardAlgorithm_v7", &l.forwardAlgo},
		{"cudnnFindConvolutionForwardAlgorithm", &l.findAlgo},
		{"cudnnGetConvolutionForwardWorkspaceSize", &l.forwardWsSize},
		{"cudnnConvolutionForward", &l.convForward},
	} {
		p, err := l.lib.sym(e.name)
		if err != nil {
			return err
		}
		purego.RegisterFunc(e.fn, p)
	}
	return nil
}

// Version returns "9.10.2".
func (l *cudnnLib) Version() string { return cudnnVersionString(l.version) }

// cudnnVersionString formats cudnnGetVersion: major·10000 + minor·100 +
// patch since cuDNN 9, major·1000 + minor·100 + patch before.
func cudnnVersionString(v int) string {
	if v >= 90000 {
		return fmt.Sprintf("%d.%d.%d", v/10000, v%10000/100, v%100)
	}
	return fmt.Sprintf("%d.%d.%d", v/1000, v%1000/100, v%100)
}

// cudnnStatusNames maps cuDNN 9 cudnnStatus_t codes (cudnn_graph.h) to
// their names. cuDNN 9 groups codes by thousands (1000s uncategorised,
// 2000s bad parameters, 3000s not supported, 4000s internal, 5000s
// execution); the small codes of cuDNN 8 are not listed.
var cudnnStatusNames = map[int32]string{
	0:    "CUDNN_STATUS_SUCCESS",
	1001: "CUDNN_STATUS_NOT_INITIALIZED",
	1002: "CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH",
	1003: "CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH",
	1004: "CUDNN_STATUS_DEPRECATED",
	1005: "CUDNN_STATUS_LICENSE_ERROR",
	1006: "CUDNN_STATUS_RUNTIME_IN_PROGRESS",
	1007: "CUDNN_STATUS_RUNTIME_FP_OVERFLOW",
	1008: "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED",
	2000: "CUDNN_STATUS_BAD_PARAM",
	2001: "CUDNN_STATUS_INVALID_VALUE",
	2002: "CUDNN_STATUS_BAD_PARAM_NULL_POINTER",
	2003: "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER",
	2004: "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED",
	2005: "CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND",
	2006: "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT",
	2007: "CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH",
	2008: "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH",
	2009: "CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES",
	2010: "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE",
	2011: "CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH",
	2012: "CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE",
	3000: "CUDNN_STATUS_NOT_SUPPORTED",
	3001: "CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN",
	3002: "CUDNN_STATUS_NOT_SUPPORTED_SHAPE",
	3003: "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE",
	3004: "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT",
	3005: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER",
	3006: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART",
	3007: "CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH",
	3008: "CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING",
	3009: "CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE",
	3010: "CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT",
	3011: "CUDNN_STATUS_NOT_SUPPORTED_PADDING",
	3012: "CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM",
	3013: "CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API",
	4000: "CUDNN_STATUS_INTERNAL_ERROR",
	4001: "CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED",
	4002: "CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE",
	4003: "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
	4004: "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
	4005: "CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM",
	4006: "CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED",
	5000: "CUDNN_STATUS_EXECUTION_FAILED",
	5001: "CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER",
	5002: "CUDNN_STATUS_EXECUTION_FAILED_CUBLAS",
	5003: "CUDNN_STATUS_EXECUTION_FAILED_CUDART",
	5004: "CUDNN_STATUS_EXECUTION_FAILED_CURAND",
}

// cudnnStatusName names a cudnnStatus_t ("CUDNN_STATUS_1234" when
// unknown).
func cudnnStatusName(st int32) string {
	if name, ok := cudnnStatusNames[st]; ok {
		return name
	}
	return fmt.Sprintf("CUDNN_STATUS_%d", st)
}

// errorf wraps a non-zero cudnnStatus_t with the call that returned it and
// cuDNN's own text; nil for success.
func (l *cudnnLib) errorf(op string, st int32) error {
	if st == 0 {
		return nil
	}
	msg := ""
	if l != nil && l.errorString != nil {
		msg = ": " + l.errorString(st)
	}
	return fmt.Errorf("cuda: %s: %s (%d)%s", op, cudnnStatusName(st), st, msg)
}

// cudnnDataType is the cudnnDataType_t of a storage type.
func cudnnDataType(dt tensor.DType) int32 {
	switch dt {
	case tensor.F16:
		return cudnnDataHalf
	case tensor.BF16:
		return cudnnDataBFloat16
	}
	return cudnnDataFloat
}

// cudnnRequestMath is the math type set on a new convolution descriptor:
// tensor cores for 16-bit storage; for float32 CUDA-core FMA (the parity
// mode, no TF32) unless tf32 allows cuDNN's default (TF32 on sm_80+).
func cudnnRequestMath(dt tensor.DType, tf32 bool) int32 {
	switch {
	case dt == tensor.F16 || dt == tensor.BF16:
		return cudnnTensorOpMath
	case tf32:
		return cudnnDefaultMath
	}
	return cudnnFMAMath
}

// cudnnAcceptMath reports whether an algorithm the heuristics return with
// math type m may run: in float32 parity mode only FMA math (a tensor-op or
// default result could use TF32), with TF32 anything but rounding float32
// inputs to half, in 16-bit storage anything.
func cudnnAcceptMath(dt tensor.DType, tf32 bool, m int32) bool {
	switch {
	case dt == tensor.F16 || dt == tensor.BF16:
		return m >= cudnnDefaultMath && m <= cudnnFMAMath
	case tf32:
		return m == cudnnDefaultMath || m == cudnnTensorOpMath || m == cudnnFMAMath
	}
	return m == cudnnFMAMath
}

// convDNN is a device's cuDNN state (owner goroutine only): the handle on
// the device's stream and a plan per convolution geometry. The zero value
// is a disabled path; setup enables it.
type convDNN struct {
	lib    *cudnnLib
	handle uintptr
	plans  map[convKey]*convPlan
	// err says why the path is disabled (nil while enabled or before setup).
	err error

	// perf receives the heuristics' results, alpha and beta are the
	// convolution's scale factors; their addresses are passed to cuDNN.
	perf        [cudnnFwdAlgoCount]cudnnFwdPerf
	alpha, beta float32
}

// convKey identifies a convolution geometry in a storage type.
type convKey struct {
	n, c, h, w, oc, kh, kw int
	strideH, strideW       int
	padH, padW             int
	dtype                  tensor.DType
}

// String describes the geometry for messages.
func (k convKey) String() string {
	return fmt.Sprintf("%s n=%d c=%d %dx%d oc=%d %dx%d stride %dx%d pad %dx%d",
		kernelSuffix(k.dtype), k.n, k.c, k.h, k.w, k.oc, k.kh, k.kw, k.strideH, k.strideW, k.padH, k.padW)
}

// convPlan is what cuDNN needs to run one geometry. A plan with why set
// records that cuDNN cannot run it (it has no descriptors), so the question
// is asked once.
type convPlan struct {
	x, y, filter, conv uintptr
	algo, mathType     int32
	workspace          uint64
	// ms is the algorithm's time as cudnnFind measured it (0 when the
	// plan came from the heuristics).
	ms float32
	// label names the call in a profile (Options.Profile only).
	label string
	why   string
}

// setup enables the cuDNN path (owner goroutine, once the stream
// exists): it loads the library, creates the handle and binds it to the
// stream. A failure is not fatal: the path stays disabled and info says
// why.
func (s *convDNN) setup(d *Device) {
	lib, err := cudnnOnce()
	if err != nil {
		s.err = err
		return
	}
	var h uintptr
	if st := lib.create(&h); st != 0 {
		s.err = fmt.Errorf("cuDNN %s unusable: %w", lib.Version(), lib.errorf("cudnnCreate", st))
		return
	}
	if st := lib.setStream(h, d.stream); st != 0 {
		lib.destroy(h)
		s.err = fmt.Errorf("cuDNN %s unusable: %w", lib.Version(), lib.errorf("cudnnSetStream", st))
		return
	}
	s.lib, s.handle, s.err = lib, h, nil
	s.plans = map[convKey]*convPlan{}
}

// teardown destroys every plan's descriptors and the handle (owner
// goroutine, before the stream is destroyed). The path is disabled
// afterwards.
func (s *convDNN) teardown() {
	if s.lib == nil {
		return
	}
	for _, p := range s.plans {
		s.destroyPlan(p)
	}
	s.plans = nil
	if s.handle != 0 {
		s.lib.destroy(s.handle)
		s.handle = 0
	}
}

// available reports whether the path is enabled.
func (s *convDNN) available() bool { return s.handle != 0 }

// info is the cuDNN version and where it was found, or why the path is
// disabled ("cuDNN not found (...): library not found: tried ...").
func (s *convDNN) info() string {
	switch {
	case s.handle != 0:
		return fmt.Sprintf("cuDNN %s (%s)", s.lib.Version(), s.lib.lib.path)
	case s.err != nil:
		return s.err.Error()
	}
	return "cuDNN not set up"
}

// destroyPlan releases a plan's descriptors.
func (s *convDNN) destroyPlan(p *convPlan) {
	l := s.lib
	if p.x != 0 {
		l.destroyTensor(p.x)
	}
	if p.y != 0 {
		l.destroyTensor(p.y)
	}
	if p.filter != 0 {
		l.destroyFilter(p.filter)
	}
	if p.conv != 0 {
		l.destroyConv(p.conv)
	}
	*p = convPlan{why: p.why}
}

// conv queues y = conv(x, w) without bias (x [n,c,h,w], w [oc,c,kh,kw], y
// [n,oc,oh,ow], NCHW, cross-correlation) on the device's stream and
// returns true (owner goroutine). It returns false, queuing nothing, when
// the path is disabled or cuDNN cannot do the geometry (asymmetric
// padding, no acceptable algorithm), so that the caller falls back to
// im2col. An error of cudnnConvolutionForward becomes the sticky error.
// After an earlier device failure it queues nothing and returns true.
func (s *convDNN) conv(d *Device, n, c, h, w, oc, kh, kw int, p backend.Conv2DParams, x, wt, y uint64, beta float32) bool {
	if s.handle == 0 || p.PadTop != p.PadBottom || p.PadLeft != p.PadRight {
		return false
	}
	k := convKey{n, c, h, w, oc, kh, kw, p.StrideH, p.StrideW, p.PadTop, p.PadLeft, d.dtype}
	if d.failed() {
		return true
	}
	plan := s.planFor(d, k)
	if plan.why != "" {
		return false
	}
	var ws *buffer
	var wsPtr uint64
	if plan.workspace > 0 {
		// Scratch memory per call, as im2col's column buffer: stream
		// order keeps it apart from the next op that takes the block.
		ws = d.alloc(plan.workspace)
		if ws.ptr == 0 {
			return true // the allocation failure is the sticky error
		}
		wsPtr = ws.ptr
	}
	s.alpha, s.beta = 1, beta
	var st int32
	d.profiledCall(plan.label, func() {
		st = s.lib.convForward(s.handle, &s.alpha, plan.x, x, plan.filter, wt, plan.conv, plan.algo,
			wsPtr, uintptr(plan.workspace), &s.beta, plan.y, y)
	})
	if ws != nil {
		d.poolPut(ws)
	}
	if st != 0 {
		d.setErr(s.lib.errorf(fmt.Sprintf("cudnnConvolutionForward(%v, algo %s)", k, cudnnFwdAlgoNames[plan.algo]), st))
	}
	return true
}

// planFor returns the cached plan of geometry k, making it first.
func (s *convDNN) planFor(d *Device, k convKey) *convPlan {
	plan, ok := s.plans[k]
	if !ok {
		plan = s.plan(d, k)
		s.plans[k] = plan
	}
	return plan
}

// plan builds the descriptors of geometry k and picks its algorithm: the
// fastest that cudnnFindConvolutionForwardAlgorithm measures, or while a
// graph is being recorded (nothing may run then) the heuristics' first
// choice; in both cases the first successful result whose math type the
// device accepts and whose workspace fits cudnnWorkspaceLimit.
func (s *convDNN) plan(d *Device, k convKey) *convPlan {
	l := s.lib
	p := &convPlan{}
	fail := func(format string, args ...any) *convPlan {
		s.destroyPlan(p)
		return &convPlan{why: fmt.Sprintf("%v: ", k) + fmt.Sprintf(format, args...)}
	}
	if k.n <= 0 || k.c <= 0 || k.h <= 0 || k.w <= 0 || k.oc <= 0 || k.kh <= 0 || k.kw <= 0 ||
		k.strideH <= 0 || k.strideW <= 0 || k.padH < 0 || k.padW < 0 {
		return fail("empty or invalid geometry")
	}
	oh, ow := (k.h+2*k.padH-k.kh)/k.strideH+1, (k.w+2*k.padW-k.kw)/k.strideW+1
	if oh <= 0 || ow <= 0 {
		return fail("empty output")
	}
	for _, v := range []int{k.n * k.c * k.h * k.w, k.n * k.oc * oh * ow, k.oc * k.c * k.kh * k.kw} {
		if v > math.MaxInt32 {
			return fail("%d elements exceed int32", v)
		}
	}
	dt := cudnnDataType(k.dtype)
	if st := l.createTensor(&p.x); st != 0 {
		return fail("%v", l.errorf("cudnnCreateTensorDescriptor", st))
	}
	if st := l.createTensor(&p.y); st != 0 {
		return fail("%v", l.errorf("cudnnCreateTensorDescriptor", st))
	}
	if st := l.createFilter(&p.filter); st != 0 {
		return fail("%v", l.errorf("cudnnCreateFilterDescriptor", st))
	}
	if st := l.createConv(&p.conv); st != 0 {
		return fail("%v", l.errorf("cudnnCreateConvolutionDescriptor", st))
	}
	if st := l.setTensor4d(p.x, cudnnTensorNCHW, dt, int32(k.n), int32(k.c), int32(k.h), int32(k.w)); st != 0 {
		return fail("%v", l.errorf("cudnnSetTensor4dDescriptor(x)", st))
	}
	if st := l.setFilter4d(p.filter, dt, cudnnTensorNCHW, int32(k.oc), int32(k.c), int32(k.kh), int32(k.kw)); st != 0 {
		return fail("%v", l.errorf("cudnnSetFilter4dDescriptor", st))
	}
	if st := l.setConv2d(p.conv, int32(k.padH), int32(k.padW), int32(k.strideH), int32(k.strideW), 1, 1,
		cudnnCrossCorrelation, cudnnDataFloat); st != 0 {
		return fail("%v", l.errorf("cudnnSetConvolution2dDescriptor", st))
	}
	tf32 := d.opts.TF32
	if st := l.setConvMath(p.conv, cudnnRequestMath(k.dtype, tf32)); st != 0 {
		return fail("%v", l.errorf("cudnnSetConvolutionMathType", st))
	}
	var gn, gc, gh, gw int32
	if st := l.outputDim(p.conv, p.x, p.filter, &gn, &gc, &gh, &gw); st != 0 {
		return fail("%v", l.errorf("cudnnGetConvolution2dForwardOutputDim", st))
	}
	if int(gn) != k.n || int(gc) != k.oc || int(gh) != oh || int(gw) != ow {
		return fail("cuDNN output %dx%dx%dx%d, want %dx%dx%dx%d", gn, gc, gh, gw, k.n, k.oc, oh, ow)
	}
	if st := l.setTensor4d(p.y, cudnnTensorNCHW, dt, int32(k.n), int32(k.oc), int32(oh), int32(ow)); st != 0 {
		return fail("%v", l.errorf("cudnnSetTensor4dDescriptor(y)", st))
	}
	// A geometry the tuning cache knows takes its algorithm without a
	// search, when cuDNN still accepts it.
	if t, hit := d.tune.lookup(k); hit && t.Algo >= 0 && t.Algo < cudnnFwdAlgoCount && cudnnAcceptMath(k.dtype, tf32, t.Math) {
		var size uintptr
		if l.setConvMath(p.conv, t.Math) == 0 && l.forwardWsSize(s.handle, p.x, p.filter, p.conv, p.y, t.Algo, &size) == 0 && uint64(size) <= cudnnWorkspaceLimit {
			p.algo, p.mathType, p.workspace, p.ms = t.Algo, t.Math, uint64(size), t.CudnnMs
			if d.opts.Profile {
				p.label = cudnnLabel(k, oh, ow, cudnnFwdAlgoNames[t.Algo])
			}
			return p
		}
		if st := l.setConvMath(p.conv, cudnnRequestMath(k.dtype, tf32)); st != 0 {
			return fail("%v", l.errorf("cudnnSetConvolutionMathType", st))
		}
	}
	var count int32
	s.perf = [cudnnFwdAlgoCount]cudnnFwdPerf{}
	find := d.rec == nil
	if find {
		if st := l.findAlgo(s.handle, p.x, p.filter, p.conv, p.y, cudnnFwdAlgoCount, &count, &s.perf[0]); st != 0 {
			return fail("%v", l.errorf("cudnnFindConvolutionForwardAlgorithm", st))
		}
	} else if st := l.forwardAlgo(s.handle, p.x, p.filter, p.conv, p.y, cudnnFwdAlgoCount, &count, &s.perf[0]); st != 0 {
		return fail("%v", l.errorf("cudnnGetConvolutionForwardAlgorithm_v7", st))
	}
	var rejected []string
	for _, r := range s.perf[:max(0, min(int(count), cudnnFwdAlgoCount))] {
		if r.algo < 0 || r.algo >= cudnnFwdAlgoCount {
			continue
		}
		name := cudnnFwdAlgoNames[r.algo]
		if r.status != 0 {
			rejected = append(rejected, fmt.Sprintf("%s: %s", name, cudnnStatusName(r.status)))
			continue
		}
		if !cudnnAcceptMath(k.dtype, tf32, r.mathType) {
			rejected = append(rejected, fmt.Sprintf("%s: math type %d", name, r.mathType))
			continue
		}
		// The descriptor's math type selects the kernels together with the
		// algorithm, so it must be the one the result was found with.
		if st := l.setConvMath(p.conv, r.mathType); st != 0 {
			rejected = append(rejected, fmt.Sprintf("%s: %v", name, l.errorf("cudnnSetConvolutionMathType", st)))
			continue
		}
		var size uintptr
		if st := l.forwardWsSize(s.handle, p.x, p.filter, p.conv, p.y, r.algo, &size); st != 0 {
			rejected = append(rejected, fmt.Sprintf("%s: %v", name, l.errorf("cudnnGetConvolutionForwardWorkspaceSize", st)))
			continue
		}
		ws := uint64(max(size, r.memory))
		if ws > cudnnWorkspaceLimit {
			rejected = append(rejected, fmt.Sprintf("%s: workspace %s", name, formatBytes(ws)))
			continue
		}
		p.algo, p.mathType, p.workspace = r.algo, r.mathType, ws
		if find {
			p.ms = r.time
		}
		if d.opts.Profile {
			p.label = cudnnLabel(k, oh, ow, name)
		}
		return p
	}
	return fail("no usable algorithm among %d (%s)", count, strings.Join(rejected, "; "))
}

// cudnnLabel names a convolution in a profile: "cudnn conv f16 n=2 c=320
// 64x64 oc=320 3x3 s1 p1 algo=implicit_precomp_gemm".
func cudnnLabel(k convKey, oh, ow int, algo string) string {
	stride := fmt.Sprint(k.strideH)
	if k.strideW != k.strideH {
		stride = fmt.Sprintf("%dx%d", k.strideH, k.strideW)
	}
	pad := fmt.Sprint(k.padH)
	if k.padW != k.padH {
		pad = fmt.Sprintf("%dx%d", k.padH, k.padW)
	}
	return fmt.Sprintf("cudnn conv %s n=%d c=%d %dx%d oc=%d %dx%d s%s p%s algo=%s",
		kernelSuffix(k.dtype), k.n, k.c, k.h, k.w, k.oc, k.kh, k.kw, stride, pad, algo)
}
