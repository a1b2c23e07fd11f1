package cuda

import (
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
)

// The fused ops fold a bias and a residual add into the GEMM or the
// convolution: the residual is written first (plus a per-channel bias
// where the GEMM cannot add it), and the product is accumulated onto it
// with beta = 1. A token-major bias is a cuBLASLt epilogue where Lt is
// available, else one bias kernel.

// sameView reports whether two tensors are the same view of one buffer.
func sameView(a, b *backend.Tensor) bool {
	return a.Buf == b.Buf && a.Offset == b.Offset && a.Len() == b.Len()
}

// copyResidual queues dst = res for a residual of dst's length that is
// not dst itself, the accumulator a GEMM or convolution then adds to.
func (d *Device) copyResidual(dst, res *backend.Tensor) {
	if sameView(res, dst) {
		return
	}
	dp, rp, n := d.ptr(dst), d.ptr(res), dst.Len()
	d.enqueue(func() {
		if n == 0 || d.failed() {
			return
		}
		if r := d.drv.cuMemcpyDtoDAsync(dp, rp, uint64(n)*d.es, d.stream); r != cudaSuccess {
			d.setErr(d.drv.errorf("cuMemcpyDtoDAsync", r))
		}
	}, dst, res)
}

// biasChannels queues y [N, channels, spatial] += bias[c] (owner
// goroutine).
func (d *Device) biasChannels(y uint64, total, spatial, channels int, bias uint64) {
	d.launch1D(d.kernel("bias_channels"), total, i32(total), i32(spatial), i32(channels), ptrArg(y), ptrArg(bias))
}

// linearGemm queues C = op(A)·op(B) + beta·C plus bias[n] on every row
// (row-major, as gemmT; bias 0 for none) (owner goroutine).
func (d *Device) linearGemm(transA, transB bool, m, n, k int, a uint64, lda int, b uint64, ldb int, beta float32, c uint64, ldc int, bias uint64) {
	if d.gemmEpilogue(transA, transB, m, n, k, a, lda, b, ldb, beta, c, ldc, bias) {
		return
	}
	d.gemmT(transA, transB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
	if bias != 0 {
		d.launch1D(d.kernel("bias_rows"), m*n, i32(m*n), i32(n), ptrArg(c), ptrArg(bias))
	}
}

// vecElems is how many elements of es bytes fill a 16-byte access (VEC
// in kernels/elementwise.cu).
func vecElems(es uint64) int { return int(16 / es) }

// residualBias queues dst [N, C, ...] = res + bias[c], where res has dst's
// shape or one value per plane [N, C, 1...].
func (d *Device) residualBias(dst, res, bias *backend.Tensor) {
	n, c := dst.Shape[0], dst.Shape[1]
	total := dst.Len()
	spatial := total / max(n*c, 1)
	full := boolArg(res.Len() == total)
	dp, rp, bp := d.ptr(dst), d.ptr(res), d.ptr(bias)
	v := vecElems(d.es)
	if spatial%v == 0 && dp%16 == 0 && rp%16 == 0 {
		d.enqueue(func() {
			d.launch1D(d.kernel("residual_bias_vec"), total/v, i32(total/v), i32(spatial), i32(c), full, ptrArg(rp), ptrArg(bp), ptrArg(dp))
		}, dst, res, bias)
		return
	}
	d.enqueue(func() {
		d.launch1D(d.kernel("residual_bias"), total, i32(total), i32(spatial), i32(c), full, ptrArg(rp), ptrArg(bp), ptrArg(dp))
	}, dst, res, bias)
}

// Conv2DAdd computes conv(x, w) + bias + res with res broadcast to dst:
// dst is first set to res + bias, then the convolution is accumulated
// onto it.
func (d *Device) Conv2DAdd(dst, x, w, bias, res *backend.Tensor, p backend.Conv2DParams) {
	checkConv(dst, x, w, bias, p)
	if res == nil {
		d.convolve(dst, x, w, bias, p, false)
		return
	}
	n, oc := dst.Shape[0], dst.Shape[1]
	switch {
	case bias != nil && (res.Shape.Equal(dst.Shape) || len(res.Shape) >= 2 && res.Len() == n*oc && res.Shape[0] == n && res.Shape[1] == oc):
		d.residualBias(dst, res, bias)
	case bias != nil:
		d.Binary(backend.Add, dst, res, bias.Reshape(1, bias.Len(), 1, 1))
	case res.Shape.Equal(dst.Shape):
		d.copyResidual(dst, res)
	default:
		// A broadcast res without a bias: convolve, then add.
		d.convolve(dst, x, w, nil, p, false)
		d.Binary(backend.Add, dst, dst, res)
		return
	}
	d.convolve(dst, x, w, nil, p, true)
}

// LinearAdd computes dst = x·wᵀ + bias + res.
func (d *Device) LinearAdd(dst, x, w, bias, res *backend.Tensor) {
	if res == nil {
		d.Linear(dst, x, w, bias)
		return
	}
	out, in := w.Shape[0], w.Shape[1]
	if x.Shape[len(x.Shape)-1] != in || dst.Len() != x.Len()/in*out || !res.Shape.Equal(dst.Shape) {
		panic(fmt.Sprintf("cuda linear add: x %v, w %v, res %v, dst %v", x.Shape, w.Shape, res.Shape, dst.Shape))
	}
	if bias != nil && bias.Len() != out {
		panic(fmt.Sprintf("cuda linear add: bias %v for %d outputs", bias.Shape, out))
	}
	rows := x.Len() / in
	d.copyResidual(dst, res)
	xp, wp, cp, bp := d.ptr(x), d.ptr(w), d.ptr(dst), d.optPtr(bias)
	d.enqueue(func() { d.linearGemm(false, true, rows, out, in, xp, in, wp, in, 1, cp, out, bp) }, dst, x, w, bias)
}

// LinearFromChannels computes dst[n] = x[n]ᵀ·wᵀ + bias for channels-first
// x [N, C, L]; w may be a 1×1 convolution weight [out, C, 1, 1].
func (d *Device) LinearFromChannels(dst, x, w, bias *backend.Tensor) {
	n, c, l := x.Shape[0], x.Shape[1], x.Len()/max(x.Shape[0]*x.Shape[1], 1)
	out := w.Shape[0]
	if w.Len() != out*c || dst.Len() != n*l*out || dst.Shape[len(dst.Shape)-1] != out {
		panic(fmt.Sprintf("cuda linear from channels: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	if bias != nil && bias.Len() != out {
		panic(fmt.Sprintf("cuda linear from channels: bias %v for %d outputs", bias.Shape, out))
	}
	xp, wp, cp, bp, es := d.ptr(x), d.ptr(w), d.ptr(dst), d.optPtr(bias), d.es
	d.enqueue(func() {
		for i := range n {
			// dst[i] [L, out] = x[i]ᵀ (x[i] stored [C, L]) · wᵀ.
			d.linearGemm(true, true, l, out, c, xp+uint64(i*c*l)*es, l, wp, c, 0, cp+uint64(i*l*out)*es, out, bp)
		}
	}, dst, x, w, bias)
}

// LinearToChannels computes dst[n] = (x[n]·wᵀ + bias)ᵀ + res[n] for
// token-major x [N, L, in] into channels-first dst [N, out, L].
func (d *Device) LinearToChannels(dst, x, w, bias, res *backend.Tensor) {
	n, l, in := x.Shape[0], x.Len()/max(x.Shape[0]*x.Shape[len(x.Shape)-1], 1), x.Shape[len(x.Shape)-1]
	out := w.Shape[0]
	if w.Len() != out*in || dst.Len() != n*out*l || dst.Shape[1] != out {
		panic(fmt.Sprintf("cuda linear to channels: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	if bias != nil && bias.Len() != out {
		panic(fmt.Sprintf("cuda linear to channels: bias %v for %d outputs", bias.Shape, out))
	}
	if res != nil && !res.Shape.Equal(dst.Shape) {
		panic(fmt.Sprintf("cuda linear to channels: res %v for dst %v", res.Shape, dst.Shape))
	}
	// The bias runs along dst's rows, where no GEMM epilogue adds it: it
	// goes into the accumulator with the residual.
	var beta float32
	switch {
	case res != nil && bias != nil:
		d.residualBias(dst, res, bias)
		beta = 1
	case res != nil:
		d.copyResidual(dst, res)
		beta = 1
	}
	xp, wp, cp, bp, es := d.ptr(x), d.ptr(w), d.ptr(dst), d.optPtr(bias), d.es
	addBias := bias != nil && res == nil
	d.enqueue(func() {
		for i := range n {
			// dst[i] [out, L] = w · x[i]ᵀ.
			d.gemmT(false, true, out, l, in, 1, wp, in, xp+uint64(i*l*in)*es, in, beta, cp+uint64(i*out*l)*es, l)
		}
		if addBias {
			d.biasChannels(cp, n*out*l, l, out, bp)
		}
	}, dst, x, w, bias)
}

// convCudnnFor runs the convolution with cuDNN (y = conv + beta·y) when
// the device uses cuDNN for this geometry; false means the caller runs
// im2col (owner goroutine). With ConvAuto each geometry is measured the
// first time it runs outside a graph recording: cuDNN's fastest algorithm
// (cudnnFind) against im2col + cuBLAS, both timed with CUDA events on the
// stream, and the faster one is kept.
func (d *Device) convCudnnFor(g convGeom, x, wt, y uint64, beta float32) bool {
	if d.opts.Conv == ConvIm2col || !d.dnn.available() || g.p.PadTop != g.p.PadBottom || g.p.PadLeft != g.p.PadRight {
		return false // cuDNN cannot pad asymmetrically
	}
	if d.opts.Conv == ConvAuto {
		k := g.key(d.dtype)
		ch, ok := d.convChoices[k]
		if !ok {
			if t, hit := d.tune.lookup(k); hit {
				ch, ok = convChoice{im2col: t.Im2col, cudnnMs: t.CudnnMs, im2colMs: t.Im2colMs}, true
				d.tunedHits++
			} else if d.rec == nil && !d.failed() {
				ch, ok = d.measureConv(g, x, wt), true
			}
			if ok {
				d.convChoices[k] = ch
			}
		}
		if ch.im2col {
			return false
		}
	}
	return d.dnn.conv(d, g.n, g.c, g.h, g.w, g.oc, g.kh, g.kw, g.p, x, wt, y, beta)
}

// convChoice is the measured strategy of one convolution geometry.
type convChoice struct {
	im2col            bool
	cudnnMs, im2colMs float32
}

// measureConv times cuDNN and im2col for g on a scratch output (owner
// goroutine, not while recording): each runs once to warm up, then once
// between two events. It waits for the stream.
func (d *Device) measureConv(g convGeom, x, wt uint64) convChoice {
	k := g.key(d.dtype)
	plan := d.dnn.planFor(d, k)
	if plan.why != "" {
		return convChoice{im2col: true}
	}
	oh, ow := g.outSize()
	out := d.alloc(uint64(g.n*g.oc*oh*ow) * d.es)
	if out.ptr == 0 {
		return convChoice{im2col: true}
	}
	defer d.poolPut(out)
	var ev [2]uintptr
	for i := range ev {
		if d.drv.cuEventCreate(&ev[i], 0) != cudaSuccess {
			return convChoice{im2col: plan.ms == 0}
		}
		defer d.drv.cuEventDestroy(ev[i])
	}
	timeIt := func(run func()) float32 {
		run()
		d.drv.cuEventRecord(ev[0], d.stream)
		run()
		d.drv.cuEventRecord(ev[1], d.stream)
		var ms float32
		if d.drv.cuStreamSynchronize(d.stream) != cudaSuccess || d.drv.cuEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess {
			return float32(math.Inf(1))
		}
		return ms
	}
	ch := convChoice{
		cudnnMs:  timeIt(func() { d.dnn.conv(d, g.n, g.c, g.h, g.w, g.oc, g.kh, g.kw, g.p, x, wt, out.ptr, 0) }),
		im2colMs: timeIt(func() { d.convIm2col(g, x, wt, out.ptr, 0) }),
	}
	ch.im2col = ch.im2colMs < ch.cudnnMs
	t := tunedOf(k)
	t.Im2col, t.Algo, t.Math, t.CudnnMs, t.Im2colMs = ch.im2col, plan.algo, plan.mathType, ch.cudnnMs, ch.im2colMs
	d.tune.record(k, t)
	return ch
}

// ConvInfo says how Conv2D runs: with cuDNN (its version and library) or
// with im2col, and why.
func (d *Device) ConvInfo() string {
	var s string
	d.run(func() {
		switch {
		case d.opts.Conv == ConvIm2col:
			s = "im2col + cuBLAS (--conv im2col)"
		case d.dnn.available() && d.opts.Conv == ConvCudnn:
			s = d.dnn.info() + " (--conv cudnn), im2col for asymmetric padding"
		case d.dnn.available():
			dnn, im := 0, 0
			var tDnn, tIm, tBest float64
			for _, ch := range d.convChoices {
				if ch.im2col {
					im++
				} else {
					dnn++
				}
				tDnn += float64(ch.cudnnMs)
				tIm += float64(ch.im2colMs)
				tBest += float64(min(ch.cudnnMs, ch.im2colMs))
			}
			s = fmt.Sprintf("%s or im2col + cuBLAS, measured per shape: cuDNN for %d, im2col for %d (one run of each shape: cuDNN %.2f ms, im2col %.2f ms, best %.2f ms)",
				d.dnn.info(), dnn, im, tDnn, tIm, tBest)
			if d.tune != nil {
				s += fmt.Sprintf("; %d shapes from the tuning cache %s", d.tunedHits, d.tune.path)
			}
		default:
			s = "im2col + cuBLAS (" + d.dnn.info() + ")"
		}
	})
	return s
}
