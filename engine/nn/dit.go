package nn

import "github.com/darkroom-ai/darkroom/engine/backend"

// The pieces every diffusion transformer (Flux, SD3's MMDiT, …) builds its
// blocks from: adaptive-LayerNorm modulation, gated residuals, the
// two-layer MLPs of the conditioning embedders and the feed-forward, and
// padding a latent to whole patches.

// MLP2 is Linear, SiLU, Linear: the timestep, guidance and pooled-text
// embedders of the DiTs (diffusers' TimestepEmbedding and
// PixArtAlphaTextProjection with act_fn "silu").
type MLP2 [2]*Linear

// Forward applies the MLP to x.
func (m *MLP2) Forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	h := m[0].Forward(dev, x)
	dev.Unary(backend.SiLU, h, h)
	y := m[1].Forward(dev, h)
	dev.Free(h)
	return y
}

// FeedForward is diffusers' FeedForward with activation "gelu-approximate":
// Linear, tanh-approximated GELU, Linear (net.0.proj, net.2).
type FeedForward [2]*Linear

// Forward applies the feed-forward to x.
func (f FeedForward) Forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	h := f[0].Forward(dev, x)
	dev.Unary(backend.GELUTanh, h, h)
	y := f[1].Forward(dev, h)
	dev.Free(h)
	return y
}

// Chunk returns part i of width d of a modulation vector mod [B, k·d] as
// [B, 1, d] (torch's emb.chunk(k, dim=1)[i].unsqueeze(1)).
func Chunk(dev backend.Device, mod *backend.Tensor, i, d int) *backend.Tensor {
	B := mod.Shape[0]
	out := dev.Alloc(B, d)
	dev.Slice(out, mod, 1, i*d)
	return out.Reshape(B, 1, d)
}

// Chunks returns the k parts of width d of mod [B, k·d], each [B, 1, d].
func Chunks(dev backend.Device, mod *backend.Tensor, k, d int) []*backend.Tensor {
	out := make([]*backend.Tensor, k)
	for i := range out {
		out[i] = Chunk(dev, mod, i, d)
	}
	return out
}

// FreeAll frees every non-nil tensor of ts.
func FreeAll(dev backend.Device, ts ...*backend.Tensor) {
	for _, t := range ts {
		if t != nil {
			dev.Free(t)
		}
	}
}

// Modulate returns LayerNorm(x)·(1+scale)+shift with a LayerNorm of no
// affine parameters (the adaLN of DiT blocks): x [B, N, D], shift and scale
// [B, 1, D].
func Modulate(dev backend.Device, x, shift, scale *backend.Tensor, eps float32) *backend.Tensor {
	y := dev.Alloc(x.Shape...)
	dev.LayerNorm(y, x, nil, nil, eps)
	s1 := dev.Alloc(scale.Shape...)
	dev.Affine(s1, scale, 1, 1)
	dev.Binary(backend.Mul, y, y, s1)
	dev.Free(s1)
	dev.Binary(backend.Add, y, y, shift)
	return y
}

// GatedAdd does x += gate·y (y is overwritten): the gated residual of DiT
// blocks, gate [B, 1, D].
func GatedAdd(dev backend.Device, x, gate, y *backend.Tensor) {
	dev.Binary(backend.Mul, y, y, gate)
	dev.Binary(backend.Add, x, x, y)
}

// PadCircular pads x [B, C, H, W] to multiples of p in H and W by wrapping
// its first rows and columns around (torch's padding_mode "circular" on the
// bottom and right, ComfyUI's pad_to_patch_size), in a new tensor; x itself
// when it needs none.
func PadCircular(dev backend.Device, x *backend.Tensor, p int) *backend.Tensor {
	orig := x
	B, C, H, W := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if r := (p - H%p) % p; r > 0 {
		top := dev.Alloc(B, C, r, W)
		dev.Slice(top, x, 2, 0)
		y := dev.Alloc(B, C, H+r, W)
		dev.Concat(y, 2, x, top)
		dev.Free(top)
		x, H = y, H+r
	}
	if r := (p - W%p) % p; r > 0 {
		left := dev.Alloc(B, C, H, r)
		dev.Slice(left, x, 3, 0)
		y := dev.Alloc(B, C, H, W+r)
		dev.Concat(y, 3, x, left)
		dev.Free(left)
		if x != orig {
			dev.Free(x)
		}
		x = y
	}
	return x
}

// CropTo keeps the top-left h × w of v [B, C, H, W], freeing v when it
// cuts.
func CropTo(dev backend.Device, v *backend.Tensor, h, w int) *backend.Tensor {
	B, C, H, W := v.Shape[0], v.Shape[1], v.Shape[2], v.Shape[3]
	if H != h {
		y := dev.Alloc(B, C, h, W)
		dev.Slice(y, v, 2, 0)
		dev.Free(v)
		v, H = y, h
	}
	if W != w {
		y := dev.Alloc(B, C, H, w)
		dev.Slice(y, v, 3, 0)
		dev.Free(v)
		v = y
	}
	return v
}

// RotatePairs applies a rotary position embedding to x [B, L, H, hd] in
// place, rotating each interleaved pair (x₀, x₁) of a head as the complex
// number x₀ + i·x₁ times e^{iθ}: (x₀·cos − x₁·sin, x₁·cos + x₀·sin), as
// diffusers' apply_rotary_emb with use_real_unbind_dim=-1 (Flux) and
// torch.view_as_complex rotations (Z-Image) do. cos and sin [1, L, 1, hd]
// hold each pair's value twice.
func RotatePairs(dev backend.Device, x, cos, sin *backend.Tensor) {
	B, L, H, hd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	pairs := x.Reshape(B, L, H, hd/2, 2)
	re, im := dev.Alloc(B, L, H, hd/2, 1), dev.Alloc(B, L, H, hd/2, 1)
	dev.Slice(re, pairs, 4, 0)
	dev.Slice(im, pairs, 4, 1)
	dev.Unary(backend.Neg, im, im)
	rot := dev.Alloc(B, L, H, hd/2, 2)
	dev.Concat(rot, 4, im, re)
	dev.Free(re)
	dev.Free(im)
	rot = rot.Reshape(B, L, H, hd)
	dev.Binary(backend.Mul, rot, rot, sin)
	dev.Binary(backend.Mul, x, x, cos)
	dev.Binary(backend.Add, x, x, rot)
	dev.Free(rot)
}
