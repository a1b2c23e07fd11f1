package cuda

import (
	"fmt"
	"math/bits"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// GEMMs with a fused bias: cuBLASLt's CUBLASLT_EPILOGUE_BIAS adds a bias
// vector along the rows of its (column-major) output, which is our
// row-major output's columns, the output features of a Linear. With beta =
// 1 and C = D the same call accumulates onto a residual. Linear, LinearAdd
// and LinearFromChannels use it (Options.NoFusedGemm switches it off); a
// shape the heuristics cannot serve falls back to cuBLAS plus the bias
// kernel.

// cuBLASLt enum values (cublasLt.h, CUDA 12 and 13).
const (
	ltDescTransA         = 3 // CUBLASLT_MATMUL_DESC_TRANSA
	ltDescTransB         = 4 // CUBLASLT_MATMUL_DESC_TRANSB
	ltDescEpilogue       = 7 // CUBLASLT_MATMUL_DESC_EPILOGUE
	ltDescBiasPointer    = 8 // CUBLASLT_MATMUL_DESC_BIAS_POINTER
	ltEpilogueDefault    = 1 // CUBLASLT_EPILOGUE_DEFAULT
	ltEpilogueBias       = 4 // CUBLASLT_EPILOGUE_BIAS
	ltPrefMaxWorkspace   = 1 // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
	ltPrefMinAlignA      = 5 // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES (B, C, D follow)
	cublasCompute32FTF32 = 77
	// ltWorkspaceBytes is the persistent workspace of the Lt GEMMs (a
	// fixed buffer, so recorded graphs can use it).
	ltWorkspaceBytes = 32 << 20
)

// ltHeuristic is cublasLtMatmulHeuristicResult_t: the algorithm (8
// uint64), its workspace size, a status, the waves count and 4 reserved
// ints: 96 bytes.
type ltHeuristic struct {
	algo      [8]uint64
	workspace uint64
	state     int32
	_         float32  // wavesCount
	_         [4]int32 // reserved
}

// ltLib holds the cuBLASLt entry points.
type ltLib struct {
	create        func(h *uintptr) int32
	destroy       func(h uintptr) int32
	descCreate    func(d *uintptr, compute int32, scale int32) int32
	descDestroy   func(d uintptr) int32
	descSetAttr   func(d uintptr, attr int32, buf unsafe.Pointer, size uintptr) int32
	layoutCreate  func(l *uintptr, typ int32, rows, cols uint64, ld int64) int32
	layoutDestroy func(l uintptr) int32
	prefCreate    func(p *uintptr) int32
	prefDestroy   func(p uintptr) int32
	prefSetAttr   func(p uintptr, attr int32, buf unsafe.Pointer, size uintptr) int32
	heuristic     func(h, desc, a, b, c, d, pref uintptr, requested int32, results *ltHeuristic, returned *int32) int32
	matmul        func(h, desc uintptr, alpha *float32, a uint64, adesc uintptr, b uint64, bdesc uintptr, beta *float32,
		c uint64, cdesc uintptr, d uint64, ddesc uintptr, algo unsafe.Pointer, ws uint64, wsSize uint64, stream uintptr) int32
}

// ltKey identifies a planned Lt GEMM.
type ltKey struct {
	transA, transB bool
	m, n, k        int
	lda, ldb, ldc  int
	bias, beta     bool
	align          [4]uint32 // of a, b, c and bias, in bytes (≤ 256)
}

// ltPlan is a planned Lt GEMM; ok is false when the heuristics found no
// algorithm (the GEMM then falls back to cuBLAS).
type ltPlan struct {
	ok         bool
	desc       uintptr
	la, lb, lc uintptr
	algo       ltHeuristic
	// label names the call in a profile; why says why a plan is not ok.
	label, why string
}

// epilogueLt is the device's cuBLASLt state (owner goroutine).
type epilogueLt struct {
	lib       *ltLib
	handle    uintptr
	workspace uint64
	plans     map[ltKey]*ltPlan
	err       error
	// one and beta0/beta1 are the scalars, and biasPtr the bias address,
	// whose addresses cuBLASLt reads.
	one, beta0, beta1 float32
	biasPtr           uint64
}

// setup loads the entry points from the cuBLASLt that cuBLAS loaded and
// creates the handle and workspace (owner goroutine). Failure leaves the
// fused GEMMs off.
func (e *epilogueLt) setup(d *Device) {
	e.plans = map[ltKey]*ltPlan{}
	e.one, e.beta0, e.beta1 = 1, 0, 1
	if d.opts.NoFusedGemm {
		e.err = fmt.Errorf("switched off")
		return
	}
	if d.blas.lt == nil {
		e.err = fmt.Errorf("cuBLASLt not loaded")
		return
	}
	l := &ltLib{}
	for _, s := range []struct {
		name string
		fn   any
	}{
		{"cublasLtCreate", &l.create},
		{"cublasLtDestroy", &l.destroy},
		{"cublasLtMatmulDescCreate", &l.descCreate},
		{"cublasLtMatmulDescDestroy", &l.descDestroy},
		{"cublasLtMatmulDescSetAttribute", &l.descSetAttr},
		{"cublasLtMatrixLayoutCreate", &l.layoutCreate},
		{"cublasLtMatrixLayoutDestroy", &l.layoutDestroy},
		{"cublasLtMatmulPreferenceCreate", &l.prefCreate},
		{"cublasLtMatmulPreferenceDestroy", &l.prefDestroy},
		{"cublasLtMatmulPreferenceSetAttribute", &l.prefSetAttr},
		{"cublasLtMatmulAlgoGetHeuristic", &l.heuristic},
		{"cublasLtMatmul", &l.matmul},
	} {
		p, err := d.blas.lt.sym(s.name)
		if err != nil {
			e.err = err
			return
		}
		purego.RegisterFunc(s.fn, p)
	}
	if st := l.create(&e.handle); st != 0 {
		e.err = cublasErr("cublasLtCreate", st)
		return
	}
	if r := d.drv.cuMemAlloc(&e.workspace, ltWorkspaceBytes); r != cudaSuccess {
		l.destroy(e.handle)
		e.handle = 0
		e.err = d.drv.errorf("cuMemAlloc(cuBLASLt workspace)", r)
		return
	}
	e.lib = l
}

// teardown destroys the plans, the workspace and the handle (owner
// goroutine, after the stream drained).
func (e *epilogueLt) teardown(d *Device) {
	if e.lib == nil {
		return
	}
	for _, p := range e.plans {
		e.destroyPlan(p)
	}
	e.plans = nil
	d.drv.cuMemFree(e.workspace)
	e.lib.destroy(e.handle)
	e.lib, e.handle = nil, 0
}

func (e *epilogueLt) destroyPlan(p *ltPlan) {
	l := e.lib
	for _, h := range []uintptr{p.la, p.lb, p.lc} {
		if h != 0 {
			l.layoutDestroy(h)
		}
	}
	if p.desc != 0 {
		l.descDestroy(p.desc)
	}
}

// available reports whether fused GEMMs are on.
func (e *epilogueLt) available() bool { return e.lib != nil }

// alignOf is the power-of-two alignment of a device address, capped at 256.
func alignOf(p uint64) uint32 {
	if p == 0 {
		return 256
	}
	return uint32(min(256, uint64(1)<<bits.TrailingZeros64(p)))
}

// gemmEpilogue runs C = op(A)·op(B) + beta·C + bias (row-major, as gemmT;
// bias along the columns, 0 for none) with cuBLASLt; false means it queued
// nothing and the caller must run cuBLAS and the bias kernel (owner
// goroutine).
func (d *Device) gemmEpilogue(transA, transB bool, m, n, k int, a uint64, lda int, b uint64, ldb int, beta float32, c uint64, ldc int, bias uint64) bool {
	e := &d.ep
	if !e.available() || bias == 0 || (beta != 0 && beta != 1) || m == 0 || n == 0 || k == 0 {
		return false
	}
	if d.failed() {
		return true
	}
	key := ltKey{transA, transB, m, n, k, lda, ldb, ldc, bias != 0, beta != 0,
		[4]uint32{alignOf(a), alignOf(b), alignOf(c), alignOf(bias)}}
	p, ok := e.plans[key]
	if !ok {
		p = e.plan(d, key, bias)
		e.plans[key] = p
	}
	if !p.ok {
		return false
	}
	l := e.lib
	e.biasPtr = bias
	if st := l.descSetAttr(p.desc, ltDescBiasPointer, unsafe.Pointer(&e.biasPtr), unsafe.Sizeof(e.biasPtr)); st != 0 {
		d.setErr(cublasErr("cublasLtMatmulDescSetAttribute(bias)", st))
		return true
	}
	betaPtr := &e.beta0
	if beta != 0 {
		betaPtr = &e.beta1
	}
	// Column-major: D'(n×m) = op(B)'·op(A)'; Lt's A is our B, its B our A.
	var st int32
	d.profiledCall(p.label, func() {
		st = l.matmul(e.handle, p.desc, &e.one, b, p.lb, a, p.la, betaPtr, c, p.lc, c, p.lc,
			unsafe.Pointer(&p.algo.algo[0]), e.workspace, ltWorkspaceBytes, d.stream)
	})
	if st != 0 {
		d.setErr(cublasErr(fmt.Sprintf("cublasLtMatmul(%v m=%d n=%d k=%d)", d.dtype, m, n, k), st))
	}
	return true
}

// plan creates the descriptors of a GEMM and asks the heuristics for an
// algorithm (owner goroutine). The bias pointer is set first: the
// heuristics judge its alignment from it.
func (e *epilogueLt) plan(d *Device, k ltKey, bias uint64) *ltPlan {
	l := e.lib
	p := &ltPlan{}
	fail := func(why string) *ltPlan {
		e.destroyPlan(p)
		return &ltPlan{why: why}
	}
	compute := int32(cublasCompute32F)
	if d.dtype == tensor.F32 && d.opts.TF32 {
		compute = cublasCompute32FTF32
	}
	if st := l.descCreate(&p.desc, compute, cudaR32F); st != 0 {
		return fail(cublasErr("cublasLtMatmulDescCreate", st).Error())
	}
	opLtA, opLtB := int32(cublasOpN), int32(cublasOpN) // Lt's A is our B
	if k.transB {
		opLtA = cublasOpT
	}
	if k.transA {
		opLtB = cublasOpT
	}
	epi := int32(ltEpilogueDefault)
	if k.bias {
		epi = ltEpilogueBias
	}
	e.biasPtr = bias
	if st := l.descSetAttr(p.desc, ltDescBiasPointer, unsafe.Pointer(&e.biasPtr), unsafe.Sizeof(e.biasPtr)); st != 0 {
		return fail(cublasErr("cublasLtMatmulDescSetAttribute(bias)", st).Error())
	}
	for _, a := range []struct {
		attr int32
		v    int32
	}{{ltDescTransA, opLtA}, {ltDescTransB, opLtB}, {ltDescEpilogue, epi}} {
		v := a.v
		if st := l.descSetAttr(p.desc, a.attr, unsafe.Pointer(&v), 4); st != 0 {
			return fail(cublasErr("cublasLtMatmulDescSetAttribute", st).Error())
		}
	}
	dt := int32(d.cudaType())
	// Stored shapes, column-major: our B is [k,n] row-major = (n×k) or, with
	// transB, [n,k] = (k×n); our A is [m,k] = (k×m) or, with transA,
	// [k,m] = (m×k); C is (n×m).
	lbRows, lbCols := k.n, k.k
	if k.transB {
		lbRows, lbCols = k.k, k.n
	}
	laRows, laCols := k.k, k.m
	if k.transA {
		laRows, laCols = k.m, k.k
	}
	for _, x := range []struct {
		h          *uintptr
		rows, cols int
		ld         int
	}{{&p.lb, lbRows, lbCols, k.ldb}, {&p.la, laRows, laCols, k.lda}, {&p.lc, k.n, k.m, k.ldc}} {
		if st := l.layoutCreate(x.h, dt, uint64(x.rows), uint64(x.cols), int64(x.ld)); st != 0 {
			return fail(cublasErr("cublasLtMatrixLayoutCreate", st).Error())
		}
	}
	var pref uintptr
	if st := l.prefCreate(&pref); st != 0 {
		return fail(cublasErr("cublasLtMatmulPreferenceCreate", st).Error())
	}
	defer l.prefDestroy(pref)
	ws := uint64(ltWorkspaceBytes)
	if st := l.prefSetAttr(pref, ltPrefMaxWorkspace, unsafe.Pointer(&ws), 8); st != 0 {
		return fail(cublasErr("cublasLtMatmulPreferenceSetAttribute", st).Error())
	}
	// Lt's A, B, C, D are our b, a, c, c.
	aligns := [4]uint32{k.align[1], k.align[0], k.align[2], k.align[2]}
	for i, v := range aligns {
		v := v
		if st := l.prefSetAttr(pref, ltPrefMinAlignA+int32(i), unsafe.Pointer(&v), 4); st != 0 {
			return fail(cublasErr("cublasLtMatmulPreferenceSetAttribute", st).Error())
		}
	}
	var got int32
	if st := l.heuristic(e.handle, p.desc, p.lb, p.la, p.lc, p.lc, pref, 1, &p.algo, &got); st != 0 || got == 0 || p.algo.state != 0 {
		return fail(fmt.Sprintf("no cuBLASLt algorithm (status %d, %d results)", st, got))
	}
	if p.algo.workspace > ltWorkspaceBytes {
		return fail(fmt.Sprintf("cuBLASLt algorithm wants %s of workspace", formatBytes(p.algo.workspace)))
	}
	p.ok = true
	if d.opts.Profile {
		p.label = fmt.Sprintf("gemm+bias (Lt) %v m=%d n=%d k=%d transA=%v transB=%v beta=%v", d.dtype, k.m, k.n, k.k, k.transA, k.transB, k.beta)
	}
	return p
}

// EpilogueInfo says whether Linear biases are fused into the GEMM
// (cuBLASLt) or added by a separate kernel, and why.
func (d *Device) EpilogueInfo() string {
	var s string
	d.run(func() {
		if d.ep.available() {
			s = fmt.Sprintf("cuBLASLt bias epilogues (%d GEMM shapes planned)", len(d.ep.plans))
			fallback, why := 0, ""
			for _, p := range d.ep.plans {
				if !p.ok {
					fallback, why = fallback+1, p.why
				}
			}
			if fallback > 0 {
				s += fmt.Sprintf("; %d fall back to a bias kernel (%s)", fallback, why)
			}
		} else {
			s = fmt.Sprintf("separate bias kernels (%v)", d.ep.err)
		}
	})
	return s
}
