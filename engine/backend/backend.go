// Package backend defines the Device interface every compute backend (CPU,
// CUDA) implements, and the device-resident Tensor handle.
//
// The interface is eager and small: each op writes into a caller-allocated
// dst and never modifies its inputs. Shape misuse is a programmer error and
// panics; device failures (out of memory, kernel faults) are reported by Sync.
// Tensors are contiguous, row-major, in PyTorch dimension order.
package backend

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// Tensor is a contiguous tensor that lives on a Device.
type Tensor struct {
	Shape tensor.Shape
	// DType is the compute dtype of the storage on the device (F32 on CPU).
	DType tensor.DType
	// Buf is the backend-specific storage; only the owning Device reads it.
	Buf any
	// Offset is the element offset of this view into Buf.
	Offset int
}

// Len returns the number of elements.
func (t *Tensor) Len() int { return t.Shape.NumElements() }

// Reshape returns a view of t with a new shape holding the same number of
// elements. One dimension may be -1 and is inferred.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	s := tensor.Shape(shape).Clone()
	infer := -1
	known := 1
	for i, d := range s {
		if d == -1 {
			if infer >= 0 {
				panic("reshape: more than one -1")
			}
			infer = i
			continue
		}
		known *= d
	}
	if infer >= 0 {
		if known == 0 || t.Len()%known != 0 {
			panic(fmt.Sprintf("reshape %v to %v: sizes differ", t.Shape, shape))
		}
		s[infer] = t.Len() / known
	}
	if s.NumElements() != t.Len() {
		panic(fmt.Sprintf("reshape %v to %v: sizes differ", t.Shape, shape))
	}
	return &Tensor{Shape: s, DType: t.DType, Buf: t.Buf, Offset: t.Offset}
}

// String describes the tensor for debugging.
func (t *Tensor) String() string { return fmt.Sprintf("Tensor%v(%v)", t.Shape, t.DType) }

// UnaryOp is an elementwise function of one tensor.
type UnaryOp uint8

// Unary ops.
const (
	SiLU      UnaryOp = iota // x*sigmoid(x)
	GELU                     // exact erf GELU
	GELUTanh                 // tanh approximation of GELU
	QuickGELU                // x*sigmoid(1.702x), as OpenAI CLIP
	ReLU
	Tanh
	Sigmoid
	Exp
	Neg
)

var unaryNames = [...]string{"silu", "gelu", "gelu_tanh", "quick_gelu", "relu", "tanh", "sigmoid", "exp", "neg"}

// String returns the op name.
func (o UnaryOp) String() string { return unaryNames[o] }

// BinaryOp is an elementwise function of two tensors with broadcasting.
type BinaryOp uint8

// Binary ops.
const (
	Add BinaryOp = iota
	Sub
	Mul
	Div
)

var binaryNames = [...]string{"add", "sub", "mul", "div"}

// String returns the op name.
func (o BinaryOp) String() string { return binaryNames[o] }

// Conv2DParams are the geometry of a 2-D convolution. Padding is
// (top, bottom, left, right) so that the asymmetric (0,1,0,1) padding of the
// LDM VAE encoder's downsampler is expressible.
type Conv2DParams struct {
	StrideH, StrideW  int
	PadTop, PadBottom int
	PadLeft, PadRight int
}

// Conv2DSame returns stride-1 (or stride-s) params with symmetric padding p.
func Conv2DSame(stride, pad int) Conv2DParams {
	return Conv2DParams{StrideH: stride, StrideW: stride, PadTop: pad, PadBottom: pad, PadLeft: pad, PadRight: pad}
}

// OutSize returns the output spatial size for an input of h×w and a kernel kh×kw.
func (p Conv2DParams) OutSize(h, w, kh, kw int) (int, int) {
	return (h+p.PadTop+p.PadBottom-kh)/p.StrideH + 1, (w+p.PadLeft+p.PadRight-kw)/p.StrideW + 1
}

// TimestepParams configure the sinusoidal timestep embedding.
type TimestepParams struct {
	// Dim is the embedding width (even).
	Dim int
	// FlipSinToCos puts the cosine half first (LDM/diffusers SD: true).
	FlipSinToCos bool
	// DownscaleFreqShift is diffusers' freq_shift (SD: 0, so exponents are -ln(MaxPeriod)*i/(Dim/2)).
	DownscaleFreqShift float32
	// MaxPeriod is the longest period (SD: 10000).
	MaxPeriod float32
	// Scale multiplies the timestep before embedding (SD: 1; Flux: 1000).
	Scale float32
}

// AttentionParams describe a multi-head scaled-dot-product attention.
type AttentionParams struct {
	Heads int
	// Scale multiplies q·k (usually 1/sqrt(head dim)).
	Scale float32
	// Causal masks keys after the query position (CLIP text encoder).
	Causal bool
}

// PeakMemoryReporter is implemented by devices that track their peak
// memory use (the CUDA backend): the engine reports each job's peak.
type PeakMemoryReporter interface {
	// ResetPeakMemory starts a new measurement.
	ResetPeakMemory()
	// PeakMemory returns the most bytes held at once since the reset.
	PeakMemory() uint64
}

// Device is a compute backend. All ops write into dst, which the caller
// allocated with the right shape on the same device, and never modify their
// inputs. Ops may run asynchronously; Download and Sync wait for them.
type Device interface {
	// Name is a short human-readable description ("cpu (2 threads)").
	Name() string
	// Alloc returns an uninitialised tensor in the device's compute dtype.
	Alloc(shape ...int) *Tensor
	// Upload copies host float32 data into a new device tensor.
	Upload(data []float32, shape ...int) *Tensor
	// UploadRaw converts stored weight bytes of dtype dt into a new device
	// tensor (the device chooses its storage precision).
	UploadRaw(raw []byte, dt tensor.DType, shape ...int) (*Tensor, error)
	// Download copies a device tensor to host float32 memory.
	Download(t *Tensor) ([]float32, error)
	// Free returns a tensor's memory to the device's pool. Using t afterwards
	// is a programmer error. Freeing is optional on the CPU.
	Free(t *Tensor)
	// Sync waits for queued work and returns sticky device errors.
	Sync(ctx context.Context) error

	// MatMul computes dst = a·b (b transposed when transB) for a [..., M, K]
	// and b [K, N] (or [N, K] with transB), or batched b [..., K, N] with the
	// same leading dimensions as a.
	MatMul(dst, a, b *Tensor, transB bool)
	// Linear computes dst = x·wᵀ + bias for x [..., in], w [out, in], bias [out] or nil.
	Linear(dst, x, w, bias *Tensor)
	// Conv2D computes a 2-D convolution of x [N, C, H, W] with w [O, C, KH, KW]
	// plus bias [O] (or nil) into dst [N, O, OH, OW].
	Conv2D(dst, x, w, bias *Tensor, p Conv2DParams)
	// Conv2DAdd is Conv2D plus res, which broadcasts to dst's shape (a skip
	// connection [N, O, OH, OW], or a per-channel term [N, O, 1, 1]) and may
	// be dst itself: the GPU accumulates the convolution onto it instead of
	// running separate bias and add kernels.
	Conv2DAdd(dst, x, w, bias, res *Tensor, p Conv2DParams)
	// LinearAdd computes dst = x·wᵀ + bias + res, where res has dst's shape
	// and may be dst itself (a residual connection; bias may be nil).
	LinearAdd(dst, x, w, bias, res *Tensor)
	// LinearFromChannels computes dst[n] = x[n]ᵀ·wᵀ + bias for
	// channels-first x [N, C, L], w [out, C] and dst [N, L, out]: a 1×1
	// convolution whose output is token-major, without a permute.
	LinearFromChannels(dst, x, w, bias *Tensor)
	// LinearToChannels computes dst[n] = (x[n]·wᵀ + bias)ᵀ + res[n] for
	// token-major x [N, L, in], w [out, in] and channels-first dst
	// [N, out, L]; res (dst's shape) may be nil or dst itself.
	LinearToChannels(dst, x, w, bias, res *Tensor)
	// GroupNorm normalises x [N, C, ...] over groups of channels and the
	// spatial dimensions, then applies gamma/beta [C]; with silu it fuses a
	// SiLU activation afterwards.
	GroupNorm(dst, x, gamma, beta *Tensor, groups int, eps float32, silu bool)
	// LayerNorm normalises over the last dimension and applies gamma/beta
	// (either may be nil).
	LayerNorm(dst, x, gamma, beta *Tensor, eps float32)
	// RMSNorm scales each row of x over the last dimension by the
	// reciprocal root mean square of its values, 1/sqrt(mean(x²)+eps),
	// accumulated in float32 or wider whatever the storage, then by weight
	// [dim] (nil: none). Unlike LayerNorm no mean is subtracted and no bias
	// added: T5's layer norm, and the RMSNorm of Flux, SD3 and Qwen.
	RMSNorm(dst, x, weight *Tensor, eps float32)
	// Softmax applies a softmax over the last dimension.
	Softmax(dst, x *Tensor)
	// Attention computes softmax(q·kᵀ·scale)·v per head without
	// materialising the full score matrix for long sequences. q is
	// [B, Nq, H·D], k and v are [B, Nk, H·D], dst is [B, Nq, H·D].
	Attention(dst, q, k, v *Tensor, p AttentionParams)
	// Unary applies an elementwise function.
	Unary(op UnaryOp, dst, x *Tensor)
	// Binary applies an elementwise function with NumPy broadcasting of
	// a and b to dst's shape.
	Binary(op BinaryOp, dst, a, b *Tensor)
	// Affine computes dst = x·alpha + beta elementwise.
	Affine(dst, x *Tensor, alpha, beta float32)
	// Clamp limits x elementwise to [lo, hi] (NaN stays NaN, ±Inf becomes
	// the bound): T5's guard against float16 overflow of its hidden states.
	Clamp(dst, x *Tensor, lo, hi float32)
	// GEGLU splits x [..., 2H] into (a, g) halves and computes a·gelu(g) into dst [..., H].
	GEGLU(dst, x *Tensor)
	// Upsample2x is a nearest-neighbour 2× upsample of x [N, C, H, W].
	Upsample2x(dst, x *Tensor)
	// Concat joins tensors along axis into dst.
	Concat(dst *Tensor, axis int, xs ...*Tensor)
	// Slice copies x[..., start:start+dst.Shape[axis], ...] along axis into dst.
	Slice(dst, x *Tensor, axis, start int)
	// Permute copies x with its dimensions reordered: dst.Shape[i] = x.Shape[perm[i]].
	Permute(dst, x *Tensor, perm ...int)
	// Embedding gathers rows of table [V, D] for ids into dst [len(ids), D].
	Embedding(dst, table *Tensor, ids []int)
	// TimestepEmbedding writes sinusoidal embeddings of ts into dst [len(ts), p.Dim].
	TimestepEmbedding(dst *Tensor, ts []float32, p TimestepParams)
}
