package cpu

import (
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// elementwiseMin is the number of elements per thread below which
// elementwise ops stay on one goroutine.
const elementwiseMin = 1 << 15

func sigmoid(x float32) float32 { return 1 / (1 + float32(math.Exp(float64(-x)))) }

func geluErf(x float32) float32 {
	return float32(0.5 * float64(x) * (1 + math.Erf(float64(x)/math.Sqrt2)))
}

func unaryFunc(op backend.UnaryOp) func(float32) float32 {
	switch op {
	case backend.SiLU:
		return func(x float32) float32 { return x * sigmoid(x) }
	case backend.GELU:
		return geluErf
	case backend.GELUTanh:
		return func(x float32) float32 {
			xf := float64(x)
			return float32(0.5 * xf * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(xf+0.044715*xf*xf*xf))))
		}
	case backend.QuickGELU:
		return func(x float32) float32 { return x * sigmoid(1.702*x) }
	case backend.ReLU:
		return func(x float32) float32 { return max(x, 0) }
	case backend.Tanh:
		return func(x float32) float32 { return float32(math.Tanh(float64(x))) }
	case backend.Sigmoid:
		return sigmoid
	case backend.Exp:
		return func(x float32) float32 { return float32(math.Exp(float64(x))) }
	case backend.Neg:
		return func(x float32) float32 { return -x }
	}
	panic(fmt.Sprintf("cpu: unknown unary op %d", op))
}

// Unary applies an elementwise function.
func (d *Device) Unary(op backend.UnaryOp, dst, x *backend.Tensor) {
	checkSame("unary "+op.String(), dst, x)
	f := unaryFunc(op)
	xd, od := data(x), data(dst)
	d.parallel(len(xd), elementwiseMin, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			od[i] = f(xd[i])
		}
	})
}

// Affine computes dst = x·alpha + beta.
func (d *Device) Affine(dst, x *backend.Tensor, alpha, beta float32) {
	checkSame("affine", dst, x)
	xd, od := data(x), data(dst)
	d.parallel(len(xd), elementwiseMin, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			od[i] = xd[i]*alpha + beta
		}
	})
}

// Clamp limits x elementwise to [lo, hi]; NaN stays NaN.
func (d *Device) Clamp(dst, x *backend.Tensor, lo, hi float32) {
	checkSame("clamp", dst, x)
	xd, od := data(x), data(dst)
	d.parallel(len(xd), elementwiseMin, func(l, h int) {
		for i := l; i < h; i++ {
			switch v := xd[i]; {
			case v < lo:
				od[i] = lo
			case v > hi:
				od[i] = hi
			default:
				od[i] = v
			}
		}
	})
}

func binaryApply(op backend.BinaryOp, dst, a, b []float32) {
	switch op {
	case backend.Add:
		for i := range dst {
			dst[i] = a[i] + b[i]
		}
	case backend.Sub:
		for i := range dst {
			dst[i] = a[i] - b[i]
		}
	case backend.Mul:
		for i := range dst {
			dst[i] = a[i] * b[i]
		}
	case backend.Div:
		for i := range dst {
			dst[i] = a[i] / b[i]
		}
	default:
		panic(fmt.Sprintf("cpu: unknown binary op %d", op))
	}
}

func binaryScalarB(op backend.BinaryOp, dst, a []float32, s float32) {
	switch op {
	case backend.Add:
		for i := range dst {
			dst[i] = a[i] + s
		}
	case backend.Sub:
		for i := range dst {
			dst[i] = a[i] - s
		}
	case backend.Mul:
		for i := range dst {
			dst[i] = a[i] * s
		}
	case backend.Div:
		for i := range dst {
			dst[i] = a[i] / s
		}
	}
}

func binaryScalarA(op backend.BinaryOp, dst []float32, s float32, b []float32) {
	switch op {
	case backend.Add:
		for i := range dst {
			dst[i] = s + b[i]
		}
	case backend.Sub:
		for i := range dst {
			dst[i] = s - b[i]
		}
	case backend.Mul:
		for i := range dst {
			dst[i] = s * b[i]
		}
	case backend.Div:
		for i := range dst {
			dst[i] = s / b[i]
		}
	}
}

// Binary applies an elementwise op with NumPy broadcasting.
func (d *Device) Binary(op backend.BinaryOp, dst, a, b *backend.Tensor) {
	ad, bd, od := data(a), data(b), data(dst)
	if a.Shape.Equal(dst.Shape) && b.Shape.Equal(dst.Shape) {
		d.parallel(len(od), elementwiseMin, func(lo, hi int) {
			binaryApply(op, od[lo:hi], ad[lo:hi], bd[lo:hi])
		})
		return
	}
	sa := backend.BroadcastStrides(a.Shape, dst.Shape)
	sb := backend.BroadcastStrides(b.Shape, dst.Shape)
	rank := len(dst.Shape)
	inner := dst.Shape[rank-1]
	outer := len(od) / max(inner, 1)
	ia, ib := sa[rank-1], sb[rank-1]
	d.parallel(outer, max(1, elementwiseMin/max(inner, 1)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			// Decompose the row index into the offsets of a and b.
			offA, offB := 0, 0
			rem := r
			for dim := rank - 2; dim >= 0; dim-- {
				idx := rem % dst.Shape[dim]
				rem /= dst.Shape[dim]
				offA += idx * sa[dim]
				offB += idx * sb[dim]
			}
			o := od[r*inner : (r+1)*inner]
			switch {
			case ia == 1 && ib == 1:
				binaryApply(op, o, ad[offA:offA+inner], bd[offB:offB+inner])
			case ia == 1 && ib == 0:
				binaryScalarB(op, o, ad[offA:offA+inner], bd[offB])
			case ia == 0 && ib == 1:
				binaryScalarA(op, o, ad[offA], bd[offB:offB+inner])
			default:
				binaryScalarB(op, o[:1], ad[offA:offA+1], bd[offB])
				for i := 1; i < inner; i++ {
					o[i] = o[0]
				}
			}
		}
	})
}

// GEGLU computes a·gelu(g) for x = [a, g] along the last dimension.
func (d *Device) GEGLU(dst, x *backend.Tensor) {
	h := dst.Shape[len(dst.Shape)-1]
	if x.Shape[len(x.Shape)-1] != 2*h || x.Len() != 2*dst.Len() {
		panic(fmt.Sprintf("cpu geglu: x %v, dst %v", x.Shape, dst.Shape))
	}
	xd, od := data(x), data(dst)
	rows := dst.Len() / h
	d.parallel(rows, max(1, elementwiseMin/h), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			a := xd[2*r*h : 2*r*h+h]
			g := xd[2*r*h+h : 2*(r+1)*h]
			o := od[r*h : (r+1)*h]
			for i := range o {
				o[i] = a[i] * geluErf(g[i])
			}
		}
	})
}

// Upsample2x is a nearest-neighbour 2× upsample of [N, C, H, W].
func (d *Device) Upsample2x(dst, x *backend.Tensor) {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if !dst.Shape.Equal(tensor.Shape{n, c, 2 * h, 2 * w}) {
		panic(fmt.Sprintf("cpu upsample: x %v, dst %v", x.Shape, dst.Shape))
	}
	xd, od := data(x), data(dst)
	d.parallel(n*c, 1, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			for y := range h {
				src := xd[(p*h+y)*w : (p*h+y+1)*w]
				row := od[(p*2*h+2*y)*2*w : (p*2*h+2*y+1)*2*w]
				for i, v := range src {
					row[2*i], row[2*i+1] = v, v
				}
				copy(od[(p*2*h+2*y+1)*2*w:(p*2*h+2*y+2)*2*w], row)
			}
		}
	})
}

// Concat joins tensors along axis.
func (d *Device) Concat(dst *backend.Tensor, axis int, xs ...*backend.Tensor) {
	outer := 1
	for i := range axis {
		outer *= dst.Shape[i]
	}
	dstInner := dst.Len() / outer
	od := data(dst)
	pos := 0
	total := 0
	for _, x := range xs {
		inner := x.Len() / outer
		xd := data(x)
		for o := range outer {
			copy(od[o*dstInner+pos:o*dstInner+pos+inner], xd[o*inner:(o+1)*inner])
		}
		pos += inner
		total += x.Shape[axis]
	}
	if total != dst.Shape[axis] || pos != dstInner {
		panic(fmt.Sprintf("cpu concat: parts do not fill %v along axis %d", dst.Shape, axis))
	}
}

// Slice copies a range along axis.
func (d *Device) Slice(dst, x *backend.Tensor, axis, start int) {
	outer := 1
	for i := range axis {
		outer *= x.Shape[i]
	}
	if start < 0 || start+dst.Shape[axis] > x.Shape[axis] {
		panic(fmt.Sprintf("cpu slice: [%d:%d] of axis %d of %v", start, start+dst.Shape[axis], axis, x.Shape))
	}
	inner := x.Len() / outer / x.Shape[axis]
	xd, od := data(x), data(dst)
	n := dst.Shape[axis] * inner
	for o := range outer {
		copy(od[o*n:(o+1)*n], xd[o*x.Shape[axis]*inner+start*inner:])
	}
}

// Permute reorders dimensions.
func (d *Device) Permute(dst, x *backend.Tensor, perm ...int) {
	rank := len(x.Shape)
	if len(perm) != rank || len(dst.Shape) != rank {
		panic(fmt.Sprintf("cpu permute: %v by %v", x.Shape, perm))
	}
	xs := x.Shape.Strides()
	st := make([]int, rank)
	for i, p := range perm {
		if dst.Shape[i] != x.Shape[p] {
			panic(fmt.Sprintf("cpu permute: %v by %v gives %v, not %v", x.Shape, perm, x.Shape[p], dst.Shape))
		}
		st[i] = xs[p]
	}
	xd, od := data(x), data(dst)
	inner := dst.Shape[rank-1]
	innerStride := st[rank-1]
	rows := dst.Len() / max(inner, 1)
	d.parallel(rows, max(1, elementwiseMin/max(inner, 1)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			off := 0
			rem := r
			for dim := rank - 2; dim >= 0; dim-- {
				off += (rem % dst.Shape[dim]) * st[dim]
				rem /= dst.Shape[dim]
			}
			o := od[r*inner : (r+1)*inner]
			for i := range o {
				o[i] = xd[off+i*innerStride]
			}
		}
	})
}

// Embedding gathers table rows.
func (d *Device) Embedding(dst, table *backend.Tensor, ids []int) {
	v, dim := table.Shape[0], table.Shape[1]
	if dst.Len() != len(ids)*dim {
		panic(fmt.Sprintf("cpu embedding: %d ids into %v", len(ids), dst.Shape))
	}
	td, od := data(table), data(dst)
	for i, id := range ids {
		if id < 0 || id >= v {
			panic(fmt.Sprintf("cpu embedding: id %d outside vocabulary of %d", id, v))
		}
		copy(od[i*dim:(i+1)*dim], td[id*dim:(id+1)*dim])
	}
}

// TimestepEmbedding writes sinusoidal embeddings (backend.TimestepTable).
func (d *Device) TimestepEmbedding(dst *backend.Tensor, ts []float32, p backend.TimestepParams) {
	if dst.Len() != len(ts)*p.Dim {
		panic(fmt.Sprintf("cpu timestep embedding: %d steps of dim %d into %v", len(ts), p.Dim, dst.Shape))
	}
	copy(data(dst), backend.TimestepTable(ts, p))
}
