package unet

import (
	"context"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

const (
	groups         = 32
	resEps         = 1e-5 // GroupNorm in residual blocks and the output head
	transformerEps = 1e-6 // GroupNorm at the entry of spatial transformers
	layerNormEps   = 1e-5
	timestepPeriod = 10000
)

// resBlock is the LDM ResBlock: GN-SiLU-conv, plus the projected timestep
// embedding, GN-SiLU-conv, and a 1×1 skip projection when widths differ.
type resBlock struct {
	inNorm  *nn.GroupNorm // in_layers.0
	inConv  *nn.Conv2d    // in_layers.2
	emb     *nn.Linear    // emb_layers.1 (emb_layers.0 is SiLU, no weights)
	outNorm *nn.GroupNorm // out_layers.0
	outConv *nn.Conv2d    // out_layers.3 (out_layers.2 is dropout)
	skip    *nn.Conv2d    // skip_connection, nil when in == out
}

func loadResBlock(b *weights.Builder, in, out, embDim int) *resBlock {
	r := &resBlock{
		inNorm:  nn.LoadGroupNorm(b.Sub("in_layers.0"), in, groups, resEps),
		inConv:  nn.LoadConv2d(b.Sub("in_layers.2"), in, out, 3, 1, 1),
		emb:     nn.LoadLinear(b.Sub("emb_layers.1"), embDim, out, true),
		outNorm: nn.LoadGroupNorm(b.Sub("out_layers.0"), out, groups, resEps),
		outConv: nn.LoadConv2d(b.Sub("out_layers.3"), out, out, 3, 1, 1),
	}
	if in != out {
		r.skip = nn.LoadConv2d(b.Sub("skip_connection"), in, out, 1, 1, 0)
	}
	return r
}

// forward: x [N, in, H, W], embAct = SiLU(emb) [N, embDim] -> [N, out, H, W].
func (r *resBlock) forward(dev backend.Device, x, embAct *backend.Tensor) *backend.Tensor {
	h := r.inNorm.Forward(dev, x, true)
	e := r.emb.Forward(dev, embAct) // [N, out]
	h = r.inConv.ForwardAdd(dev, h, e.Reshape(e.Shape[0], e.Shape[1], 1, 1))
	h = r.outNorm.Forward(dev, h, true)
	skip := x
	if r.skip != nil {
		skip = r.skip.Forward(dev, x)
	}
	return r.outConv.ForwardAdd(dev, h, skip)
}

// crossAttention is CrossAttention: to_q/to_k/to_v without bias, to_out.0 with.
type crossAttention struct {
	q, k, v, out *nn.Linear
	heads        int
}

func loadAttention(b *weights.Builder, dim, ctxDim, heads int) *crossAttention {
	return &crossAttention{
		q:     nn.LoadLinear(b.Sub("to_q"), dim, dim, false),
		k:     nn.LoadLinear(b.Sub("to_k"), ctxDim, dim, false),
		v:     nn.LoadLinear(b.Sub("to_v"), ctxDim, dim, false),
		out:   nn.LoadLinear(b.Sub("to_out.0"), dim, dim, true),
		heads: heads,
	}
}

// addInto adds the attention of x [N, T, dim] over ctx [N, S, ctxDim] to
// res [N, T, dim] (the block's residual stream).
func (a *crossAttention) addInto(dev backend.Device, res, x, ctx *backend.Tensor) {
	q, k, v := a.q.Forward(dev, x), a.k.Forward(dev, ctx), a.v.Forward(dev, ctx)
	headDim := q.Shape[2] / a.heads
	o := nn.Attention(dev, q, k, v, backend.AttentionParams{Heads: a.heads, Scale: float32(1 / math.Sqrt(float64(headDim)))})
	a.out.AddInto(dev, res, o)
}

// basicTransformer is BasicTransformerBlock: self-attention, cross-attention
// and a GEGLU feed-forward, each pre-normed with a residual.
type basicTransformer struct {
	norm1, norm2, norm3 *nn.LayerNorm
	attn1, attn2        *crossAttention
	ffIn                *nn.Linear // ff.net.0.proj: dim -> 2·4·dim (GEGLU)
	ffOut               *nn.Linear // ff.net.2: 4·dim -> dim
}

func loadBasicTransformer(b *weights.Builder, dim, ctxDim, heads int) *basicTransformer {
	return &basicTransformer{
		norm1: nn.LoadLayerNorm(b.Sub("norm1"), dim, layerNormEps),
		norm2: nn.LoadLayerNorm(b.Sub("norm2"), dim, layerNormEps),
		norm3: nn.LoadLayerNorm(b.Sub("norm3"), dim, layerNormEps),
		attn1: loadAttention(b.Sub("attn1"), dim, dim, heads),
		attn2: loadAttention(b.Sub("attn2"), dim, ctxDim, heads),
		ffIn:  nn.LoadLinear(b.Sub("ff.net.0.proj"), dim, 8*dim, true),
		ffOut: nn.LoadLinear(b.Sub("ff.net.2"), 4*dim, dim, true),
	}
}

func (t *basicTransformer) forward(dev backend.Device, x, ctx *backend.Tensor) {
	h := t.norm1.Forward(dev, x)
	t.attn1.addInto(dev, x, h, h)
	h = t.norm2.Forward(dev, x)
	t.attn2.addInto(dev, x, h, ctx)
	h = t.norm3.Forward(dev, x)
	f := t.ffIn.Forward(dev, h)
	g := dev.Alloc(append(f.Shape[:len(f.Shape)-1:len(f.Shape)-1], f.Shape[len(f.Shape)-1]/2)...)
	dev.GEGLU(g, f)
	t.ffOut.AddInto(dev, x, g)
}

// spatialTransformer is SpatialTransformer: GroupNorm, proj_in (1×1 conv or
// linear), transformer blocks over the H·W tokens, proj_out, residual.
type spatialTransformer struct {
	norm            *nn.GroupNorm
	projInConv      *nn.Conv2d
	projOutConv     *nn.Conv2d
	projIn, projOut *nn.Linear
	blocks          []*basicTransformer
}

func loadSpatialTransformer(b *weights.Builder, ch, depth, ctxDim, heads int, linear bool) *spatialTransformer {
	s := &spatialTransformer{norm: nn.LoadGroupNorm(b.Sub("norm"), ch, groups, transformerEps)}
	if linear {
		s.projIn = nn.LoadLinear(b.Sub("proj_in"), ch, ch, true)
		s.projOut = nn.LoadLinear(b.Sub("proj_out"), ch, ch, true)
	} else {
		s.projInConv = nn.LoadConv2d(b.Sub("proj_in"), ch, ch, 1, 1, 0)
		s.projOutConv = nn.LoadConv2d(b.Sub("proj_out"), ch, ch, 1, 1, 0)
	}
	for i := range depth {
		s.blocks = append(s.blocks, loadBasicTransformer(b.Subf("transformer_blocks.%d", i), ch, ctxDim, heads))
	}
	return s
}

// forward: x [N, C, H, W], ctx [N, S, ctxDim] -> [N, C, H, W].
func (s *spatialTransformer) forward(dev backend.Device, x, ctx *backend.Tensor) *backend.Tensor {
	h, w := x.Shape[2], x.Shape[3]
	y := s.norm.Forward(dev, x, false)
	// proj_in and proj_out (1×1 convolutions or linear layers) read and
	// write the channels-first maps directly: no permutes.
	var inW, inB, outW, outB *backend.Tensor
	if s.projInConv != nil {
		inW, inB, outW, outB = s.projInConv.Weight, s.projInConv.Bias, s.projOutConv.Weight, s.projOutConv.Bias
	} else {
		inW, inB, outW, outB = s.projIn.Weight, s.projIn.Bias, s.projOut.Weight, s.projOut.Bias
	}
	tokens := nn.FromChannels(dev, y, inW, inB) // [N, HW, C]
	for _, blk := range s.blocks {
		blk.forward(dev, tokens, ctx)
	}
	return nn.ToChannels(dev, tokens, outW, outB, x, h, w)
}

// block is one entry of input_blocks/output_blocks: a res block (or a
// down/upsampler) with an optional transformer and optional upsampler.
type block struct {
	res  *resBlock
	attn *spatialTransformer
	down *nn.Conv2d // input_blocks.i.0.op: 3×3 stride 2
	up   *nn.Conv2d // output_blocks.i.{1,2}.conv: nearest 2× then 3×3
}

// Model is a loaded UNet.
type Model struct {
	Config  Config
	timeIn  *nn.Linear // time_embed.0
	timeOut *nn.Linear // time_embed.2
	admIn   *nn.Linear // label_emb.0.0 (nil without an ADM input)
	admOut  *nn.Linear // label_emb.0.2
	convIn  *nn.Conv2d // input_blocks.0.0
	inputs  []block
	mid     [3]block // res, transformer, res
	outputs []block
	outNorm *nn.GroupNorm // out.0
	outConv *nn.Conv2d    // out.2
	// graphs replays recorded steps on devices that record graphs (CUDA),
	// one per input shape.
	graphs backend.GraphCache
}

// ResetGraphs drops the recorded steps. Call it after replacing weight
// tensors of the model (changing their contents in place needs nothing).
func (m *Model) ResetGraphs() { m.graphs.Reset() }

// GraphStatus describes the recorded steps (for benchmarks and logs).
func (m *Model) GraphStatus() string { return m.graphs.Status() }

// Load builds the UNet from b (prefixed at model.diffusion_model.).
func Load(b *weights.Builder, c Config) *Model {
	m := &Model{Config: c}
	mc, te := c.ModelChannels, c.TimeEmbedDim
	m.timeIn = nn.LoadLinear(b.Sub("time_embed.0"), mc, te, true)
	m.timeOut = nn.LoadLinear(b.Sub("time_embed.2"), te, te, true)
	if c.ADMInChannels > 0 {
		m.admIn = nn.LoadLinear(b.Sub("label_emb.0.0"), c.ADMInChannels, te, true)
		m.admOut = nn.LoadLinear(b.Sub("label_emb.0.2"), te, te, true)
	}
	m.convIn = nn.LoadConv2d(b.Sub("input_blocks.0.0"), c.InChannels, mc, 3, 1, 1)

	chans := []int{mc} // channels of each skip connection, in push order
	ch := mc
	idx := 1
	for lvl, mult := range c.ChannelMult {
		out := mc * mult
		for range c.NumResBlocks {
			bb := b.Subf("input_blocks.%d", idx)
			blk := block{res: loadResBlock(bb.Sub("0"), ch, out, te)}
			ch = out
			if c.Attention[lvl] {
				blk.attn = loadSpatialTransformer(bb.Sub("1"), ch, c.Depth[lvl], c.ContextDim, c.headsFor(ch), c.LinearProj)
			}
			m.inputs = append(m.inputs, blk)
			chans = append(chans, ch)
			idx++
		}
		if lvl != len(c.ChannelMult)-1 {
			m.inputs = append(m.inputs, block{down: nn.LoadConv2d(b.Subf("input_blocks.%d.0.op", idx), ch, ch, 3, 2, 1)})
			chans = append(chans, ch)
			idx++
		}
	}
	m.mid[0] = block{res: loadResBlock(b.Sub("middle_block.0"), ch, ch, te)}
	if c.MidDepth > 0 {
		m.mid[1] = block{attn: loadSpatialTransformer(b.Sub("middle_block.1"), ch, c.MidDepth, c.ContextDim, c.headsFor(ch), c.LinearProj)}
		m.mid[2] = block{res: loadResBlock(b.Sub("middle_block.2"), ch, ch, te)}
	} else {
		m.mid[2] = block{res: loadResBlock(b.Sub("middle_block.1"), ch, ch, te)}
	}

	idx = 0
	for lvl := len(c.ChannelMult) - 1; lvl >= 0; lvl-- {
		out := mc * c.ChannelMult[lvl]
		for j := range c.NumResBlocks + 1 {
			skip := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			bb := b.Subf("output_blocks.%d", idx)
			blk := block{res: loadResBlock(bb.Sub("0"), ch+skip, out, te)}
			ch = out
			next := 1
			if c.Attention[lvl] {
				blk.attn = loadSpatialTransformer(bb.Sub("1"), ch, c.Depth[lvl], c.ContextDim, c.headsFor(ch), c.LinearProj)
				next = 2
			}
			if lvl != 0 && j == c.NumResBlocks {
				blk.up = nn.LoadConv2d(bb.Subf("%d.conv", next), ch, ch, 3, 1, 1)
			}
			m.outputs = append(m.outputs, blk)
			idx++
		}
	}
	m.outNorm = nn.LoadGroupNorm(b.Sub("out.0"), ch, groups, resEps)
	m.outConv = nn.LoadConv2d(b.Sub("out.2"), ch, c.OutChannels, 3, 1, 1)
	return m
}

// Forward predicts the model output (ε or v) for x [N, C, H, W] at
// timesteps ts (len N) with cross-attention context cond [N, S, ContextDim]
// and, for UNets with an ADM input (SDXL), the vector y [N, ADMInChannels]
// (nil otherwise).
// Any H and W work: sides that are not multiples of 2^(levels-1) are
// handled as ComfyUI and diffusers handle them. It checks ctx between blocks.
func (m *Model) Forward(ctx context.Context, dev backend.Device, x *backend.Tensor, ts []float32, cond, y *backend.Tensor) (*backend.Tensor, error) {
	c := m.Config
	n := x.Shape[0]
	if len(ts) != n || cond.Shape[0] != n || cond.Shape[2] != c.ContextDim || x.Shape[1] != c.InChannels {
		return nil, fmt.Errorf("unet: x %v, %d timesteps, context %v do not match the model (in %d, context %d)",
			x.Shape, len(ts), cond.Shape, c.InChannels, c.ContextDim)
	}
	switch {
	case c.ADMInChannels == 0 && y != nil:
		return nil, fmt.Errorf("unet: this UNet takes no vector input (label_emb), got y %v", y.Shape)
	case c.ADMInChannels > 0 && (y == nil || len(y.Shape) != 2 || y.Shape[0] != n || y.Shape[1] != c.ADMInChannels):
		return nil, fmt.Errorf("unet: this UNet needs a vector input y [%d, %d]", n, c.ADMInChannels)
	}
	if x.Shape[2] < 1 || x.Shape[3] < 1 {
		return nil, fmt.Errorf("unet: empty latent %v", x.Shape)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The sinusoidal table is computed on the host; everything after it is
	// device work, recorded once per shape where the device records graphs.
	temb := dev.Alloc(n, c.ModelChannels)
	dev.TimestepEmbedding(temb, ts, backend.TimestepParams{Dim: c.ModelChannels, FlipSinToCos: true, MaxPeriod: timestepPeriod, Scale: 1})
	key := fmt.Sprint(x.Shape, cond.Shape)
	ins := []*backend.Tensor{x, temb, cond}
	if y != nil {
		ins = append(ins, y)
	}
	outs, err := m.graphs.Run(dev, key, ins, func(in []*backend.Tensor) ([]*backend.Tensor, error) {
		var y *backend.Tensor
		if len(in) > 3 {
			y = in[3]
		}
		out, err := m.forward(ctx, dev, in[0], in[1], in[2], y)
		return []*backend.Tensor{out}, err
	})
	if err != nil {
		return nil, err
	}
	return outs[0], nil
}

// forward runs the network on device tensors: x [N, C, H, W], the
// timestep table temb [N, ModelChannels], the context cond and the ADM
// vector y (or nil).
func (m *Model) forward(ctx context.Context, dev backend.Device, x, temb, cond, y *backend.Tensor) (*backend.Tensor, error) {
	emb := m.timeIn.Forward(dev, temb)
	dev.Unary(backend.SiLU, emb, emb)
	emb = m.timeOut.Forward(dev, emb)
	if m.admIn != nil {
		a := m.admIn.Forward(dev, y)
		dev.Unary(backend.SiLU, a, a)
		m.admOut.AddInto(dev, emb, a)
	}
	embAct := nn.Unary(dev, backend.SiLU, emb) // every res block applies SiLU first

	h := m.convIn.Forward(dev, x)
	skips := []*backend.Tensor{h}
	for _, blk := range m.inputs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h = blk.forward(dev, h, embAct, cond, [2]int{})
		skips = append(skips, h)
	}
	for _, blk := range m.mid {
		if blk.res != nil || blk.attn != nil {
			h = blk.forward(dev, h, embAct, cond, [2]int{})
		}
	}
	for _, blk := range m.outputs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		skip := skips[len(skips)-1]
		skips = skips[:len(skips)-1]
		// An upsampler resizes to the next skip connection: a latent side
		// that is not a multiple of 2^(levels-1) halves to ceil sizes on the
		// way down, and comes back to those sizes (as ComfyUI and diffusers
		// do with a nearest interpolation to the skip's size).
		var target [2]int
		if len(skips) > 0 {
			next := skips[len(skips)-1]
			target = [2]int{next.Shape[2], next.Shape[3]}
		}
		h = blk.forward(dev, nn.Concat(dev, 1, h, skip), embAct, cond, target)
	}
	h = m.outNorm.Forward(dev, h, true)
	return m.outConv.Forward(dev, h), nil
}

func (b *block) forward(dev backend.Device, h, embAct, cond *backend.Tensor, target [2]int) *backend.Tensor {
	if b.down != nil {
		return b.down.Forward(dev, h)
	}
	if b.res != nil {
		h = b.res.forward(dev, h, embAct)
	}
	if b.attn != nil {
		h = b.attn.forward(dev, h, cond)
	}
	if b.up != nil {
		h = b.up.Forward(dev, upsampleTo(dev, h, target))
	}
	return h
}

// upsampleTo is a nearest-neighbour resize of h [N, C, H, W] to target
// (2H−1 or 2H per side; 2H, 2W when target is zero). Nearest interpolation
// from H to 2H−1 picks source row ⌊i·H/(2H−1)⌋ = ⌊i/2⌋ for every i < 2H−1,
// so it is the 2× upsample with its last row (column) cropped.
func upsampleTo(dev backend.Device, h *backend.Tensor, target [2]int) *backend.Tensor {
	u := nn.Upsample2x(dev, h)
	n, c, uh, uw := u.Shape[0], u.Shape[1], u.Shape[2], u.Shape[3]
	if target[0] == 0 || (target[0] == uh && target[1] == uw) {
		return u
	}
	if target[0] < uh-1 || target[0] > uh || target[1] < uw-1 || target[1] > uw {
		panic(fmt.Sprintf("unet: cannot resize %dx%d to %dx%d", uh, uw, target[0], target[1]))
	}
	if target[0] != uh {
		cropped := dev.Alloc(n, c, target[0], uw)
		dev.Slice(cropped, u, 2, 0)
		u = cropped
	}
	if target[1] != uw {
		cropped := dev.Alloc(n, c, target[0], target[1])
		dev.Slice(cropped, u, 3, 0)
		u = cropped
	}
	return u
}
