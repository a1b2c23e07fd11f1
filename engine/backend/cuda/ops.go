package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// im2colMaxFloats caps the im2col buffer of Conv2D (256 MiB); larger
// convolutions are done in chunks of output positions.
const im2colMaxFloats = 64 << 20

func checkSame(op string, a, b *backend.Tensor) {
	if !a.Shape.Equal(b.Shape) {
		panic(fmt.Sprintf("cuda %s: shape %v != %v", op, a.Shape, b.Shape))
	}
}

// gemm queues a row-major C[m,n] = alpha·A[m,k]·op(B) + beta·C with
// cuBLAS in the device's precision (float32 accumulation always): B is
// [k,n] (ldb n) or, with transB, [n,k] (ldb k). Owner goroutine only.
func (d *Device) gemm(transB bool, m, n, k int, alpha float32, a uint64, lda int, b uint64, ldb int, beta float32, c uint64, ldc int) {
	d.gemmT(false, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// gemmT is gemm with A optionally transposed too (stored [k,m], lda m).
// Row-major C is column-major Cᵀ, so the call computes
// Cᵀ = op(B)ᵀ·op(A)ᵀ.
func (d *Device) gemmT(transA, transB bool, m, n, k int, alpha float32, a uint64, lda int, b uint64, ldb int, beta float32, c uint64, ldc int) {
	if d.failed() || m == 0 || n == 0 {
		return
	}
	for _, v := range []int{m, n, k, lda, ldb, ldc} {
		if v > math.MaxInt32 {
			panic(fmt.Sprintf("cuda gemm: dimension %d exceeds int32", v))
		}
	}
	opB, opA := int32(cublasOpN), int32(cublasOpN)
	if transB {
		opB = cublasOpT
	}
	if transA {
		opA = cublasOpT
	}
	// The scalars live in the Device so that their addresses stay valid
	// for the call.
	d.alpha, d.beta = alpha, beta
	label := ""
	if d.opts.Profile {
		label = fmt.Sprintf("gemm %v m=%d n=%d k=%d transA=%v transB=%v", d.dtype, m, n, k, transA, transB)
	}
	if d.dtype == tensor.F32 {
		var st int32
		d.profiledCall(label, func() {
			st = d.blas.sgemm(d.handle, opB, opA, int32(n), int32(m), int32(k), &d.alpha, b, int32(ldb), a, int32(lda), &d.beta, c, int32(ldc))
		})
		if st != 0 {
			d.setErr(cublasErr(fmt.Sprintf("cublasSgemm(m=%d n=%d k=%d)", m, n, k), st))
		}
		return
	}
	dt := int32(d.cudaType())
	var st int32
	d.profiledCall(label, func() {
		st = d.blas.gemmEx(d.handle, opB, opA, int32(n), int32(m), int32(k), &d.alpha, b, dt, int32(ldb),
			a, dt, int32(lda), &d.beta, c, dt, int32(ldc), cublasCompute32F, cublasGemmDefault)
	})
	if st != 0 {
		d.setErr(cublasErr(fmt.Sprintf("cublasGemmEx(%v, m=%d n=%d k=%d)", d.dtype, m, n, k), st))
	}
}

// MatMul computes dst = a·b (b transposed when transB), with b shared by
// every batch or batched like a.
func (d *Device) MatMul(dst, a, b *backend.Tensor, transB bool) {
	if len(a.Shape) < 2 || len(b.Shape) < 2 {
		panic(fmt.Sprintf("cuda matmul: need rank ≥ 2, got %v and %v", a.Shape, b.Shape))
	}
	m, k := a.Shape[len(a.Shape)-2], a.Shape[len(a.Shape)-1]
	batch := a.Len() / max(m*k, 1)
	var kb, n int
	if transB {
		n, kb = b.Shape[len(b.Shape)-2], b.Shape[len(b.Shape)-1]
	} else {
		kb, n = b.Shape[len(b.Shape)-2], b.Shape[len(b.Shape)-1]
	}
	bBatch := b.Len() / max(kb*n, 1)
	if kb != k || (bBatch != 1 && bBatch != batch) || dst.Len() != batch*m*n {
		panic(fmt.Sprintf("cuda matmul: shapes %v · %v (transB=%v) -> %v", a.Shape, b.Shape, transB, dst.Shape))
	}
	ldb := n
	if transB {
		ldb = k
	}
	ap, bp, cp, es := d.ptr(a), d.ptr(b), d.ptr(dst), d.es
	d.enqueue(func() {
		if bBatch == 1 {
			d.gemm(transB, batch*m, n, k, 1, ap, k, bp, ldb, 0, cp, n)
			return
		}
		for i := range batch {
			d.gemm(transB, m, n, k, 1, ap+uint64(i*m*k)*es, k, bp+uint64(i*k*n)*es, ldb, 0, cp+uint64(i*m*n)*es, n)
		}
	}, dst, a, b)
}

// Linear computes dst = x·wᵀ + bias (the bias fused into the GEMM with
// cuBLASLt where available).
func (d *Device) Linear(dst, x, w, bias *backend.Tensor) {
	out, in := w.Shape[0], w.Shape[1]
	if x.Shape[len(x.Shape)-1] != in || dst.Len() != x.Len()/in*out {
		panic(fmt.Sprintf("cuda linear: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	if bias != nil && bias.Len() != out {
		panic(fmt.Sprintf("cuda linear: bias %v for %d outputs", bias.Shape, out))
	}
	rows := x.Len() / in
	xp, wp, cp, bp := d.ptr(x), d.ptr(w), d.ptr(dst), d.optPtr(bias)
	d.enqueue(func() { d.linearGemm(false, true, rows, out, in, xp, in, wp, in, 0, cp, out, bp) }, dst, x, w, bias)
}

// Conv2D computes a 2-D convolution as im2col + SGEMM per image (1×1
// stride-1 unpadded convolutions skip im2col), then adds the bias.
func (d *Device) Conv2D(dst, x, w, bias *backend.Tensor, p backend.Conv2DParams) {
	d.convolve(dst, x, w, bias, p, false)
}

// checkConv validates a convolution's shapes (caller's goroutine).
func checkConv(dst, x, w, bias *backend.Tensor, p backend.Conv2DParams) {
	n, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	oc, kc, kh, kw := w.Shape[0], w.Shape[1], w.Shape[2], w.Shape[3]
	oh, ow := p.OutSize(h, wd, kh, kw)
	if kc != c || !dst.Shape.Equal(tensor.Shape{n, oc, oh, ow}) {
		panic(fmt.Sprintf("cuda conv2d: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	if bias != nil && bias.Len() != oc {
		panic(fmt.Sprintf("cuda conv2d: bias %v for %d channels", bias.Shape, oc))
	}
	checkLen("conv2d", dst.Shape)
}

// convGeom is a convolution's geometry.
type convGeom struct {
	n, c, h, w, oc, kh, kw int
	p                      backend.Conv2DParams
}

// outSize returns the output's height and width.
func (g convGeom) outSize() (int, int) { return g.p.OutSize(g.h, g.w, g.kh, g.kw) }

// key is the geometry as cuDNN plans and the measured choices know it.
func (g convGeom) key(dt tensor.DType) convKey {
	return convKey{g.n, g.c, g.h, g.w, g.oc, g.kh, g.kw, g.p.StrideH, g.p.StrideW, g.p.PadTop, g.p.PadLeft, dt}
}

// convolve queues dst = conv(x, w) + bias, or with accumulate dst +=
// conv(x, w) (+ bias).
func (d *Device) convolve(dst, x, w, bias *backend.Tensor, p backend.Conv2DParams, accumulate bool) {
	checkConv(dst, x, w, bias, p)
	g := convGeom{x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], w.Shape[0], w.Shape[2], w.Shape[3], p}
	oh, ow := g.outSize()
	xp, wp, op, bp := d.ptr(x), d.ptr(w), d.ptr(dst), d.optPtr(bias)
	var beta float32
	if accumulate {
		beta = 1
	}
	d.enqueue(func() {
		if !d.convCudnnFor(g, xp, wp, op, beta) {
			d.convIm2col(g, xp, wp, op, beta)
		}
		if bias != nil {
			d.biasChannels(op, g.n*g.oc*oh*ow, oh*ow, g.oc, bp)
		}
	}, dst, x, w, bias)
}

// convIm2col queues y = conv(x, w) + beta·y as im2col + a GEMM per image
// (owner goroutine); a 1×1, stride-1, unpadded convolution is the GEMM
// alone.
func (d *Device) convIm2col(g convGeom, xp, wp, op uint64, beta float32) {
	n, c, h, wd, oc, kh, kw, p, es := g.n, g.c, g.h, g.w, g.oc, g.kh, g.kw, g.p, d.es
	oh, ow := g.outSize()
	ckk := c * kh * kw
	spatial := oh * ow
	if kh == 1 && kw == 1 && p.StrideH == 1 && p.StrideW == 1 && p.PadTop == 0 && p.PadLeft == 0 && p.PadBottom == 0 && p.PadRight == 0 {
		for i := range n {
			d.gemm(false, oc, spatial, c, 1, wp, c, xp+uint64(i*c*h*wd)*es, spatial, beta, op+uint64(i*oc*spatial)*es, spatial)
		}
		return
	}
	chunk := max(1, min(spatial, d.im2colLimit/ckk))
	col := d.alloc(uint64(ckk*chunk) * es)
	if col.ptr == 0 {
		return
	}
	for i := range n {
		xi := xp + uint64(i*c*h*wd)*es
		oi := op + uint64(i*oc*spatial)*es
		for s0 := 0; s0 < spatial; s0 += chunk {
			cnt := min(chunk, spatial-s0)
			// One grid row per col row (at most 65535 per launch), eight
			// output positions per thread.
			for r0 := 0; r0 < ckk; r0 += maxGridY {
				rows := min(maxGridY, ckk-r0)
				d.launch(d.kernel("im2col"), [3]int{min((cnt+2047)/2048, 1024), rows, 1}, 256, 0, ptrArg(xi), ptrArg(col.ptr),
					i32(h), i32(wd), i32(kh), i32(kw), i32(p.StrideH), i32(p.StrideW), i32(p.PadTop), i32(p.PadLeft),
					i32(ow), i32(s0), i32(cnt), i32(r0))
			}
			d.gemm(false, oc, cnt, ckk, 1, wp, ckk, col.ptr, cnt, beta, oi+uint64(s0)*es, spatial)
		}
	}
	d.poolPut(col)
}

// maxGridY is CUDA's limit on a grid's y dimension.
const maxGridY = 65535

// groupNormSplits is how many blocks share one group so that a GroupNorm
// fills the GPU: one block per group when there are enough groups (or the
// groups are small), else up to enough blocks for about 512 in all, each
// with at least 8192 elements.
func groupNormSplits(groupCount, length int) int {
	const target, minChunk = 512, 8192
	if groupCount >= target/2 || length < 2*minChunk {
		return 1
	}
	return max(1, min((target+groupCount-1)/groupCount, length/minChunk))
}

// normThreads picks a block size (a multiple of 32, at most limit) for a
// reduction over n elements.
func normThreads(n, limit int) int {
	t := (n + 31) / 32 * 32
	return max(32, min(t, limit))
}

// GroupNorm normalises groups of channels (and fuses SiLU when asked).
func (d *Device) GroupNorm(dst, x, gamma, beta *backend.Tensor, groups int, eps float32, silu bool) {
	checkSame("groupnorm", dst, x)
	n, c := x.Shape[0], x.Shape[1]
	if groups <= 0 || c%groups != 0 {
		panic(fmt.Sprintf("cuda groupnorm: %d channels not divisible by %d groups", c, groups))
	}
	checkLen("groupnorm", x.Shape)
	spatial := x.Len() / max(n*c, 1)
	xp, yp, gp, bp := d.ptr(x), d.ptr(dst), d.optPtr(gamma), d.optPtr(beta)
	length := c / groups * spatial
	threads := normThreads(length, 1024)
	splits := groupNormSplits(n*groups, length)
	// The 16-byte variants need whole vectors per channel and aligned rows.
	sfx := ""
	if spatial%vecElems(d.es) == 0 && xp%16 == 0 && yp%16 == 0 {
		sfx = "_vec"
	}
	d.enqueue(func() {
		if splits == 1 {
			d.launch(d.kernel("groupnorm"+sfx), [3]int{n * groups, 1, 1}, threads, 0,
				ptrArg(xp), ptrArg(yp), ptrArg(gp), ptrArg(bp), i32(c), i32(groups), i32(spatial), f32(eps), boolArg(silu))
			return
		}
		part := d.alloc(uint64(n*groups*splits*3) * 4)
		if part.ptr == 0 {
			return
		}
		grid := [3]int{n * groups, splits, 1}
		d.launch(d.kernel("groupnorm_stats"+sfx), grid, 512, 0, ptrArg(xp), ptrArg(part.ptr), i32(length), i32(splits))
		d.launch(d.kernel("groupnorm_apply"+sfx), grid, 512, 0, ptrArg(xp), ptrArg(yp), ptrArg(gp), ptrArg(bp),
			ptrArg(part.ptr), i32(c), i32(groups), i32(spatial), i32(splits), f32(eps), boolArg(silu))
		d.poolPut(part)
	}, dst, x, gamma, beta)
}

// LayerNorm normalises over the last dimension.
func (d *Device) LayerNorm(dst, x, gamma, beta *backend.Tensor, eps float32) {
	checkSame("layernorm", dst, x)
	checkLen("layernorm", x.Shape)
	dim := x.Shape[len(x.Shape)-1]
	rows := x.Len() / max(dim, 1)
	if rows == 0 {
		return
	}
	xp, yp, gp, bp := d.ptr(x), d.ptr(dst), d.optPtr(gamma), d.optPtr(beta)
	d.enqueue(func() {
		d.launch(d.kernel("layernorm"), [3]int{rows, 1, 1}, normThreads(dim, 512), 0,
			ptrArg(xp), ptrArg(yp), ptrArg(gp), ptrArg(bp), i32(dim), f32(eps))
	}, dst, x, gamma, beta)
}

// RMSNorm scales each row by the reciprocal root mean square of its
// values over the last dimension (float32 accumulation), then by weight.
func (d *Device) RMSNorm(dst, x, weight *backend.Tensor, eps float32) {
	checkSame("rmsnorm", dst, x)
	checkLen("rmsnorm", x.Shape)
	dim := x.Shape[len(x.Shape)-1]
	rows := x.Len() / max(dim, 1)
	if rows == 0 || dim == 0 {
		return
	}
	if weight != nil && weight.Len() != dim {
		panic(fmt.Sprintf("rmsnorm: weight %v for rows of %d", weight.Shape, dim))
	}
	xp, yp, wp := d.ptr(x), d.ptr(dst), d.optPtr(weight)
	d.enqueue(func() {
		d.launch(d.kernel("rmsnorm"), [3]int{rows, 1, 1}, normThreads(dim, 512), 0,
			ptrArg(xp), ptrArg(yp), ptrArg(wp), i32(dim), f32(eps))
	}, dst, x, weight)
}

// Softmax applies a softmax over the last dimension.
func (d *Device) Softmax(dst, x *backend.Tensor) {
	checkSame("softmax", dst, x)
	checkLen("softmax", x.Shape)
	dim := x.Shape[len(x.Shape)-1]
	rows := x.Len() / max(dim, 1)
	if rows == 0 {
		return
	}
	xp, yp := d.ptr(x), d.ptr(dst)
	d.enqueue(func() {
		d.launch(d.kernel("softmax"), [3]int{rows, 1, 1}, normThreads(dim, 512), 0, ptrArg(xp), ptrArg(yp), i32(dim))
	}, dst, x)
}

// attentionRows and attentionKeyTile mirror ATT_ROWS and ATT_KT in
// kernels/attention.cu.
const (
	attentionRows    = 8
	attentionKeyTile = 32
)

// attentionSharedBytes is the dynamic shared memory of the attention
// kernel for head dimension dh.
func attentionSharedBytes(dh int) int {
	return 4 * (attentionKeyTile*(dh+1) + attentionKeyTile*dh + attentionRows*dh)
}

// attentionKernel picks the portable variant whose per-lane accumulator
// fits dh.
func (d *Device) attentionKernel(dh int) (string, bool) {
	for _, n := range []int{32, 64, 128, 256} {
		if dh <= n {
			return fmt.Sprintf("attention_%s_d%d", d.sfx, n), true
		}
	}
	return "", false
}

// flashWidths are the padded head dimensions of the tensor-core kernels
// (FLASH_VARIANTS in kernels/attention.cu); flashKeys mirrors FA_BK.
var flashWidths = []int{32, 48, 64, 80, 96, 128, 160}

const flashKeys = 64 // FA_BK

// flashPlan is one tensor-core attention kernel: its name, the padded head
// width and the warps of a block (16 query rows each).
type flashPlan struct {
	name      string
	dp, warps int
}

// rows is the query rows of a block.
func (f flashPlan) rows() int { return 16 * f.warps }

// flashWarps is the block size (warps) of the tensor-core kernel for
// padded width dp, as measured on an H200 (BenchmarkFlashAttention,
// docs/performance.md): eight warps, which share each K/V tile between 128
// query rows, win only for the narrow heads (SD1.5's 40, padded to 48:
// 165 against 158 TFLOP/s); from 64 up four warps keep more blocks
// resident and win by 11–20 %.
func flashWarps(dp int) int {
	if dp <= flashWarps8Max {
		return 8
	}
	return 4
}

// flashWarps8Max is the widest padded head that runs with eight warps.
const flashWarps8Max = 48

// flashPlanFor returns the kernel of padded width dp with warps warps.
func (d *Device) flashPlanFor(dp, warps int) flashPlan {
	prefix := "flash"
	if warps == 8 {
		prefix = "flash8"
	}
	return flashPlan{name: fmt.Sprintf("%s_%s_d%d", prefix, d.sfx, dp), dp: dp, warps: warps}
}

// flashKernel picks the tensor-core kernel for head dimension dh on a
// 16-bit device: dh must be even and at most 160, and the tensors' element
// offsets even (the kernel moves pairs of elements).
func (d *Device) flashKernel(dh int, ts ...*backend.Tensor) (flashPlan, bool) {
	if d.dtype == tensor.F32 || dh%2 != 0 {
		return flashPlan{}, false
	}
	for _, t := range ts {
		if t.Offset%2 != 0 {
			return flashPlan{}, false
		}
	}
	for _, w := range flashWidths {
		if dh <= w {
			return d.flashPlanFor(w, flashWarps(w)), true
		}
	}
	return flashPlan{}, false
}

// flashSharedBytes is the dynamic shared memory of flash*_*_d<dp>: two
// stages of a K and a V tile of FA_BK rows of dp+8 16-bit elements.
func flashSharedBytes(dp int) int { return 2 * 2 * flashKeys * (dp + 8) * 2 }

// Attention computes softmax(q·kᵀ·scale)·v per head with the flash-style
// kernel: scores are never stored.
func (d *Device) Attention(dst, q, k, v *backend.Tensor, p backend.AttentionParams) {
	b, nq, hd := q.Shape[0], q.Shape[1], q.Shape[2]
	nk := k.Shape[1]
	if p.Heads <= 0 || hd%p.Heads != 0 || !k.Shape.Equal(v.Shape) || k.Shape[0] != b || k.Shape[2] != hd || !dst.Shape.Equal(q.Shape) {
		panic(fmt.Sprintf("cuda attention: q %v k %v v %v dst %v heads %d", q.Shape, k.Shape, v.Shape, dst.Shape, p.Heads))
	}
	dh := hd / p.Heads
	if plan, ok := d.flashKernel(dh, q, k, v, dst); ok {
		d.flashAttention(dst, q, k, v, p, plan)
		return
	}
	qp, kp, vp, op := d.ptr(q), d.ptr(k), d.ptr(v), d.ptr(dst)
	name, ok := d.attentionKernel(dh)
	if !ok {
		d.attentionComposed(dst, q, k, v, p)
		return
	}
	d.enqueue(func() {
		if nq == 0 || b == 0 {
			return
		}
		d.launch(name, [3]int{(nq + attentionRows - 1) / attentionRows, p.Heads, b}, attentionRows*32, attentionSharedBytes(dh),
			ptrArg(qp), ptrArg(kp), ptrArg(vp), ptrArg(op), i32(nq), i32(nk), i32(p.Heads), i32(dh), f32(p.Scale), boolArg(p.Causal))
	}, dst, q, k, v)
}

// flashAttention runs the tensor-core kernel plan (Attention checked the
// shapes and picked it).
func (d *Device) flashAttention(dst, q, k, v *backend.Tensor, p backend.AttentionParams, plan flashPlan) {
	b, nq, hd := q.Shape[0], q.Shape[1], q.Shape[2]
	nk := k.Shape[1]
	dh := hd / p.Heads
	qp, kp, vp, op := d.ptr(q), d.ptr(k), d.ptr(v), d.ptr(dst)
	// 16-byte asynchronous copies of K and V need rows of whole 16-byte
	// chunks and aligned pointers.
	vec := dh%8 == 0 && kp%16 == 0 && vp%16 == 0
	d.enqueue(func() {
		if nq == 0 || b == 0 {
			return
		}
		d.launch(plan.name, [3]int{(nq + plan.rows() - 1) / plan.rows(), p.Heads, b}, plan.warps*32, flashSharedBytes(plan.dp),
			ptrArg(qp), ptrArg(kp), ptrArg(vp), ptrArg(op), i32(nq), i32(nk), i32(p.Heads), i32(dh), f32(p.Scale), boolArg(p.Causal),
			boolArg(vec))
	}, dst, q, k, v)
}

// attentionScoreBytes bounds the score block of attentionComposed.
const attentionScoreBytes = 256 << 20

// attentionComposed computes attention for head dimensions the fused kernel
// does not take (the SD VAE's single 512-wide head): per batch item, head
// and block of query rows, scores = q·kᵀ (cuBLAS), scaled, softmax, then
// scores·v into dst. The score block is bounded by attentionScoreBytes, so
// memory stays linear in the sequence length for a fixed block.
func (d *Device) attentionComposed(dst, q, k, v *backend.Tensor, p backend.AttentionParams) {
	if p.Causal {
		panic("cuda attention: causal masking needs a head dimension of at most 256")
	}
	b, nq, hd := q.Shape[0], q.Shape[1], q.Shape[2]
	nk := k.Shape[1]
	dh := hd / p.Heads
	es := d.es
	rows := max(1, min(nq, attentionScoreBytes/(int(es)*max(nk, 1))))
	scores := d.Alloc(rows, nk)
	sp, qp, kp, vp, op := d.ptr(scores), d.ptr(q), d.ptr(k), d.ptr(v), d.ptr(dst)
	for bi := range b {
		for h := range p.Heads {
			for q0 := 0; q0 < nq; q0 += rows {
				r := min(rows, nq-q0)
				qOff := uint64((bi*nq+q0)*hd+h*dh) * es
				kOff := uint64(bi*nk*hd+h*dh) * es
				d.enqueue(func() {
					// The GEMM applies the scale, so 16-bit scores are
					// stored already scaled.
					d.gemm(true, r, nk, dh, p.Scale, qp+qOff, hd, kp+kOff, hd, 0, sp, nk)
					d.launch(d.kernel("softmax"), [3]int{r, 1, 1}, normThreads(nk, 512), 0, ptrArg(sp), ptrArg(sp), i32(nk))
					d.gemm(false, r, dh, nk, 1, sp, nk, vp+kOff, hd, 0, op+qOff, hd)
				}, dst, q, k, v, scores)
			}
		}
	}
}

// Unary applies an elementwise function.
func (d *Device) Unary(op backend.UnaryOp, dst, x *backend.Tensor) {
	checkSame("unary "+op.String(), dst, x)
	if op > backend.Neg {
		panic(fmt.Sprintf("cuda: unknown unary op %d", op))
	}
	checkLen("unary", x.Shape)
	n := x.Len()
	xp, yp := d.ptr(x), d.ptr(dst)
	d.enqueue(func() { d.launch1D(d.kernel("unary"), n, i32(int(op)), i32(n), ptrArg(xp), ptrArg(yp)) }, dst, x)
}

// Affine computes dst = x·alpha + beta.
func (d *Device) Affine(dst, x *backend.Tensor, alpha, beta float32) {
	checkSame("affine", dst, x)
	checkLen("affine", x.Shape)
	n := x.Len()
	xp, yp := d.ptr(x), d.ptr(dst)
	d.enqueue(func() { d.launch1D(d.kernel("affine"), n, i32(n), ptrArg(xp), ptrArg(yp), f32(alpha), f32(beta)) }, dst, x)
}

// Clamp limits x elementwise to [lo, hi]; NaN stays NaN.
func (d *Device) Clamp(dst, x *backend.Tensor, lo, hi float32) {
	checkSame("clamp", dst, x)
	checkLen("clamp", x.Shape)
	n := x.Len()
	if n == 0 {
		return
	}
	xp, yp := d.ptr(x), d.ptr(dst)
	d.enqueue(func() { d.launch1D(d.kernel("clamp"), n, i32(n), ptrArg(xp), ptrArg(yp), f32(lo), f32(hi)) }, dst, x)
}

// Binary applies an elementwise op with NumPy broadcasting.
func (d *Device) Binary(op backend.BinaryOp, dst, a, b *backend.Tensor) {
	if op > backend.Div {
		panic(fmt.Sprintf("cuda: unknown binary op %d", op))
	}
	checkLen("binary", dst.Shape)
	n := dst.Len()
	ap, bp, yp := d.ptr(a), d.ptr(b), d.ptr(dst)
	if a.Shape.Equal(dst.Shape) && b.Shape.Equal(dst.Shape) {
		d.enqueue(func() { d.launch1D(d.kernel("binary"), n, i32(int(op)), i32(n), ptrArg(ap), ptrArg(bp), ptrArg(yp)) }, dst, a, b)
		return
	}
	if len(dst.Shape) > maxDims {
		panic(fmt.Sprintf("cuda binary: rank %d over %d", len(dst.Shape), maxDims))
	}
	sa, sb := backend.BroadcastStrides(a.Shape, dst.Shape), backend.BroadcastStrides(b.Shape, dst.Shape)
	var ds dims
	ds.rank = int32(len(dst.Shape))
	for i, s := range dst.Shape {
		ds.shape[i], ds.sa[i], ds.sb[i] = int32(s), int32(sa[i]), int32(sb[i])
	}
	bcast := func() {
		d.launch1D(d.kernel("binary_bcast"), n, i32(int(op)), i32(n), ptrArg(ap), ptrArg(bp), ptrArg(yp), dimsArg(&ds))
	}
	xp, rp, sr, swap := ap, bp, sb, 0
	if !a.Shape.Equal(dst.Shape) {
		xp, rp, sr, swap = bp, ap, sa, 1
	}
	pl, ok := planRows(dst.Shape, sr)
	if !ok || (swap == 1 && !b.Shape.Equal(dst.Shape)) {
		d.enqueue(bcast, dst, a, b)
		return
	}
	v := vecElems(d.es)
	aligned := pl.cols%v == 0 && xp%16 == 0 && rp%16 == 0 && yp%16 == 0
	vec, threads := boolArg(aligned), pl.cols
	if aligned {
		threads = pl.cols / v
	}
	block := min(256, max(32, (threads+31)/32*32))
	grid := min(pl.rows, 65535)
	d.enqueue(func() {
		// Fatbins built before binary_rows existed run the general kernel.
		name := d.kernel("binary_rows")
		if d.noRowsKernel {
			bcast()
			return
		}
		if _, err := d.function(name); err != nil {
			d.noRowsKernel = true
			bcast()
			return
		}
		d.launch(name, [3]int{grid, 1, 1}, block, 0, i32(int(op)), i32(pl.rows), i32(pl.cols),
			i32(pl.per), i32(pl.groups), i32(swap), vec, ptrArg(xp), ptrArg(rp), ptrArg(yp))
	}, dst, a, b)
}

// rowsPlan is a broadcast that binary_rows runs: the full operand seen as
// [rows, cols], the row operand as [groups, cols], row i of the full one
// meeting row (i / per) % groups.
type rowsPlan struct{ rows, cols, per, groups int }

// planRows recognises a row operand of strides sr (0 on broadcast
// dimensions, as BroadcastStrides gives them) against shape: from the
// innermost dimension, a contiguous block (cols), then a broadcast block
// (per), then a contiguous block (groups), then only broadcast dimensions;
// dimensions of size 1 fit anywhere.
func planRows(shape tensor.Shape, sr []int) (rowsPlan, bool) {
	p := rowsPlan{cols: 1, per: 1, groups: 1}
	stage := 0 // 0 cols, 1 per, 2 groups, 3 outer broadcast
	for i := len(shape) - 1; i >= 0; i-- {
		n, s := shape[i], sr[i]
		if n == 1 {
			continue
		}
		for {
			switch {
			case stage == 0 && s == p.cols:
				p.cols *= n
			case stage == 1 && s == 0:
				p.per *= n
			case stage == 2 && s == p.cols*p.groups:
				p.groups *= n
			case stage == 3 && s == 0:
			default:
				if stage == 0 && p.cols == 1 || stage == 3 {
					return p, false
				}
				stage++
				continue
			}
			break
		}
	}
	p.rows = shape.NumElements() / p.cols
	return p, p.per > 1 && p.cols > 1
}

// GEGLU computes a·gelu(g) for x = [a, g] along the last dimension.
func (d *Device) GEGLU(dst, x *backend.Tensor) {
	h := dst.Shape[len(dst.Shape)-1]
	if x.Shape[len(x.Shape)-1] != 2*h || x.Len() != 2*dst.Len() {
		panic(fmt.Sprintf("cuda geglu: x %v, dst %v", x.Shape, dst.Shape))
	}
	checkLen("geglu", x.Shape)
	n := dst.Len()
	xp, yp := d.ptr(x), d.ptr(dst)
	if v := vecElems(d.es); h%v == 0 && xp%16 == 0 && yp%16 == 0 {
		d.enqueue(func() { d.launch1D(d.kernel("geglu_vec"), n/v, i32(n/v), i32(h), ptrArg(xp), ptrArg(yp)) }, dst, x)
		return
	}
	d.enqueue(func() { d.launch1D(d.kernel("geglu"), n, i32(n), i32(h), ptrArg(xp), ptrArg(yp)) }, dst, x)
}

// Upsample2x is a nearest-neighbour 2× upsample of [N, C, H, W].
func (d *Device) Upsample2x(dst, x *backend.Tensor) {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if !dst.Shape.Equal(tensor.Shape{n, c, 2 * h, 2 * w}) {
		panic(fmt.Sprintf("cuda upsample: x %v, dst %v", x.Shape, dst.Shape))
	}
	checkLen("upsample", dst.Shape)
	total := dst.Len()
	xp, yp := d.ptr(x), d.ptr(dst)
	d.enqueue(func() { d.launch1D(d.kernel("upsample2x"), total, i32(total), i32(h), i32(w), ptrArg(xp), ptrArg(yp)) }, dst, x)
}

// copy2D queues rows×cols float copies between strided row layouts.
func (d *Device) copy2D(rows, cols int, src uint64, srcStride int, dst uint64, dstStride int) {
	n := rows * cols
	d.launch1D(d.kernel("copy2d"), n, i32(n), i32(cols), ptrArg(src), i32(srcStride), ptrArg(dst), i32(dstStride))
}

// Concat joins tensors along axis.
func (d *Device) Concat(dst *backend.Tensor, axis int, xs ...*backend.Tensor) {
	checkLen("concat", dst.Shape)
	outer := 1
	for i := range axis {
		outer *= dst.Shape[i]
	}
	dstInner := dst.Len() / max(outer, 1)
	type part struct {
		ptr   uint64
		inner int
	}
	parts := make([]part, len(xs))
	total, pos := 0, 0
	for i, x := range xs {
		if len(x.Shape) != len(dst.Shape) {
			panic(fmt.Sprintf("cuda concat: part %v into %v", x.Shape, dst.Shape))
		}
		parts[i] = part{d.ptr(x), x.Len() / max(outer, 1)}
		pos += parts[i].inner
		total += x.Shape[axis]
	}
	if total != dst.Shape[axis] || pos != dstInner {
		panic(fmt.Sprintf("cuda concat: parts do not fill %v along axis %d", dst.Shape, axis))
	}
	yp, es := d.ptr(dst), d.es
	d.enqueue(func() {
		off := 0
		for _, p := range parts {
			d.copy2D(outer, p.inner, p.ptr, p.inner, yp+uint64(off)*es, dstInner)
			off += p.inner
		}
	}, append([]*backend.Tensor{dst}, xs...)...)
}

// Slice copies x[..., start:start+dst.Shape[axis], ...] along axis.
func (d *Device) Slice(dst, x *backend.Tensor, axis, start int) {
	if start < 0 || start+dst.Shape[axis] > x.Shape[axis] {
		panic(fmt.Sprintf("cuda slice: [%d:%d] of axis %d of %v", start, start+dst.Shape[axis], axis, x.Shape))
	}
	checkLen("slice", x.Shape)
	outer := 1
	for i := range axis {
		outer *= x.Shape[i]
	}
	inner := x.Len() / max(outer*x.Shape[axis], 1)
	cols := dst.Shape[axis] * inner
	if dst.Len() != outer*cols {
		panic(fmt.Sprintf("cuda slice: dst %v from %v along axis %d", dst.Shape, x.Shape, axis))
	}
	xp, yp, es := d.ptr(x), d.ptr(dst), d.es
	srcStride := x.Shape[axis] * inner
	d.enqueue(func() { d.copy2D(outer, cols, xp+uint64(start*inner)*es, srcStride, yp, cols) }, dst, x)
}

// Permute copies x with its dimensions reordered.
func (d *Device) Permute(dst, x *backend.Tensor, perm ...int) {
	rank := len(x.Shape)
	if len(perm) != rank || len(dst.Shape) != rank || rank > maxDims {
		panic(fmt.Sprintf("cuda permute: %v by %v (rank at most %d)", x.Shape, perm, maxDims))
	}
	checkLen("permute", x.Shape)
	xs := x.Shape.Strides()
	var ds dims
	ds.rank = int32(rank)
	for i, p := range perm {
		if p < 0 || p >= rank || dst.Shape[i] != x.Shape[p] {
			panic(fmt.Sprintf("cuda permute: %v by %v does not give %v", x.Shape, perm, dst.Shape))
		}
		ds.shape[i], ds.sa[i] = int32(dst.Shape[i]), int32(xs[p])
	}
	n := dst.Len()
	xp, yp := d.ptr(x), d.ptr(dst)
	d.enqueue(func() { d.launch1D(d.kernel("permute"), n, i32(n), ptrArg(xp), ptrArg(yp), dimsArg(&ds)) }, dst, x)
}

// Embedding gathers rows of table for ids.
func (d *Device) Embedding(dst, table *backend.Tensor, ids []int) {
	v, dim := table.Shape[0], table.Shape[1]
	if dst.Len() != len(ids)*dim {
		panic(fmt.Sprintf("cuda embedding: %d ids into %v", len(ids), dst.Shape))
	}
	if len(ids) == 0 {
		return
	}
	idx := make([]int32, len(ids))
	for i, id := range ids {
		if id < 0 || id >= v {
			panic(fmt.Sprintf("cuda embedding: id %d outside vocabulary of %d", id, v))
		}
		idx[i] = int32(id)
	}
	tp, yp := d.ptr(table), d.ptr(dst)
	n := dst.Len()
	d.enqueue(func() {
		buf := d.alloc(uint64(4 * len(idx)))
		if buf.ptr == 0 {
			return
		}
		d.copyIn(buf.ptr, unsafe.Slice((*byte)(unsafe.Pointer(&idx[0])), 4*len(idx)))
		d.launch1D(d.kernel("gather_rows"), n, i32(n), i32(dim), ptrArg(tp), ptrArg(buf.ptr), ptrArg(yp))
		d.poolPut(buf)
	}, dst, table)
}

// TimestepEmbedding writes sinusoidal embeddings of ts into dst. The table
// is tiny, so it is computed on the host exactly as the CPU backend does
// and uploaded.
func (d *Device) TimestepEmbedding(dst *backend.Tensor, ts []float32, p backend.TimestepParams) {
	if dst.Len() != len(ts)*p.Dim {
		panic(fmt.Sprintf("cuda timestep embedding: %d steps of dim %d into %v", len(ts), p.Dim, dst.Shape))
	}
	host := backend.TimestepTable(ts, p)
	if len(host) == 0 {
		return
	}
	raw := d.hostBytes(host)
	yp := d.ptr(dst)
	d.enqueue(func() { d.copyIn(yp, raw) }, dst)
}
