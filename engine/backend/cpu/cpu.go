// Package cpu is the pure-Go float32 backend. It is the oracle every other
// backend is checked against, and the fallback when no GPU is found.
package cpu

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu/gemm"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// Device is the CPU backend. The zero value is not usable; call New.
type Device struct {
	threads int
}

var _ backend.Device = (*Device)(nil)

// New returns a CPU device using up to GOMAXPROCS threads.
func New() *Device { return &Device{threads: runtime.GOMAXPROCS(0)} }

// Name describes the device.
func (d *Device) Name() string { return fmt.Sprintf("cpu (%d threads)", d.threads) }

// data returns the float32 elements of a CPU tensor view.
func data(t *backend.Tensor) []float32 {
	buf, ok := t.Buf.([]float32)
	if !ok {
		if q, isQ := t.Buf.(*quantWeight); isQ {
			panic(fmt.Sprintf("cpu: tensor %v is a %s weight kept quantised: only Linear and LinearAdd read it", t.Shape, q.Type))
		}
		panic(fmt.Sprintf("cpu: tensor %v does not live on the CPU", t))
	}
	return buf[t.Offset : t.Offset+t.Len()]
}

// Data exposes the float32 storage of a CPU tensor (for tests and tools).
func Data(t *backend.Tensor) []float32 { return data(t) }

// Alloc returns a zeroed tensor.
func (d *Device) Alloc(shape ...int) *backend.Tensor {
	s := tensor.Shape(shape).Clone()
	return &backend.Tensor{Shape: s, DType: tensor.F32, Buf: make([]float32, s.NumElements())}
}

// Upload wraps a copy of data.
func (d *Device) Upload(src []float32, shape ...int) *backend.Tensor {
	t := d.Alloc(shape...)
	if len(src) != t.Len() {
		panic(fmt.Sprintf("cpu: upload %d values into shape %v", len(src), t.Shape))
	}
	copy(data(t), src)
	return t
}

// UploadRaw converts stored weight bytes to float32.
func (d *Device) UploadRaw(raw []byte, dt tensor.DType, shape ...int) (*backend.Tensor, error) {
	t := d.Alloc(shape...)
	if err := tensor.ToFloat32(dt, raw, data(t)); err != nil {
		return nil, err
	}
	return t, nil
}

// Download returns a copy of the tensor's values.
func (d *Device) Download(t *backend.Tensor) ([]float32, error) {
	return append([]float32(nil), data(t)...), nil
}

// Free is a no-op: the garbage collector owns CPU memory.
func (d *Device) Free(*backend.Tensor) {}

// Sync returns ctx's error, if any: CPU ops are synchronous.
func (d *Device) Sync(ctx context.Context) error { return ctx.Err() }

// parallel runs fn over [0,n) split into roughly equal chunks, one per thread.
// Work smaller than minPer items per chunk runs on the calling goroutine.
func (d *Device) parallel(n, minPer int, fn func(lo, hi int)) {
	parallelFor(d.threads, n, minPer, fn)
}

func parallelFor(threads, n, minPer int, fn func(lo, hi int)) {
	if minPer < 1 {
		minPer = 1
	}
	chunks := min(threads, n/minPer)
	if chunks <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	for c := range chunks {
		lo, hi := n*c/chunks, n*(c+1)/chunks
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

func checkSame(op string, a, b *backend.Tensor) {
	if !a.Shape.Equal(b.Shape) {
		panic(fmt.Sprintf("cpu %s: shape %v != %v", op, a.Shape, b.Shape))
	}
}

// MatMul computes dst = a·b.
func (d *Device) MatMul(dst, a, b *backend.Tensor, transB bool) {
	if len(a.Shape) < 2 || len(b.Shape) < 2 {
		panic(fmt.Sprintf("cpu matmul: need rank ≥ 2, got %v and %v", a.Shape, b.Shape))
	}
	m, k := a.Shape[len(a.Shape)-2], a.Shape[len(a.Shape)-1]
	batch := a.Len() / (m * k)
	var kb, n int
	if transB {
		n, kb = b.Shape[len(b.Shape)-2], b.Shape[len(b.Shape)-1]
	} else {
		kb, n = b.Shape[len(b.Shape)-2], b.Shape[len(b.Shape)-1]
	}
	bBatch := b.Len() / (kb * n)
	if kb != k || (bBatch != 1 && bBatch != batch) || dst.Len() != batch*m*n {
		panic(fmt.Sprintf("cpu matmul: shapes %v · %v (transB=%v) -> %v", a.Shape, b.Shape, transB, dst.Shape))
	}
	ad, bd, cd := data(a), data(b), data(dst)
	ldb := n
	if transB {
		ldb = k
	}
	if bBatch == 1 {
		gemm.Sgemm(false, transB, batch*m, n, k, 1, ad, k, bd, ldb, 0, cd, n)
		return
	}
	d.parallel(batch, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gemm.Sgemm(false, transB, m, n, k, 1, ad[i*m*k:], k, bd[i*k*n:], ldb, 0, cd[i*m*n:], n)
		}
	})
}

// Linear computes dst = x·wᵀ + bias. A weight kept quantised
// (UploadQuantized) is dequantised tile by tile inside the product.
func (d *Device) Linear(dst, x, w, bias *backend.Tensor) {
	out, in := w.Shape[0], w.Shape[1]
	if x.Shape[len(x.Shape)-1] != in || dst.Len() != x.Len()/in*out {
		panic(fmt.Sprintf("cpu linear: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	rows := x.Len() / in
	cd := data(dst)
	var beta float32
	if bias != nil {
		bd := data(bias)
		for r := range rows {
			copy(cd[r*out:(r+1)*out], bd)
		}
		beta = 1
	}
	if q, ok := w.Buf.(*quantWeight); ok {
		q.linear(rows, out, in, data(x), beta, cd)
		return
	}
	gemm.Sgemm(false, true, rows, out, in, 1, data(x), in, data(w), in, beta, cd, out)
}

// Conv2D computes a 2-D convolution.
func (d *Device) Conv2D(dst, x, w, bias *backend.Tensor, p backend.Conv2DParams) {
	n, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	oc, kc, kh, kw := w.Shape[0], w.Shape[1], w.Shape[2], w.Shape[3]
	oh, ow := p.OutSize(h, wd, kh, kw)
	if kc != c || !dst.Shape.Equal(tensor.Shape{n, oc, oh, ow}) {
		panic(fmt.Sprintf("cpu conv2d: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	var bd []float32
	if bias != nil {
		bd = data(bias)
	}
	xd := data(x)
	if p.PadTop != p.PadBottom || p.PadLeft != p.PadRight {
		// Asymmetric padding: pad explicitly, then convolve without padding.
		ph, pw := h+p.PadTop+p.PadBottom, wd+p.PadLeft+p.PadRight
		padded := make([]float32, n*c*ph*pw)
		for i := range n * c {
			for y := range h {
				copy(padded[(i*ph+y+p.PadTop)*pw+p.PadLeft:], xd[(i*h+y)*wd:(i*h+y+1)*wd])
			}
		}
		gemm.Conv2D(data(dst), padded, n, c, ph, pw, data(w), oc, kh, kw, p.StrideH, p.StrideW, 0, 0, bd)
		return
	}
	gemm.Conv2D(data(dst), xd, n, c, h, wd, data(w), oc, kh, kw, p.StrideH, p.StrideW, p.PadTop, p.PadLeft, bd)
}

// GroupNorm normalises groups of channels.
func (d *Device) GroupNorm(dst, x, gamma, beta *backend.Tensor, groups int, eps float32, silu bool) {
	checkSame("groupnorm", dst, x)
	n, c := x.Shape[0], x.Shape[1]
	if c%groups != 0 {
		panic(fmt.Sprintf("cpu groupnorm: %d channels not divisible by %d groups", c, groups))
	}
	spatial := x.Len() / (n * c)
	cpg := c / groups
	xd, od := data(x), data(dst)
	var gd, bd []float32
	if gamma != nil {
		gd = data(gamma)
	}
	if beta != nil {
		bd = data(beta)
	}
	d.parallel(n*groups, 1, func(lo, hi int) {
		for ng := lo; ng < hi; ng++ {
			g := ng % groups
			base := ng * cpg * spatial
			seg := xd[base : base+cpg*spatial]
			var sum float64
			for _, v := range seg {
				sum += float64(v)
			}
			mean := sum / float64(len(seg))
			var sq float64
			for _, v := range seg {
				dv := float64(v) - mean
				sq += dv * dv
			}
			inv := 1 / math.Sqrt(sq/float64(len(seg))+float64(eps))
			for ci := range cpg {
				ch := g*cpg + ci
				scale, shift := float32(inv), float32(-mean*inv)
				if gd != nil {
					scale *= gd[ch]
					shift *= gd[ch]
				}
				if bd != nil {
					shift += bd[ch]
				}
				o := od[base+ci*spatial : base+(ci+1)*spatial]
				in := seg[ci*spatial : (ci+1)*spatial]
				for i, v := range in {
					y := v*scale + shift
					if silu {
						y = y / (1 + float32(math.Exp(float64(-y))))
					}
					o[i] = y
				}
			}
		}
	})
}

// LayerNorm normalises over the last dimension.
func (d *Device) LayerNorm(dst, x, gamma, beta *backend.Tensor, eps float32) {
	checkSame("layernorm", dst, x)
	dim := x.Shape[len(x.Shape)-1]
	rows := x.Len() / dim
	xd, od := data(x), data(dst)
	var gd, bd []float32
	if gamma != nil {
		gd = data(gamma)
	}
	if beta != nil {
		bd = data(beta)
	}
	d.parallel(rows, 16, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := xd[r*dim : (r+1)*dim]
			var sum float64
			for _, v := range row {
				sum += float64(v)
			}
			mean := sum / float64(dim)
			var sq float64
			for _, v := range row {
				dv := float64(v) - mean
				sq += dv * dv
			}
			inv := 1 / math.Sqrt(sq/float64(dim)+float64(eps))
			o := od[r*dim : (r+1)*dim]
			for i, v := range row {
				y := float32((float64(v) - mean) * inv)
				if gd != nil {
					y *= gd[i]
				}
				if bd != nil {
					y += bd[i]
				}
				o[i] = y
			}
		}
	})
}

// RMSNorm scales each row by the reciprocal root mean square of its
// values over the last dimension, accumulated in float64, then by weight.
func (d *Device) RMSNorm(dst, x, weight *backend.Tensor, eps float32) {
	checkSame("rmsnorm", dst, x)
	dim := x.Shape[len(x.Shape)-1]
	if dim == 0 {
		return
	}
	rows := x.Len() / dim
	xd, od := data(x), data(dst)
	var wd []float32
	if weight != nil {
		if weight.Len() != dim {
			panic(fmt.Sprintf("rmsnorm: weight %v for rows of %d", weight.Shape, dim))
		}
		wd = data(weight)
	}
	d.parallel(rows, 16, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := xd[r*dim : (r+1)*dim]
			var sq float64
			for _, v := range row {
				sq += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(sq/float64(dim)+float64(eps))
			o := od[r*dim : (r+1)*dim]
			for i, v := range row {
				y := float32(float64(v) * inv)
				if wd != nil {
					y *= wd[i]
				}
				o[i] = y
			}
		}
	})
}

// Softmax applies a softmax over the last dimension.
func (d *Device) Softmax(dst, x *backend.Tensor) {
	checkSame("softmax", dst, x)
	dim := x.Shape[len(x.Shape)-1]
	xd, od := data(x), data(dst)
	d.parallel(x.Len()/dim, 16, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			softmaxRow(od[r*dim:(r+1)*dim], xd[r*dim:(r+1)*dim])
		}
	})
}

func softmaxRow(dst, src []float32) {
	mx := float32(math.Inf(-1))
	for _, v := range src {
		mx = max(mx, v)
	}
	if math.IsInf(float64(mx), -1) {
		for i := range dst {
			dst[i] = 0
		}
		return
	}
	var sum float64
	for i, v := range src {
		e := float32(math.Exp(float64(v - mx)))
		dst[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range dst {
		dst[i] *= inv
	}
}

// attentionBlock is the number of query rows whose scores are held at once
// (256 rows × 4096 keys = 4 MiB per worker at SD1.5 512²).
const attentionBlock = 256

// Attention computes multi-head attention, holding at most
// attentionBlock×Nk scores per worker.
func (d *Device) Attention(dst, q, k, v *backend.Tensor, p backend.AttentionParams) {
	b, nq, hd := q.Shape[0], q.Shape[1], q.Shape[2]
	nk := k.Shape[1]
	if hd%p.Heads != 0 || !k.Shape.Equal(v.Shape) || k.Shape[0] != b || k.Shape[2] != hd || !dst.Shape.Equal(q.Shape) {
		panic(fmt.Sprintf("cpu attention: q %v k %v v %v dst %v heads %d", q.Shape, k.Shape, v.Shape, dst.Shape, p.Heads))
	}
	dh := hd / p.Heads
	qd, kd, vd, od := data(q), data(k), data(v), data(dst)
	blocks := (nq + attentionBlock - 1) / attentionBlock
	tasks := b * p.Heads * blocks
	d.parallel(tasks, 1, func(lo, hi int) {
		scores := make([]float32, attentionBlock*nk)
		for t := lo; t < hi; t++ {
			blk := t % blocks
			h := (t / blocks) % p.Heads
			bi := t / (blocks * p.Heads)
			q0 := blk * attentionBlock
			rows := min(attentionBlock, nq-q0)
			qOff := (bi*nq+q0)*hd + h*dh
			kOff := bi*nk*hd + h*dh
			gemm.Sgemm(false, true, rows, nk, dh, p.Scale, qd[qOff:], hd, kd[kOff:], hd, 0, scores, nk)
			for r := range rows {
				row := scores[r*nk : (r+1)*nk]
				if p.Causal {
					for j := q0 + r + 1; j < nk; j++ {
						row[j] = float32(math.Inf(-1))
					}
				}
				softmaxRow(row, row)
			}
			gemm.Sgemm(false, false, rows, dh, nk, 1, scores, nk, vd[kOff:], hd, 0, od[qOff:], hd)
		}
	})
}
