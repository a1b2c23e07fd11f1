package cpu

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
)

// The fused ops are compositions on the CPU, in the order the models used
// before they existed (so results do not change): the product, then the
// bias, then the residual.

// overlaps reports whether two CPU tensors share storage.
func overlaps(a, b *backend.Tensor) bool {
	ab, bb := a.Buf.([]float32), b.Buf.([]float32)
	if len(ab) == 0 || len(bb) == 0 || &ab[0] != &bb[0] {
		return false
	}
	return a.Offset < b.Offset+b.Len() && b.Offset < a.Offset+a.Len()
}

// Conv2DAdd computes Conv2D plus res broadcast to dst's shape.
func (d *Device) Conv2DAdd(dst, x, w, bias, res *backend.Tensor, p backend.Conv2DParams) {
	if res == nil {
		d.Conv2D(dst, x, w, bias, p)
		return
	}
	out := dst
	if overlaps(res, dst) {
		out = d.Alloc(dst.Shape...)
	}
	d.Conv2D(out, x, w, bias, p)
	d.Binary(backend.Add, dst, out, res)
}

// LinearAdd computes dst = res + (x·wᵀ + bias).
func (d *Device) LinearAdd(dst, x, w, bias, res *backend.Tensor) {
	if res == nil {
		d.Linear(dst, x, w, bias)
		return
	}
	if !res.Shape.Equal(dst.Shape) {
		panic(fmt.Sprintf("cpu linear add: res %v for dst %v", res.Shape, dst.Shape))
	}
	out := dst
	if overlaps(res, dst) {
		out = d.Alloc(dst.Shape...)
	}
	d.Linear(out, x, w, bias)
	d.Binary(backend.Add, dst, res, out)
}

// LinearFromChannels computes dst[n] = x[n]ᵀ·wᵀ + bias for channels-first
// x [N, C, L] (w may be a 1×1 convolution weight).
func (d *Device) LinearFromChannels(dst, x, w, bias *backend.Tensor) {
	n, c := x.Shape[0], x.Shape[1]
	l := x.Len() / max(n*c, 1)
	out := w.Shape[0]
	if w.Len() != out*c || dst.Len() != n*l*out {
		panic(fmt.Sprintf("cpu linear from channels: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	tokens := d.Alloc(n, l, c)
	d.Permute(tokens, x.Reshape(n, c, l), 0, 2, 1)
	d.Linear(dst.Reshape(n, l, out), tokens, w.Reshape(out, c), bias)
}

// LinearToChannels computes dst[n] = (x[n]·wᵀ + bias)ᵀ + res[n] for
// token-major x [N, L, in] into channels-first dst [N, out, L].
func (d *Device) LinearToChannels(dst, x, w, bias, res *backend.Tensor) {
	n, in := x.Shape[0], x.Shape[len(x.Shape)-1]
	l := x.Len() / max(n*in, 1)
	out := w.Shape[0]
	if w.Len() != out*in || dst.Len() != n*out*l {
		panic(fmt.Sprintf("cpu linear to channels: x %v, w %v, dst %v", x.Shape, w.Shape, dst.Shape))
	}
	y := d.Alloc(n, l, out)
	d.Linear(y, x.Reshape(n, l, in), w.Reshape(out, in), bias)
	if res == nil {
		d.Permute(dst.Reshape(n, out, l), y, 0, 2, 1)
		return
	}
	t := d.Alloc(n, out, l)
	d.Permute(t, y, 0, 2, 1)
	d.Binary(backend.Add, dst.Reshape(n, out, l), t, res.Reshape(n, out, l))
}
