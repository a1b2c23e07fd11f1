// Package flux implements the Flux.1 transformer (Black Forest Labs' MMDiT
// of FLUX.1-dev and FLUX.1-schnell) as diffusers' FluxTransformer2DModel
// computes it. Checkpoints name its tensors as diffusers stores them
// (x_embedder, context_embedder, time_text_embed.*, transformer_blocks.N.*,
// single_transformer_blocks.N.*, norm_out, proj_out) or as the original
// Black Forest Labs / ComfyUI files do (img_in, txt_in, time_in, vector_in,
// guidance_in, double_blocks.N.* with fused qkv, single_blocks.N.linear1/2,
// final_layer.*), under some root prefix (model.diffusion_model. in ComfyUI
// checkpoints).
//
// The image latent is packed into 2×2 patches of 16 channels (64 values a
// token, Pack/Unpack), embedded by x_embedder; the T5 text states by
// context_embedder. The conditioning vector temb is the sum of MLPs of the
// sinusoidal embedding of timestep·1000, of guidance·1000 (guidance-distilled
// models only) and of the pooled CLIP vector. Double-stream blocks keep
// separate text and image streams, each with its own adaptive-LayerNorm-zero
// modulation, projections and feed-forward, attending jointly over
// [text, image] with per-head RMS-normed queries and keys rotated by a 3-axis
// RoPE of the token ids; single-stream blocks run the joint sequence through
// one parallel attention + MLP layer. A final continuous adaptive LayerNorm
// and proj_out map the image tokens back to 64 values.
package flux

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Eps is the epsilon of every LayerNorm and RMSNorm of the model.
const Eps = 1e-6

// Theta is the RoPE base.
const Theta = 10000

// Half16Limit bounds the residual streams on float16 devices, as diffusers
// clips them to ±65504 in float16 (the text stream after each double block,
// the joint stream after each single block).
const Half16Limit = 65504

// DefaultAxesDim is axes_dims_rope of the released Flux.1 models (head
// dimension 128).
var DefaultAxesDim = []int{16, 56, 56}

// Config describes a Flux transformer.
type Config struct {
	InChannels   int   // x_embedder input (64: 16 latent channels × 2×2)
	OutChannels  int   // proj_out output (patch²·out_channels, 64)
	Width        int   // inner dim = heads × head dim (3072)
	Heads        int   // num_attention_heads (24)
	HeadDim      int   // attention_head_dim (128)
	JointDim     int   // joint_attention_dim (T5 width, 4096)
	PooledDim    int   // pooled_projection_dim (CLIP-L, 768)
	TimeDim      int   // sinusoidal embedding width (256)
	MLP          int   // feed-forward hidden width (4·Width)
	Layers       int   // double-stream blocks (19)
	SingleLayers int   // single-stream blocks (38)
	Guidance     bool  // guidance_embeds (dev: true, schnell: false)
	AxesDim      []int // axes_dims_rope; shapes cannot tell it, set from DefaultAxesDim for head dim 128
	// BFL is the original Black Forest Labs / ComfyUI layout (img_in,
	// double_blocks.N.img_attn.qkv, single_blocks.N.linear1, final_layer…)
	// instead of diffusers' names.
	BFL bool
	// Qwen is Qwen-Image's transformer (diffusers'
	// QwenImageTransformer2DModel, see qwen.go): double-stream blocks only,
	// an RMS norm of the text states before txt_in, no pooled or guidance
	// embedding, and rotary tables in float32.
	Qwen bool
}

// String is a one-line summary.
func (c Config) String() string {
	return fmt.Sprintf("width %d (%d heads × %d), %d double + %d single blocks, mlp %d, in %d, out %d, text %d, pooled %d, guidance %v, rope %v",
		c.Width, c.Heads, c.HeadDim, c.Layers, c.SingleLayers, c.MLP, c.InChannels, c.OutChannels, c.JointDim, c.PooledDim, c.Guidance, c.AxesDim)
}

// layoutNames are the tensors ConfigFromWeights reads, in one layout.
type layoutNames struct {
	bfl                       bool
	x, txt, pooled, time, out string // matrices: [Width, in], [Width, JointDim], ..., [OutChannels, Width]
	guidance                  string
	double, single            string // a block's tensor that exists, with %d for its index
	doubleNormQ, doubleMLP    string // block 0's query norm [head dim] and first MLP layer [MLP, Width]
	singleNormQ, singleMLP    string
	singleFused               bool   // singleMLP is linear1 [3·Width + MLP, Width], not proj_mlp
	name                      string // the layout in messages
}

var (
	diffusersNames = layoutNames{
		x: "x_embedder.weight", txt: "context_embedder.weight", pooled: "time_text_embed.text_embedder.linear_1.weight",
		time: "time_text_embed.timestep_embedder.linear_1.weight", out: "proj_out.weight",
		guidance: "time_text_embed.guidance_embedder.linear_1.weight",
		double:   "transformer_blocks.%d.attn.to_q.weight", single: "single_transformer_blocks.%d.attn.to_q.weight",
		doubleNormQ: "transformer_blocks.0.attn.norm_q.weight", doubleMLP: "transformer_blocks.0.ff.net.0.proj.weight",
		singleNormQ: "single_transformer_blocks.0.attn.norm_q.weight", singleMLP: "single_transformer_blocks.0.proj_mlp.weight",
		name: "diffusers",
	}
	bflNames = layoutNames{
		bfl: true,
		x:   "img_in.weight", txt: "txt_in.weight", pooled: "vector_in.in_layer.weight",
		time: "time_in.in_layer.weight", out: "final_layer.linear.weight", guidance: "guidance_in.in_layer.weight",
		double: "double_blocks.%d.img_attn.qkv.weight", single: "single_blocks.%d.linear1.weight",
		doubleNormQ: "double_blocks.0.img_attn.norm.query_norm.scale", doubleMLP: "double_blocks.0.img_mlp.0.weight",
		singleNormQ: "single_blocks.0.norm.query_norm.scale", singleMLP: "single_blocks.0.linear1.weight", singleFused: true,
		name: "BFL",
	}
)

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix ("", "transformer.", "model.diffusion_model.", …), in diffusers'
// layout or, when there is no x_embedder but an img_in, BFL's (c.BFL).
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	if shape("txt_norm.weight") != nil && shape(fmt.Sprintf(qwenNames.double, 0)) != nil {
		return qwenConfig(shape, prefix)
	}
	n := diffusersNames
	if shape(n.x) == nil && shape(bflNames.x) != nil {
		n = bflNames
	}
	two := func(name string) ([]int, error) {
		s := shape(name)
		if len(s) != 2 || s[0] <= 0 || s[1] <= 0 {
			if s == nil {
				return nil, fmt.Errorf("flux: no %s%s: not a %s Flux transformer", prefix, name, n.name)
			}
			return nil, fmt.Errorf("flux: %s%s has shape %v, want a matrix", prefix, name, s)
		}
		return s, nil
	}
	c := Config{BFL: n.bfl}
	x, err := two(n.x)
	if err != nil {
		return Config{}, err
	}
	c.Width, c.InChannels = x[0], x[1]
	for _, f := range []struct {
		name string
		dst  *int
		dim  int
	}{{n.txt, &c.JointDim, 1}, {n.pooled, &c.PooledDim, 1}, {n.time, &c.TimeDim, 1}, {n.out, &c.OutChannels, 0}} {
		s, err := two(f.name)
		if err != nil {
			return Config{}, err
		}
		*f.dst = s[f.dim]
	}
	c.Guidance = shape(n.guidance) != nil
	for shape(fmt.Sprintf(n.double, c.Layers)) != nil {
		c.Layers++
	}
	for shape(fmt.Sprintf(n.single, c.SingleLayers)) != nil {
		c.SingleLayers++
	}
	var nq, mlp []int
	fused := false
	switch {
	case c.Layers > 0:
		nq, mlp = shape(n.doubleNormQ), shape(n.doubleMLP)
	case c.SingleLayers > 0:
		nq, mlp, fused = shape(n.singleNormQ), shape(n.singleMLP), n.singleFused
	default:
		return Config{}, fmt.Errorf("flux: no %s%s nor %s", prefix, fmt.Sprintf(n.double, 0), fmt.Sprintf(n.single, 0))
	}
	if len(nq) != 1 || nq[0] <= 0 || c.Width%nq[0] != 0 || nq[0]%2 != 0 {
		return Config{}, fmt.Errorf("flux: query norm has shape %v, want [head dim] (even, dividing %d)", nq, c.Width)
	}
	c.HeadDim, c.Heads = nq[0], c.Width/nq[0]
	switch {
	case fused && (len(mlp) != 2 || mlp[0] <= 3*c.Width):
		return Config{}, fmt.Errorf("flux: %s%s has shape %v, want [3·%d + mlp, %d]", prefix, n.singleMLP, mlp, c.Width, c.Width)
	case fused:
		c.MLP = mlp[0] - 3*c.Width
	case len(mlp) != 2 || mlp[0] <= 0:
		return Config{}, fmt.Errorf("flux: feed-forward weight has shape %v, want [mlp, %d]", mlp, c.Width)
	default:
		c.MLP = mlp[0]
	}
	if c.HeadDim == 128 {
		c.AxesDim = append([]int(nil), DefaultAxesDim...)
	}
	return c, nil
}

func (c Config) check() error {
	if len(c.AxesDim) == 0 {
		return fmt.Errorf("flux: axes_dims_rope unknown for head dim %d: set Config.AxesDim", c.HeadDim)
	}
	if len(c.AxesDim) != 3 {
		return fmt.Errorf("flux: axes_dims_rope %v: want 3 axes (ids are [N, 3])", c.AxesDim)
	}
	sum := 0
	for _, d := range c.AxesDim {
		if d <= 0 || d%2 != 0 {
			return fmt.Errorf("flux: axes_dims_rope %v: each must be even and positive", c.AxesDim)
		}
		sum += d
	}
	if sum != c.HeadDim {
		return fmt.Errorf("flux: axes_dims_rope %v sum to %d, not the head dim %d", c.AxesDim, sum, c.HeadDim)
	}
	return nil
}

type attention struct {
	q, k, v      *nn.Linear
	normQ, normK *backend.Tensor
	// Double-stream blocks only: the text projections.
	aq, ak, av     *nn.Linear
	normAQ, normAK *backend.Tensor
	out, addOut    *nn.Linear
}

type doubleBlock struct {
	mod, modCtx *nn.Linear // norm1.linear, norm1_context.linear (D -> 6D)
	attn        attention
	ff, ffCtx   nn.FeedForward // net.0.proj, net.2
}

type singleBlock struct {
	mod     *nn.Linear // norm.linear (D -> 3D)
	attn    attention
	projMLP *nn.Linear
	projOut *nn.Linear // (D + MLP) -> D
}

// Model is a loaded Flux transformer.
type Model struct {
	Config     Config
	xEmbed     *nn.Linear
	ctxEmbed   *nn.Linear
	timeEmbed  nn.MLP2
	guideEmbed *nn.MLP2        // nil without guidance embeds
	textEmbed  *nn.MLP2        // nil for Qwen-Image
	txtNorm    *backend.Tensor // Qwen-Image's txt_norm, or nil
	double     []doubleBlock
	single     []singleBlock
	normOut    *nn.Linear // D -> 2D (scale, shift)
	projOut    *nn.Linear
}

// Load builds the model on dev from b, prefixed at the root
// ConfigFromWeights was given, in the layout it found (diffusers' names, or
// BFL's when c.BFL). Missing or misshaped tensors are reported together in
// one error.
func Load(b *weights.Builder, dev backend.Device, c Config) (*Model, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if c.BFL {
		return loadBFL(b, dev, c)
	}
	if c.Qwen {
		return loadQwen(b, c)
	}
	D := c.Width
	lin := func(name string, in, out int) *nn.Linear { return nn.LoadLinear(b.Sub(name), in, out, true) }
	m := &Model{
		Config:   c,
		xEmbed:   lin("x_embedder", c.InChannels, D),
		ctxEmbed: lin("context_embedder", c.JointDim, D),
		timeEmbed: nn.MLP2{lin("time_text_embed.timestep_embedder.linear_1", c.TimeDim, D),
			lin("time_text_embed.timestep_embedder.linear_2", D, D)},
		textEmbed: &nn.MLP2{lin("time_text_embed.text_embedder.linear_1", c.PooledDim, D),
			lin("time_text_embed.text_embedder.linear_2", D, D)},
		normOut: lin("norm_out.linear", D, 2*D),
		projOut: lin("proj_out", D, c.OutChannels),
	}
	if c.Guidance {
		m.guideEmbed = &nn.MLP2{lin("time_text_embed.guidance_embedder.linear_1", c.TimeDim, D),
			lin("time_text_embed.guidance_embedder.linear_2", D, D)}
	}
	hd := c.HeadDim
	for i := range c.Layers {
		p := fmt.Sprintf("transformer_blocks.%d.", i)
		a := p + "attn."
		m.double = append(m.double, doubleBlock{
			mod:    lin(p+"norm1.linear", D, 6*D),
			modCtx: lin(p+"norm1_context.linear", D, 6*D),
			attn: attention{
				q: lin(a+"to_q", D, D), k: lin(a+"to_k", D, D), v: lin(a+"to_v", D, D),
				normQ: b.Tensor(a+"norm_q.weight", hd), normK: b.Tensor(a+"norm_k.weight", hd),
				aq: lin(a+"add_q_proj", D, D), ak: lin(a+"add_k_proj", D, D), av: lin(a+"add_v_proj", D, D),
				normAQ: b.Tensor(a+"norm_added_q.weight", hd), normAK: b.Tensor(a+"norm_added_k.weight", hd),
				out: lin(a+"to_out.0", D, D), addOut: lin(a+"to_add_out", D, D),
			},
			ff:    nn.FeedForward{lin(p+"ff.net.0.proj", D, c.MLP), lin(p+"ff.net.2", c.MLP, D)},
			ffCtx: nn.FeedForward{lin(p+"ff_context.net.0.proj", D, c.MLP), lin(p+"ff_context.net.2", c.MLP, D)},
		})
	}
	for i := range c.SingleLayers {
		p := fmt.Sprintf("single_transformer_blocks.%d.", i)
		a := p + "attn."
		m.single = append(m.single, singleBlock{
			mod: lin(p+"norm.linear", D, 3*D),
			attn: attention{
				q: lin(a+"to_q", D, D), k: lin(a+"to_k", D, D), v: lin(a+"to_v", D, D),
				normQ: b.Tensor(a+"norm_q.weight", hd), normK: b.Tensor(a+"norm_k.weight", hd),
			},
			projMLP: lin(p+"proj_mlp", D, c.MLP),
			projOut: lin(p+"proj_out", D+c.MLP, D),
		})
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	return m, nil
}

// Rope returns the rotary tables cos, sin [N, HeadDim] of ids as diffusers'
// FluxPosEmbed computes them: per axis i of width d, frequencies
// 1/θ^(2j/d) in float64, angles id·freq, each cos/sin repeated twice
// (interleaved pairs), the axes concatenated.
func Rope(ids [][3]float32, axesDim []int) (cos, sin []float32) {
	width := 0
	for _, d := range axesDim {
		width += d
	}
	cos, sin = make([]float32, len(ids)*width), make([]float32, len(ids)*width)
	for n, id := range ids {
		off := n * width
		for a, d := range axesDim {
			pos := float64(id[a])
			for j := 0; j < d; j += 2 {
				freq := 1.0 / math.Pow(Theta, float64(j)/float64(d))
				s, c := math.Sincos(pos * freq)
				cos[off+j], cos[off+j+1] = float32(c), float32(c)
				sin[off+j], sin[off+j+1] = float32(s), float32(s)
			}
			off += d
		}
	}
	return cos, sin
}

// run holds the per-call state of a forward pass.
type run struct {
	dev      backend.Device
	c        Config
	B        int
	cos, sin *backend.Tensor // [1, L, 1, HeadDim]
	half     bool
}

// chunk returns part i of width D of a modulation vector [B, k·D] as [B, 1, D].
func (r *run) chunk(mod *backend.Tensor, i int) *backend.Tensor {
	return nn.Chunk(r.dev, mod, i, r.c.Width)
}

// modulate returns LayerNorm(x)·(1+scale)+shift, no affine.
func (r *run) modulate(x, shift, scale *backend.Tensor) *backend.Tensor {
	return nn.Modulate(r.dev, x, shift, scale, Eps)
}

// gatedAdd does x += gate·y.
func (r *run) gatedAdd(x, gate, y *backend.Tensor) { nn.GatedAdd(r.dev, x, gate, y) }

// qk projects x [B, N, D], RMS-normalises each head and returns [B, N, H, hd].
func (r *run) qk(l *nn.Linear, norm, x *backend.Tensor) *backend.Tensor {
	y := l.Forward(r.dev, x)
	n := r.dev.Alloc(x.Shape[0], x.Shape[1], r.c.Heads, r.c.HeadDim)
	r.dev.RMSNorm(n, y.Reshape(n.Shape...), norm, Eps)
	r.dev.Free(y)
	return n
}

// rope rotates x [B, L, H, hd] in place as apply_rotary_emb with
// use_real_unbind_dim=-1 (nn.RotatePairs).
func (r *run) rope(x *backend.Tensor) { nn.RotatePairs(r.dev, x, r.cos, r.sin) }

// attend runs softmax(q·kᵀ/√hd)·v of q, k, v [B, L, H, hd] into [B, L, H·hd].
func (r *run) attend(q, k, v *backend.Tensor) *backend.Tensor {
	B, L := q.Shape[0], q.Shape[1]
	hd := r.c.HeadDim
	D := r.c.Heads * hd
	r.rope(q)
	r.rope(k)
	out := r.dev.Alloc(B, L, D)
	r.dev.Attention(out, q.Reshape(B, L, D), k.Reshape(B, L, D), v.Reshape(B, L, D),
		backend.AttentionParams{Heads: r.c.Heads, Scale: float32(1 / math.Sqrt(float64(hd)))})
	r.dev.Free(q)
	r.dev.Free(k)
	r.dev.Free(v)
	return out
}

func (r *run) silu(temb *backend.Tensor) *backend.Tensor {
	s := r.dev.Alloc(temb.Shape...)
	r.dev.Unary(backend.SiLU, s, temb)
	return s
}

// doubleForward updates txt [B, T, D] and img [B, N, D] in place.
func (r *run) doubleForward(bl *doubleBlock, txt, img, stemb *backend.Tensor) {
	dev := r.dev
	B, T, N, D := r.B, txt.Shape[1], img.Shape[1], r.c.Width
	mod, modC := bl.mod.Forward(dev, stemb), bl.modCtx.Forward(dev, stemb)
	ch := func(m *backend.Tensor) [6]*backend.Tensor {
		var out [6]*backend.Tensor
		for i := range out {
			out[i] = r.chunk(m, i)
		}
		return out
	}
	mi, mc := ch(mod), ch(modC) // shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
	dev.Free(mod)
	dev.Free(modC)
	ni, nc := r.modulate(img, mi[0], mi[1]), r.modulate(txt, mc[0], mc[1])

	a := &bl.attn
	cat := func(t, i *backend.Tensor) *backend.Tensor {
		out := nn.Concat(dev, 1, t, i)
		dev.Free(t)
		dev.Free(i)
		return out
	}
	q := cat(r.qk(a.aq, a.normAQ, nc), r.qk(a.q, a.normQ, ni))
	k := cat(r.qk(a.ak, a.normAK, nc), r.qk(a.k, a.normK, ni))
	vt, vi := a.av.Forward(dev, nc), a.v.Forward(dev, ni)
	v := cat(vt.Reshape(B, T, r.c.Heads, r.c.HeadDim), vi.Reshape(B, N, r.c.Heads, r.c.HeadDim))
	dev.Free(ni)
	dev.Free(nc)
	o := r.attend(q, k, v)
	ot, oi := dev.Alloc(B, T, D), dev.Alloc(B, N, D)
	dev.Slice(ot, o, 1, 0)
	dev.Slice(oi, o, 1, T)
	dev.Free(o)

	// Image stream.
	y := a.out.Forward(dev, oi)
	dev.Free(oi)
	r.gatedAdd(img, mi[2], y)
	dev.Free(y)
	h := r.modulate(img, mi[3], mi[4])
	y = bl.ff.Forward(dev, h)
	dev.Free(h)
	r.gatedAdd(img, mi[5], y)
	dev.Free(y)

	// Text stream.
	y = a.addOut.Forward(dev, ot)
	dev.Free(ot)
	r.gatedAdd(txt, mc[2], y)
	dev.Free(y)
	h = r.modulate(txt, mc[3], mc[4])
	y = bl.ffCtx.Forward(dev, h)
	dev.Free(h)
	r.gatedAdd(txt, mc[5], y)
	dev.Free(y)
	if r.half {
		dev.Clamp(txt, txt, -Half16Limit, Half16Limit)
	}
	for i := range 6 {
		dev.Free(mi[i])
		dev.Free(mc[i])
	}
}

// singleForward updates the joint sequence x [B, L, D] in place.
func (r *run) singleForward(bl *singleBlock, x, stemb *backend.Tensor) {
	dev := r.dev
	B, L := r.B, x.Shape[1]
	mod := bl.mod.Forward(dev, stemb)
	shift, scale, gate := r.chunk(mod, 0), r.chunk(mod, 1), r.chunk(mod, 2)
	dev.Free(mod)
	n := r.modulate(x, shift, scale)
	mlp := bl.projMLP.Forward(dev, n)
	dev.Unary(backend.GELUTanh, mlp, mlp)
	a := &bl.attn
	q, k := r.qk(a.q, a.normQ, n), r.qk(a.k, a.normK, n)
	v := a.v.Forward(dev, n).Reshape(B, L, r.c.Heads, r.c.HeadDim)
	dev.Free(n)
	o := r.attend(q, k, v)
	cat := nn.Concat(dev, 2, o, mlp)
	dev.Free(o)
	dev.Free(mlp)
	y := bl.projOut.Forward(dev, cat)
	dev.Free(cat)
	r.gatedAdd(x, gate, y)
	dev.Free(y)
	if r.half {
		dev.Clamp(x, x, -Half16Limit, Half16Limit)
	}
	dev.Free(shift)
	dev.Free(scale)
	dev.Free(gate)
}

// embedSteps returns mlp(sinusoid(ts·1000)) [B, D].
func (r *run) embedSteps(m *nn.MLP2, ts []float32) *backend.Tensor {
	scaled := make([]float32, len(ts))
	for i, t := range ts {
		scaled[i] = t * 1000 // in float32, as diffusers scales in the model dtype
	}
	e := r.dev.Alloc(len(ts), r.c.TimeDim)
	r.dev.TimestepEmbedding(e, scaled, backend.TimestepParams{Dim: r.c.TimeDim, FlipSinToCos: true, MaxPeriod: 10000, Scale: 1})
	y := m.Forward(r.dev, e)
	r.dev.Free(e)
	return y
}

// Forward runs the transformer and returns the prediction for the image
// tokens [B, N, OutChannels] (FluxTransformer2DModel's sample).
//
// img is the packed latent [B, N, InChannels] (Pack), txt the T5 states
// [B, T, JointDim], pooled the pooled CLIP vector [B, PooledDim]; timestep
// holds one value per batch element in 0..1 (diffusers multiplies it by
// 1000 inside), guidance one per element for guidance-distilled models and
// must be nil otherwise; imgIDs [N] and txtIDs [T] are the RoPE positions
// (ImageIDs, TextIDs). Bad arguments return an error; nothing is computed.
func (m *Model) Forward(ctx context.Context, dev backend.Device, img, txt, pooled *backend.Tensor,
	timestep, guidance []float32, imgIDs, txtIDs [][3]float32) (*backend.Tensor, error) {
	c := m.Config
	if img == nil || txt == nil {
		return nil, errors.New("flux: nil input tensor")
	}
	if len(img.Shape) != 3 || img.Shape[2] != c.InChannels || img.Shape[0] <= 0 || img.Shape[1] <= 0 {
		return nil, fmt.Errorf("flux: image tokens have shape %v, want [B, N, %d]", img.Shape, c.InChannels)
	}
	B, N := img.Shape[0], img.Shape[1]
	if len(txt.Shape) != 3 || txt.Shape[0] != B || txt.Shape[2] != c.JointDim || txt.Shape[1] <= 0 {
		return nil, fmt.Errorf("flux: text states have shape %v, want [%d, T, %d]", txt.Shape, B, c.JointDim)
	}
	T := txt.Shape[1]
	switch {
	case c.PooledDim == 0 && pooled != nil:
		return nil, errors.New("flux: this transformer takes no pooled vector: pass nil")
	case c.PooledDim > 0 && (pooled == nil || len(pooled.Shape) != 2 || pooled.Shape[0] != B || pooled.Shape[1] != c.PooledDim):
		return nil, fmt.Errorf("flux: pooled vector %v, want [%d, %d]", pooled, B, c.PooledDim)
	}
	if len(timestep) != B {
		return nil, fmt.Errorf("flux: %d timesteps for a batch of %d", len(timestep), B)
	}
	switch {
	case c.Guidance && len(guidance) != B:
		return nil, fmt.Errorf("flux: guidance-distilled model needs %d guidance values, got %d", B, len(guidance))
	case !c.Guidance && guidance != nil:
		return nil, errors.New("flux: this model has no guidance embedder (schnell): pass nil guidance")
	}
	if len(imgIDs) != N || len(txtIDs) != T {
		return nil, fmt.Errorf("flux: %d image and %d text ids for %d image and %d text tokens", len(imgIDs), len(txtIDs), N, T)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	D, L := c.Width, T+N
	r := &run{dev: dev, c: c, B: B, half: backend.IsHalf(dev)}
	rope := Rope
	if c.Qwen {
		rope = RopeF32
	}
	cos, sin := rope(append(append([][3]float32{}, txtIDs...), imgIDs...), c.AxesDim)
	r.cos, r.sin = dev.Upload(cos, 1, L, 1, c.HeadDim), dev.Upload(sin, 1, L, 1, c.HeadDim)
	defer func() {
		dev.Free(r.cos)
		dev.Free(r.sin)
	}()

	temb := r.embedSteps(&m.timeEmbed, timestep)
	if m.guideEmbed != nil {
		g := r.embedSteps(m.guideEmbed, guidance)
		dev.Binary(backend.Add, temb, temb, g)
		dev.Free(g)
	}
	if m.textEmbed != nil {
		p := m.textEmbed.Forward(dev, pooled)
		dev.Binary(backend.Add, temb, temb, p)
		dev.Free(p)
	}
	stemb := r.silu(temb) // every modulation reads SiLU(temb)
	dev.Free(temb)
	defer dev.Free(stemb)

	x := m.xEmbed.Forward(dev, img)
	if m.txtNorm != nil {
		n := dev.Alloc(txt.Shape...)
		dev.RMSNorm(n, txt, m.txtNorm, Eps)
		txt = n
		defer dev.Free(n)
	}
	e := m.ctxEmbed.Forward(dev, txt)
	for i := range m.double {
		if err := ctx.Err(); err != nil {
			dev.Free(x)
			dev.Free(e)
			return nil, err
		}
		r.doubleForward(&m.double[i], e, x, stemb)
	}
	joint := nn.Concat(dev, 1, e, x)
	dev.Free(e)
	dev.Free(x)
	for i := range m.single {
		if err := ctx.Err(); err != nil {
			dev.Free(joint)
			return nil, err
		}
		r.singleForward(&m.single[i], joint, stemb)
	}
	x = dev.Alloc(B, N, D)
	dev.Slice(x, joint, 1, T)
	dev.Free(joint)

	mod := m.normOut.Forward(dev, stemb)
	scale, shift := r.chunk(mod, 0), r.chunk(mod, 1) // diffusers' order: scale, shift
	dev.Free(mod)
	h := r.modulate(x, shift, scale)
	dev.Free(x)
	dev.Free(scale)
	dev.Free(shift)
	out := m.projOut.Forward(dev, h)
	dev.Free(h)
	if err := dev.Sync(ctx); err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	return out, nil
}
