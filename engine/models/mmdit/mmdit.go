// Package mmdit implements the MMDiT of Stable Diffusion 3 and 3.5 (Medium,
// Large, Large Turbo) as diffusers' SD3Transformer2DModel computes it.
// Checkpoints name its tensors as diffusers stores them (pos_embed.*,
// time_text_embed.*, context_embedder, transformer_blocks.N.*, norm_out,
// proj_out) or as Stability's single files and ComfyUI do (x_embedder,
// pos_embed, t_embedder, y_embedder, joint_blocks.N.{x,context}_block.*
// with fused qkv, final_layer.*), under some root prefix
// (model.diffusion_model. in the single files).
//
// The latent is cut into p×p patches by a strided convolution and a learned
// positional embedding, cropped from the centre of a square grid to the
// image's patch grid, is added. The conditioning vector is the sum of MLPs
// of the sinusoidal embedding of the timestep (σ·1000) and of the pooled
// CLIP-L ⊕ CLIP-G vector. Every joint block has an image and a text stream,
// each with its own adaLN-Zero modulation, projections and feed-forward,
// attending jointly over [image, text] (per-head RMS-normed queries and
// keys in 3.5); the last block's text stream only gives keys and values.
// SD3.5 Medium's MMDiT-X blocks add a second, image-only self-attention.
// A final adaptive LayerNorm and proj_out give p²·C values a patch.
package mmdit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Eps is the epsilon of every LayerNorm and RMSNorm of the model.
const Eps = 1e-6

// DefaultHeadDim is the head width of every released SD3 model (ComfyUI
// assumes 64, diffusers' attention_head_dim); a model without query/key
// norms does not show it in its shapes.
const DefaultHeadDim = 64

// QKNorm is the normalisation of queries and keys per head.
type QKNorm uint8

// QK norms.
const (
	NoQKNorm  QKNorm = iota // SD3 Medium
	RMSQKNorm               // SD3.5 (qk_norm "rms_norm")
	LNQKNorm                // LayerNorm with bias (ComfyUI's qk_norm "ln")
)

func (q QKNorm) String() string {
	return [...]string{"none", "rms", "layernorm"}[q]
}

// Config describes an MMDiT.
type Config struct {
	InChannels  int // latent channels (16)
	OutChannels int // predicted channels (16)
	Patch       int // patch size (2)
	Width       int // inner dim = heads × head dim (1536 Medium, 2432 Large)
	Heads       int
	HeadDim     int
	JointDim    int // context width (T5-XXL, 4096)
	PooledDim   int // pooled CLIP-L ⊕ CLIP-G (2048)
	TimeDim     int // sinusoidal embedding width (256)
	MLP         int // feed-forward hidden width (4·Width)
	Layers      int // joint blocks (24 Medium, 38 Large)
	PosEmbedMax int // side of the square positional-embedding grid (192 Medium 3 / 3.5 Large, 384 3.5 Medium)
	// Dual lists the MMDiT-X blocks (a second image self-attention; 3.5
	// Medium's first 13).
	Dual   []int
	QKNorm QKNorm
	// Native is Stability's / ComfyUI's layout (joint_blocks, fused qkv,
	// (shift, scale) halves of the last adaLN layers) instead of
	// diffusers' names.
	Native bool
}

// String is a one-line summary.
func (c Config) String() string {
	dual := "none"
	if len(c.Dual) > 0 {
		dual = fmt.Sprintf("%d (blocks %d–%d)", len(c.Dual), c.Dual[0], c.Dual[len(c.Dual)-1])
	}
	return fmt.Sprintf("width %d (%d heads × %d), %d joint blocks, MMDiT-X %s, qk norm %s, mlp %d, patch %d, in %d, out %d, text %d, pooled %d, pos grid %d²",
		c.Width, c.Heads, c.HeadDim, c.Layers, dual, c.QKNorm, c.MLP, c.Patch, c.InChannels, c.OutChannels, c.JointDim, c.PooledDim, c.PosEmbedMax)
}

// names are the tensors ConfigFromWeights reads, in one layout.
type names struct {
	native                             bool
	proj, pos, ctx, pooled, time, out  string
	block                              string // a tensor every block has, %d for the index
	attn2, normQ, normQBias, mlp, addO string // block-relative, %d for the index
	name                               string
}

var (
	diffusersNames = names{
		proj: "pos_embed.proj.weight", pos: "pos_embed.pos_embed", ctx: "context_embedder.weight",
		pooled: "time_text_embed.text_embedder.linear_1.weight", time: "time_text_embed.timestep_embedder.linear_1.weight",
		out: "proj_out.weight", block: "transformer_blocks.%d.norm1.linear.weight",
		attn2: "transformer_blocks.%d.attn2.to_q.weight", normQ: "transformer_blocks.%d.attn.norm_q.weight",
		normQBias: "transformer_blocks.%d.attn.norm_q.bias", mlp: "transformer_blocks.%d.ff.net.0.proj.weight",
		addO: "transformer_blocks.%d.attn.to_add_out.weight", name: "diffusers",
	}
	nativeNames = names{
		native: true,
		proj:   "x_embedder.proj.weight", pos: "pos_embed", ctx: "context_embedder.weight",
		pooled: "y_embedder.mlp.0.weight", time: "t_embedder.mlp.0.weight",
		out: "final_layer.linear.weight", block: "joint_blocks.%d.x_block.adaLN_modulation.1.weight",
		attn2: "joint_blocks.%d.x_block.attn2.qkv.weight", normQ: "joint_blocks.%d.x_block.attn.ln_q.weight",
		normQBias: "joint_blocks.%d.x_block.attn.ln_q.bias", mlp: "joint_blocks.%d.x_block.mlp.fc1.weight",
		addO: "joint_blocks.%d.context_block.attn.proj.weight", name: "Stability",
	}
)

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix ("", "transformer.", "model.diffusion_model.", …), in diffusers'
// layout or, when there is no pos_embed.proj but an x_embedder, the native
// one (c.Native). Without query/key norms the head width is DefaultHeadDim
// (a diffusers folder's config.json can say otherwise: set HeadDim and
// Heads from it).
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	n := diffusersNames
	if shape(n.proj) == nil && shape(nativeNames.proj) != nil {
		n = nativeNames
	}
	two := func(name string) ([]int, error) {
		s := shape(name)
		if len(s) != 2 || s[0] <= 0 || s[1] <= 0 {
			if s == nil {
				return nil, fmt.Errorf("mmdit: no %s%s: not a %s SD3 transformer", prefix, name, n.name)
			}
			return nil, fmt.Errorf("mmdit: %s%s has shape %v, want a matrix", prefix, name, s)
		}
		return s, nil
	}
	c := Config{Native: n.native}
	p := shape(n.proj)
	if len(p) != 4 || p[2] != p[3] || p[2] <= 0 || p[0] <= 0 || p[1] <= 0 {
		return Config{}, fmt.Errorf("mmdit: %s%s has shape %v, want [width, channels, p, p]", prefix, n.proj, p)
	}
	c.Width, c.InChannels, c.Patch = p[0], p[1], p[2]
	pos := shape(n.pos)
	if len(pos) != 3 || pos[0] != 1 || pos[2] != c.Width {
		return Config{}, fmt.Errorf("mmdit: %s%s has shape %v, want [1, side², %d]", prefix, n.pos, pos, c.Width)
	}
	side := int(math.Round(math.Sqrt(float64(pos[1]))))
	if side*side != pos[1] {
		return Config{}, fmt.Errorf("mmdit: %s%s has %d positions, not a square grid", prefix, n.pos, pos[1])
	}
	c.PosEmbedMax = side
	for _, f := range []struct {
		name     string
		dst      *int
		dim, rel int
	}{{n.ctx, &c.JointDim, 1, 0}, {n.pooled, &c.PooledDim, 1, 0}, {n.time, &c.TimeDim, 1, 0}, {n.out, &c.OutChannels, 0, 1}} {
		s, err := two(f.name)
		if err != nil {
			return Config{}, err
		}
		if s[f.rel] != c.Width {
			return Config{}, fmt.Errorf("mmdit: %s%s has shape %v: not %d wide", prefix, f.name, s, c.Width)
		}
		*f.dst = s[f.dim]
	}
	if c.OutChannels%(c.Patch*c.Patch) != 0 {
		return Config{}, fmt.Errorf("mmdit: %s%s gives %d values a patch, not a multiple of %d²", prefix, n.out, c.OutChannels, c.Patch)
	}
	c.OutChannels /= c.Patch * c.Patch
	for shape(fmt.Sprintf(n.block, c.Layers)) != nil {
		c.Layers++
	}
	if c.Layers == 0 {
		return Config{}, fmt.Errorf("mmdit: no %s%s", prefix, fmt.Sprintf(n.block, 0))
	}
	for i := range c.Layers {
		if shape(fmt.Sprintf(n.attn2, i)) != nil {
			c.Dual = append(c.Dual, i)
		}
	}
	for i := range c.Layers - 1 {
		if shape(fmt.Sprintf(n.addO, i)) == nil {
			return Config{}, fmt.Errorf("mmdit: %s%s missing: only the last block's text stream may end early", prefix, fmt.Sprintf(n.addO, i))
		}
	}
	c.HeadDim = DefaultHeadDim
	if q := shape(fmt.Sprintf(n.normQ, 0)); q != nil {
		if len(q) != 1 || q[0] <= 0 {
			return Config{}, fmt.Errorf("mmdit: query norm has shape %v, want [head dim]", q)
		}
		c.HeadDim, c.QKNorm = q[0], RMSQKNorm
		if shape(fmt.Sprintf(n.normQBias, 0)) != nil {
			c.QKNorm = LNQKNorm
		}
	}
	if c.Width%c.HeadDim != 0 {
		return Config{}, fmt.Errorf("mmdit: width %d is not a whole number of %d-wide heads", c.Width, c.HeadDim)
	}
	c.Heads = c.Width / c.HeadDim
	m := shape(fmt.Sprintf(n.mlp, 0))
	if len(m) != 2 || m[1] != c.Width || m[0] <= 0 {
		return Config{}, fmt.Errorf("mmdit: feed-forward weight has shape %v, want [mlp, %d]", m, c.Width)
	}
	c.MLP = m[0]
	return c, nil
}

// SetHeadDim sets the head width (and so the head count), as a diffusers
// folder's transformer/config.json gives it.
func (c *Config) SetHeadDim(hd int) error {
	if hd <= 0 || c.Width%hd != 0 {
		return fmt.Errorf("mmdit: attention_head_dim %d does not divide the width %d", hd, c.Width)
	}
	if c.QKNorm != NoQKNorm && hd != c.HeadDim {
		return fmt.Errorf("mmdit: attention_head_dim %d, but the query norms are %d wide", hd, c.HeadDim)
	}
	c.HeadDim, c.Heads = hd, c.Width/hd
	return nil
}

// IsDual reports whether block i is an MMDiT-X block.
func (c Config) IsDual(i int) bool { return slices.Contains(c.Dual, i) }

// attention is one attention layer's projections and norms.
type attention struct {
	q, k, v, out *nn.Linear
	normQ, normK [2]*backend.Tensor // weight, bias (bias for LNQKNorm only)
}

type stream struct {
	mod  *nn.Linear // adaLN modulation (D -> 6D; 9D MMDiT-X image; 2D pre-only text)
	attn attention  // out is nil for the pre-only text stream
	ff   nn.FeedForward
}

type block struct {
	x, ctx  stream
	attn2   *attention // MMDiT-X
	preOnly bool       // the text stream ends here (last block)
}

// Model is a loaded MMDiT.
type Model struct {
	Config    Config
	patch     *nn.Linear // the patch convolution as a [D, C·p·p] matrix
	pos       *backend.Tensor
	timeEmbed nn.MLP2
	textEmbed nn.MLP2
	ctxEmbed  *nn.Linear
	blocks    []block
	normOut   *nn.Linear // D -> 2D
	projOut   *nn.Linear
}

// Load builds the model on dev from b, prefixed at the root
// ConfigFromWeights was given, in the layout it found. Missing or
// misshaped tensors are reported together in one error.
func Load(b *weights.Builder, dev backend.Device, c Config) (*Model, error) {
	if c.Layers <= 0 || c.Heads*c.HeadDim != c.Width {
		return nil, fmt.Errorf("mmdit: bad config %v", c)
	}
	D, hd := c.Width, c.HeadDim
	lin := func(name string, in, out int) *nn.Linear { return nn.LoadLinear(b.Sub(name), in, out, true) }
	norms := func(a *attention, q, k string) {
		if c.QKNorm == NoQKNorm {
			return
		}
		a.normQ[0], a.normK[0] = b.Tensor(q+".weight", hd), b.Tensor(k+".weight", hd)
		if c.QKNorm == LNQKNorm {
			a.normQ[1], a.normK[1] = b.Tensor(q+".bias", hd), b.Tensor(k+".bias", hd)
		}
	}
	split := func(name string) (q, k, v *nn.Linear) {
		w, bs := b.Split(name+".weight", 3, D, D), b.Split(name+".bias", 3, D)
		return &nn.Linear{Weight: w[0], Bias: bs[0], In: D, Out: D},
			&nn.Linear{Weight: w[1], Bias: bs[1], In: D, Out: D},
			&nn.Linear{Weight: w[2], Bias: bs[2], In: D, Out: D}
	}
	pp := c.InChannels * c.Patch * c.Patch
	patch := func(name string) *nn.Linear {
		l := &nn.Linear{In: pp, Out: D, Bias: b.Tensor(name+".bias", D)}
		if w := b.Tensor(name+".weight", D, c.InChannels, c.Patch, c.Patch); w != nil {
			l.Weight = w.Reshape(D, pp)
		}
		return l
	}
	m := &Model{Config: c}
	out := c.Patch * c.Patch * c.OutChannels
	if c.Native {
		m.patch = patch("x_embedder.proj")
		m.pos = b.Tensor("pos_embed", 1, c.PosEmbedMax*c.PosEmbedMax, D)
		m.timeEmbed = nn.MLP2{lin("t_embedder.mlp.0", c.TimeDim, D), lin("t_embedder.mlp.2", D, D)}
		m.textEmbed = nn.MLP2{lin("y_embedder.mlp.0", c.PooledDim, D), lin("y_embedder.mlp.2", D, D)}
		m.normOut = lin("final_layer.adaLN_modulation.1", D, 2*D)
		m.projOut = lin("final_layer.linear", D, out)
	} else {
		m.patch = patch("pos_embed.proj")
		m.pos = b.Tensor("pos_embed.pos_embed", 1, c.PosEmbedMax*c.PosEmbedMax, D)
		m.timeEmbed = nn.MLP2{lin("time_text_embed.timestep_embedder.linear_1", c.TimeDim, D),
			lin("time_text_embed.timestep_embedder.linear_2", D, D)}
		m.textEmbed = nn.MLP2{lin("time_text_embed.text_embedder.linear_1", c.PooledDim, D),
			lin("time_text_embed.text_embedder.linear_2", D, D)}
		m.normOut = lin("norm_out.linear", D, 2*D)
		m.projOut = lin("proj_out", D, out)
	}
	m.ctxEmbed = lin("context_embedder", c.JointDim, D)
	for i := range c.Layers {
		bl := block{preOnly: i == c.Layers-1}
		xmod, cmod := 6*D, 6*D
		if c.IsDual(i) {
			xmod = 9 * D
		}
		if bl.preOnly {
			cmod = 2 * D
		}
		if c.Native {
			p := fmt.Sprintf("joint_blocks.%d.", i)
			x, t := p+"x_block.", p+"context_block."
			bl.x.mod, bl.ctx.mod = lin(x+"adaLN_modulation.1", D, xmod), lin(t+"adaLN_modulation.1", D, cmod)
			a := &bl.x.attn
			a.q, a.k, a.v = split(x + "attn.qkv")
			a.out = lin(x+"attn.proj", D, D)
			norms(a, x+"attn.ln_q", x+"attn.ln_k")
			a = &bl.ctx.attn
			a.q, a.k, a.v = split(t + "attn.qkv")
			norms(a, t+"attn.ln_q", t+"attn.ln_k")
			bl.x.ff = nn.FeedForward{lin(x+"mlp.fc1", D, c.MLP), lin(x+"mlp.fc2", c.MLP, D)}
			if !bl.preOnly {
				a.out = lin(t+"attn.proj", D, D)
				bl.ctx.ff = nn.FeedForward{lin(t+"mlp.fc1", D, c.MLP), lin(t+"mlp.fc2", c.MLP, D)}
			}
			if c.IsDual(i) {
				a2 := &attention{out: lin(x+"attn2.proj", D, D)}
				a2.q, a2.k, a2.v = split(x + "attn2.qkv")
				norms(a2, x+"attn2.ln_q", x+"attn2.ln_k")
				bl.attn2 = a2
			}
		} else {
			p := fmt.Sprintf("transformer_blocks.%d.", i)
			at := p + "attn."
			bl.x.mod, bl.ctx.mod = lin(p+"norm1.linear", D, xmod), lin(p+"norm1_context.linear", D, cmod)
			bl.x.attn = attention{q: lin(at+"to_q", D, D), k: lin(at+"to_k", D, D), v: lin(at+"to_v", D, D), out: lin(at+"to_out.0", D, D)}
			norms(&bl.x.attn, at+"norm_q", at+"norm_k")
			bl.ctx.attn = attention{q: lin(at+"add_q_proj", D, D), k: lin(at+"add_k_proj", D, D), v: lin(at+"add_v_proj", D, D)}
			norms(&bl.ctx.attn, at+"norm_added_q", at+"norm_added_k")
			bl.x.ff = nn.FeedForward{lin(p+"ff.net.0.proj", D, c.MLP), lin(p+"ff.net.2", c.MLP, D)}
			if !bl.preOnly {
				bl.ctx.attn.out = lin(at+"to_add_out", D, D)
				bl.ctx.ff = nn.FeedForward{lin(p+"ff_context.net.0.proj", D, c.MLP), lin(p+"ff_context.net.2", c.MLP, D)}
			}
			if c.IsDual(i) {
				a2 := p + "attn2."
				bl.attn2 = &attention{q: lin(a2+"to_q", D, D), k: lin(a2+"to_k", D, D), v: lin(a2+"to_v", D, D), out: lin(a2+"to_out.0", D, D)}
				norms(bl.attn2, a2+"norm_q", a2+"norm_k")
			}
		}
		m.blocks = append(m.blocks, bl)
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("mmdit: %w", err)
	}
	return m, nil
}

// run holds the per-call state of a forward pass.
type run struct {
	dev backend.Device
	c   Config
}

// heads projects x [B, N, D] with l and normalises each head: [B, N, H, hd].
func (r *run) heads(l *nn.Linear, norm [2]*backend.Tensor, x *backend.Tensor) *backend.Tensor {
	y := l.Forward(r.dev, x)
	y4 := y.Reshape(x.Shape[0], x.Shape[1], r.c.Heads, r.c.HeadDim)
	switch r.c.QKNorm {
	case RMSQKNorm:
		n := r.dev.Alloc(y4.Shape...)
		r.dev.RMSNorm(n, y4, norm[0], Eps)
		r.dev.Free(y)
		return n
	case LNQKNorm:
		n := r.dev.Alloc(y4.Shape...)
		r.dev.LayerNorm(n, y4, norm[0], norm[1], Eps)
		r.dev.Free(y)
		return n
	}
	return y4
}

// qkv returns the normalised queries, keys and values of x [B, N, D] as
// [B, N, H, hd] each.
func (r *run) qkv(a *attention, x *backend.Tensor) (q, k, v *backend.Tensor) {
	q, k = r.heads(a.q, a.normQ, x), r.heads(a.k, a.normK, x)
	v = a.v.Forward(r.dev, x).Reshape(x.Shape[0], x.Shape[1], r.c.Heads, r.c.HeadDim)
	return q, k, v
}

// attend runs softmax(q·kᵀ/√hd)·v of q, k, v [B, L, H, hd] into [B, L, D]
// and frees them.
func (r *run) attend(q, k, v *backend.Tensor) *backend.Tensor {
	B, L, D := q.Shape[0], q.Shape[1], r.c.Width
	out := r.dev.Alloc(B, L, D)
	r.dev.Attention(out, q.Reshape(B, L, D), k.Reshape(B, L, D), v.Reshape(B, L, D),
		backend.AttentionParams{Heads: r.c.Heads, Scale: float32(1 / math.Sqrt(float64(r.c.HeadDim)))})
	nn.FreeAll(r.dev, q, k, v)
	return out
}

// blockForward updates img [B, N, D] and, unless the block is the last,
// txt [B, T, D] in place.
func (r *run) blockForward(bl *block, img, txt, stemb *backend.Tensor) {
	dev, D := r.dev, r.c.Width
	N := img.Shape[1]
	xm := bl.x.mod.Forward(dev, stemb)
	mi := nn.Chunks(dev, xm, xm.Shape[1]/D, D) // shift, scale, gate (msa); shift, scale, gate (mlp); [msa2]
	dev.Free(xm)
	cm := bl.ctx.mod.Forward(dev, stemb)
	mc := nn.Chunks(dev, cm, cm.Shape[1]/D, D)
	dev.Free(cm)
	defer func() {
		nn.FreeAll(dev, mi...)
		nn.FreeAll(dev, mc...)
	}()
	ni := nn.Modulate(dev, img, mi[0], mi[1], Eps)
	var nc *backend.Tensor
	if bl.preOnly {
		// AdaLayerNormContinuous: diffusers stores (scale, shift),
		// Stability (shift, scale).
		shift, scale := mc[1], mc[0]
		if r.c.Native {
			shift, scale = mc[0], mc[1]
		}
		nc = nn.Modulate(dev, txt, shift, scale, Eps)
	} else {
		nc = nn.Modulate(dev, txt, mc[0], mc[1], Eps)
	}
	var ni2 *backend.Tensor
	if bl.attn2 != nil {
		ni2 = nn.Modulate(dev, img, mi[6], mi[7], Eps)
	}

	qi, ki, vi := r.qkv(&bl.x.attn, ni)
	qt, kt, vt := r.qkv(&bl.ctx.attn, nc)
	dev.Free(ni)
	dev.Free(nc)
	cat := func(a, b *backend.Tensor) *backend.Tensor {
		out := nn.Concat(dev, 1, a, b)
		nn.FreeAll(dev, a, b)
		return out
	}
	o := r.attend(cat(qi, qt), cat(ki, kt), cat(vi, vt)) // [image, text], as diffusers orders them
	oi := dev.Alloc(img.Shape...)
	dev.Slice(oi, o, 1, 0)
	var ot *backend.Tensor
	if !bl.preOnly {
		ot = dev.Alloc(txt.Shape...)
		dev.Slice(ot, o, 1, N)
	}
	dev.Free(o)

	y := bl.x.attn.out.Forward(dev, oi)
	dev.Free(oi)
	nn.GatedAdd(dev, img, mi[2], y)
	dev.Free(y)
	if bl.attn2 != nil {
		q, k, v := r.qkv(bl.attn2, ni2)
		dev.Free(ni2)
		o2 := r.attend(q, k, v)
		y = bl.attn2.out.Forward(dev, o2)
		dev.Free(o2)
		nn.GatedAdd(dev, img, mi[8], y)
		dev.Free(y)
	}
	h := nn.Modulate(dev, img, mi[3], mi[4], Eps)
	y = bl.x.ff.Forward(dev, h)
	dev.Free(h)
	nn.GatedAdd(dev, img, mi[5], y)
	dev.Free(y)
	if bl.preOnly {
		return
	}
	y = bl.ctx.attn.out.Forward(dev, ot)
	dev.Free(ot)
	nn.GatedAdd(dev, txt, mc[2], y)
	dev.Free(y)
	h = nn.Modulate(dev, txt, mc[3], mc[4], Eps)
	y = bl.ctx.ff.Forward(dev, h)
	dev.Free(h)
	nn.GatedAdd(dev, txt, mc[5], y)
	dev.Free(y)
}

// posEmbed returns the positional embedding of an h × w patch grid
// [1, h·w, D]: the centre crop of the square grid, as diffusers'
// PatchEmbed.cropped_pos_embed and ComfyUI's MMDiT cut it.
func (m *Model) posEmbed(dev backend.Device, h, w int) (*backend.Tensor, error) {
	c := m.Config
	M := c.PosEmbedMax
	if h > M || w > M {
		return nil, fmt.Errorf("mmdit: a %d×%d patch grid is larger than the model's %d×%d positional embedding (at most %d×%d pixels)",
			h, w, M, M, M*c.Patch*8, M*c.Patch*8)
	}
	top, left := (M-h)/2, (M-w)/2
	grid := m.pos.Reshape(1, M, M, c.Width)
	rows := dev.Alloc(1, h, M, c.Width)
	dev.Slice(rows, grid, 1, top)
	out := dev.Alloc(1, h, w, c.Width)
	dev.Slice(out, rows, 2, left)
	dev.Free(rows)
	return out.Reshape(1, h*w, c.Width), nil
}

// ForwardOptions are the optional inputs of Forward.
type ForwardOptions struct {
	// Skip lists blocks to leave out (Skip-Layer Guidance; diffusers'
	// skip_layers): both streams pass such a block unchanged.
	Skip []int
}

// Forward runs the transformer on a latent [B, C, H, W] (H and W multiples
// of the patch size) and returns the prediction [B, OutChannels, H, W]
// (SD3Transformer2DModel's sample). context is [B, T, JointDim], pooled
// [B, PooledDim], timestep one value per batch element (σ·1000, as the
// pipelines pass it). Bad arguments return an error; nothing is computed.
func (m *Model) Forward(ctx context.Context, dev backend.Device, latent, context, pooled *backend.Tensor, timestep []float32, opt ForwardOptions) (*backend.Tensor, error) {
	c := m.Config
	if latent == nil || context == nil || pooled == nil {
		return nil, errors.New("mmdit: nil input tensor")
	}
	if len(latent.Shape) != 4 || latent.Shape[1] != c.InChannels || latent.Shape[0] <= 0 ||
		latent.Shape[2] <= 0 || latent.Shape[3] <= 0 || latent.Shape[2]%c.Patch != 0 || latent.Shape[3]%c.Patch != 0 {
		return nil, fmt.Errorf("mmdit: latent has shape %v, want [B, %d, H, W] with H and W multiples of %d", latent.Shape, c.InChannels, c.Patch)
	}
	B, H, W := latent.Shape[0], latent.Shape[2], latent.Shape[3]
	if len(context.Shape) != 3 || context.Shape[0] != B || context.Shape[2] != c.JointDim || context.Shape[1] <= 0 {
		return nil, fmt.Errorf("mmdit: text states have shape %v, want [%d, T, %d]", context.Shape, B, c.JointDim)
	}
	if len(pooled.Shape) != 2 || pooled.Shape[0] != B || pooled.Shape[1] != c.PooledDim {
		return nil, fmt.Errorf("mmdit: pooled vector has shape %v, want [%d, %d]", pooled.Shape, B, c.PooledDim)
	}
	if len(timestep) != B {
		return nil, fmt.Errorf("mmdit: %d timesteps for a batch of %d", len(timestep), B)
	}
	for _, s := range opt.Skip {
		if s < 0 || s >= c.Layers {
			return nil, fmt.Errorf("mmdit: skip layer %d: the model has blocks 0–%d", s, c.Layers-1)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, D := c.Patch, c.Width
	h, w := H/p, W/p
	pos, err := m.posEmbed(dev, h, w)
	if err != nil {
		return nil, err
	}
	r := &run{dev: dev, c: c}

	// Patches [B, h·w, C·p·p] in the convolution weight's (c, i, j) order.
	pt := dev.Alloc(B, h, w, c.InChannels, p, p)
	dev.Permute(pt, latent.Reshape(B, c.InChannels, h, p, w, p), 0, 2, 4, 1, 3, 5)
	img := m.patch.Forward(dev, pt.Reshape(B, h*w, c.InChannels*p*p))
	dev.Free(pt)
	dev.Binary(backend.Add, img, img, pos)
	dev.Free(pos)

	e := dev.Alloc(B, c.TimeDim)
	dev.TimestepEmbedding(e, timestep, backend.TimestepParams{Dim: c.TimeDim, FlipSinToCos: true, MaxPeriod: 10000, Scale: 1})
	temb := m.timeEmbed.Forward(dev, e)
	dev.Free(e)
	pe := m.textEmbed.Forward(dev, pooled)
	dev.Binary(backend.Add, temb, temb, pe)
	dev.Free(pe)
	stemb := nn.Unary(dev, backend.SiLU, temb) // every modulation reads SiLU(temb)
	dev.Free(temb)
	defer dev.Free(stemb)

	txt := m.ctxEmbed.Forward(dev, context)
	for i := range m.blocks {
		if err := ctx.Err(); err != nil {
			nn.FreeAll(dev, img, txt)
			return nil, err
		}
		if slices.Contains(opt.Skip, i) {
			continue
		}
		r.blockForward(&m.blocks[i], img, txt, stemb)
	}
	dev.Free(txt)

	mod := m.normOut.Forward(dev, stemb)
	scale, shift := nn.Chunk(dev, mod, 0, D), nn.Chunk(dev, mod, 1, D) // diffusers: (scale, shift)
	if c.Native {
		scale, shift = shift, scale
	}
	dev.Free(mod)
	hs := nn.Modulate(dev, img, shift, scale, Eps)
	nn.FreeAll(dev, img, scale, shift)
	out := m.projOut.Forward(dev, hs)
	dev.Free(hs)
	// [B, h·w, p·p·C] in (i, j, c) order -> [B, C, H, W].
	y := dev.Alloc(B, c.OutChannels, H, W)
	dev.Permute(y.Reshape(B, c.OutChannels, h, p, w, p), out.Reshape(B, h, w, p, p, c.OutChannels), 0, 5, 1, 3, 2, 4)
	dev.Free(out)
	if err := dev.Sync(ctx); err != nil {
		return nil, fmt.Errorf("mmdit: %w", err)
	}
	return y, nil
}
