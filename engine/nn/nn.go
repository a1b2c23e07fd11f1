// Package nn holds the layers diffusion models are built from (Linear,
// Conv2d, norms, attention), composed from backend ops, and their loaders.
package nn

import (
	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Linear is y = x·Wᵀ + b. Weight is [out, in]; Bias is [out] or nil.
type Linear struct {
	Weight, Bias *backend.Tensor
	In, Out      int
}

// LoadLinear reads `weight` (and `bias` when withBias) under b. The
// weight is read with Builder.LinearWeight, so it stays block-quantised
// where the builder keeps GGUF weights quantised (Builder.KeepQuantized):
// pass it to nothing but Linear and LinearAdd (Forward, AddInto) then.
func LoadLinear(b *weights.Builder, in, out int, withBias bool) *Linear {
	l := &Linear{Weight: b.LinearWeight("weight", out, in), In: in, Out: out}
	if withBias {
		l.Bias = b.Tensor("bias", out)
	}
	return l
}

// Forward applies the layer to x [..., in] and returns [..., out].
func (l *Linear) Forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	shape := x.Shape.Clone()
	shape[len(shape)-1] = l.Out
	y := dev.Alloc(shape...)
	dev.Linear(y, x, l.Weight, l.Bias)
	return y
}

// Conv2d is a 2-D convolution with weight [O, C, KH, KW] and bias [O].
type Conv2d struct {
	Weight, Bias *backend.Tensor
	Out, K       int
	Params       backend.Conv2DParams
}

// LoadConv2d reads a k×k convolution with symmetric padding.
func LoadConv2d(b *weights.Builder, in, out, k, stride, pad int) *Conv2d {
	return &Conv2d{
		Weight: b.Tensor("weight", out, in, k, k),
		Bias:   b.Tensor("bias", out),
		Out:    out, K: k,
		Params: backend.Conv2DSame(stride, pad),
	}
}

// Forward convolves x [N, C, H, W].
func (c *Conv2d) Forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	oh, ow := c.Params.OutSize(x.Shape[2], x.Shape[3], c.K, c.K)
	y := dev.Alloc(x.Shape[0], c.Out, oh, ow)
	dev.Conv2D(y, x, c.Weight, c.Bias, c.Params)
	return y
}

// GroupNorm normalises groups of channels of [N, C, ...].
type GroupNorm struct {
	Weight, Bias *backend.Tensor
	Groups       int
	Eps          float32
}

// LoadGroupNorm reads weight and bias [c].
func LoadGroupNorm(b *weights.Builder, c, groups int, eps float32) *GroupNorm {
	return &GroupNorm{Weight: b.Tensor("weight", c), Bias: b.Tensor("bias", c), Groups: groups, Eps: eps}
}

// Forward normalises x, followed by SiLU when silu is set.
func (g *GroupNorm) Forward(dev backend.Device, x *backend.Tensor, silu bool) *backend.Tensor {
	y := dev.Alloc(x.Shape...)
	dev.GroupNorm(y, x, g.Weight, g.Bias, g.Groups, g.Eps, silu)
	return y
}

// LayerNorm normalises the last dimension.
type LayerNorm struct {
	Weight, Bias *backend.Tensor
	Eps          float32
}

// LoadLayerNorm reads weight and bias [dim].
func LoadLayerNorm(b *weights.Builder, dim int, eps float32) *LayerNorm {
	return &LayerNorm{Weight: b.Tensor("weight", dim), Bias: b.Tensor("bias", dim), Eps: eps}
}

// Forward normalises x.
func (l *LayerNorm) Forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	y := dev.Alloc(x.Shape...)
	dev.LayerNorm(y, x, l.Weight, l.Bias, l.Eps)
	return y
}

// Unary applies op to x in a new tensor.
func Unary(dev backend.Device, op backend.UnaryOp, x *backend.Tensor) *backend.Tensor {
	y := dev.Alloc(x.Shape...)
	dev.Unary(op, y, x)
	return y
}

// Add returns a + b with broadcasting to a's shape.
func Add(dev backend.Device, a, b *backend.Tensor) *backend.Tensor {
	y := dev.Alloc(a.Shape...)
	dev.Binary(backend.Add, y, a, b)
	return y
}

// Mul returns a · b elementwise with broadcasting to a's shape.
func Mul(dev backend.Device, a, b *backend.Tensor) *backend.Tensor {
	y := dev.Alloc(a.Shape...)
	dev.Binary(backend.Mul, y, a, b)
	return y
}

// Permute returns x with dimensions reordered.
func Permute(dev backend.Device, x *backend.Tensor, perm ...int) *backend.Tensor {
	shape := make([]int, len(perm))
	for i, p := range perm {
		shape[i] = x.Shape[p]
	}
	y := dev.Alloc(shape...)
	dev.Permute(y, x, perm...)
	return y
}

// Attention runs multi-head attention of q [B, Nq, H·D] over k, v [B, Nk, H·D].
func Attention(dev backend.Device, q, k, v *backend.Tensor, p backend.AttentionParams) *backend.Tensor {
	y := dev.Alloc(q.Shape...)
	dev.Attention(y, q, k, v, p)
	return y
}

// Upsample2x returns a nearest-neighbour 2× upsample of x [N, C, H, W].
func Upsample2x(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	y := dev.Alloc(x.Shape[0], x.Shape[1], 2*x.Shape[2], 2*x.Shape[3])
	dev.Upsample2x(y, x)
	return y
}

// Concat joins xs along axis.
func Concat(dev backend.Device, axis int, xs ...*backend.Tensor) *backend.Tensor {
	shape := xs[0].Shape.Clone()
	shape[axis] = 0
	for _, x := range xs {
		shape[axis] += x.Shape[axis]
	}
	y := dev.Alloc(shape...)
	dev.Concat(y, axis, xs...)
	return y
}

// ForwardAdd convolves x and adds res, which broadcasts to the output (a
// skip connection, or a per-channel term [N, out, 1, 1]); the GPU
// accumulates the convolution onto res instead of running add kernels.
func (c *Conv2d) ForwardAdd(dev backend.Device, x, res *backend.Tensor) *backend.Tensor {
	oh, ow := c.Params.OutSize(x.Shape[2], x.Shape[3], c.K, c.K)
	y := dev.Alloc(x.Shape[0], c.Out, oh, ow)
	dev.Conv2DAdd(y, x, c.Weight, c.Bias, res, c.Params)
	return y
}

// AddInto adds the layer's output for x to res in place (a residual
// connection): res += x·Wᵀ + b.
func (l *Linear) AddInto(dev backend.Device, res, x *backend.Tensor) {
	dev.LinearAdd(res, x, l.Weight, l.Bias, res)
}

// FromChannels applies a linear map (w [out, C], or a 1×1 convolution's
// [out, C, 1, 1]) to channels-first x [N, C, H, W] and returns the tokens
// [N, H·W, out].
func FromChannels(dev backend.Device, x, w, bias *backend.Tensor) *backend.Tensor {
	n, c := x.Shape[0], x.Shape[1]
	y := dev.Alloc(n, x.Len()/(n*c), w.Shape[0])
	dev.LinearFromChannels(y, x, w, bias)
	return y
}

// ToChannels applies a linear map w [out, in] (or [out, in, 1, 1]) to
// tokens x [N, L, in], returns them channels-first with the given spatial
// shape [N, out, shape...], plus res (that shape, or nil).
func ToChannels(dev backend.Device, x, w, bias, res *backend.Tensor, spatial ...int) *backend.Tensor {
	y := dev.Alloc(append([]int{x.Shape[0], w.Shape[0]}, spatial...)...)
	dev.LinearToChannels(y, x, w, bias, res)
	return y
}
