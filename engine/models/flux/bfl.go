package flux

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// loadBFL builds the model from the original Black Forest Labs / ComfyUI
// names: fused q‖k‖v (double_blocks.N.{img,txt}_attn.qkv) and
// q‖k‖v‖mlp (single_blocks.N.linear1) projections are cut from the stored
// bytes, and final_layer.adaLN_modulation.1, stored (shift, scale), is
// reordered to diffusers' (scale, shift).
func loadBFL(b *weights.Builder, dev backend.Device, c Config) (*Model, error) {
	D := c.Width
	hd := c.HeadDim
	lin := func(name string, in, out int) *nn.Linear { return nn.LoadLinear(b.Sub(name), in, out, true) }
	split := func(name string, parts, in, out int) []*nn.Linear {
		w := b.Split(name+".weight", parts, out, in)
		bs := b.Split(name+".bias", parts, out)
		ls := make([]*nn.Linear, parts)
		for i := range ls {
			ls[i] = &nn.Linear{Weight: w[i], Bias: bs[i], In: in, Out: out}
		}
		return ls
	}
	// joins run once every tensor is known to be present.
	var joins []func()
	join := func(dst *nn.Linear, parts ...*nn.Linear) {
		joins = append(joins, func() {
			ws, bs := make([]*backend.Tensor, len(parts)), make([]*backend.Tensor, len(parts))
			for i, p := range parts {
				ws[i], bs[i] = p.Weight, p.Bias
			}
			dst.Weight, dst.Bias = nn.Concat(dev, 0, ws...), nn.Concat(dev, 0, bs...)
			for i := range parts {
				dev.Free(ws[i])
				dev.Free(bs[i])
			}
		})
	}
	m := &Model{
		Config:    c,
		xEmbed:    lin("img_in", c.InChannels, D),
		ctxEmbed:  lin("txt_in", c.JointDim, D),
		timeEmbed: nn.MLP2{lin("time_in.in_layer", c.TimeDim, D), lin("time_in.out_layer", D, D)},
		textEmbed: &nn.MLP2{lin("vector_in.in_layer", c.PooledDim, D), lin("vector_in.out_layer", D, D)},
		projOut:   lin("final_layer.linear", D, c.OutChannels),
	}
	if c.Guidance {
		m.guideEmbed = &nn.MLP2{lin("guidance_in.in_layer", c.TimeDim, D), lin("guidance_in.out_layer", D, D)}
	}
	ada := split("final_layer.adaLN_modulation.1", 2, D, D) // shift, scale
	m.normOut = &nn.Linear{In: D, Out: 2 * D}
	join(m.normOut, ada[1], ada[0])
	for i := range c.Layers {
		p := fmt.Sprintf("double_blocks.%d.", i)
		img, txt := split(p+"img_attn.qkv", 3, D, D), split(p+"txt_attn.qkv", 3, D, D)
		m.double = append(m.double, doubleBlock{
			mod:    lin(p+"img_mod.lin", D, 6*D),
			modCtx: lin(p+"txt_mod.lin", D, 6*D),
			attn: attention{
				q: img[0], k: img[1], v: img[2],
				normQ: b.Tensor(p+"img_attn.norm.query_norm.scale", hd), normK: b.Tensor(p+"img_attn.norm.key_norm.scale", hd),
				aq: txt[0], ak: txt[1], av: txt[2],
				normAQ: b.Tensor(p+"txt_attn.norm.query_norm.scale", hd), normAK: b.Tensor(p+"txt_attn.norm.key_norm.scale", hd),
				out: lin(p+"img_attn.proj", D, D), addOut: lin(p+"txt_attn.proj", D, D),
			},
			ff:    nn.FeedForward{lin(p+"img_mlp.0", D, c.MLP), lin(p+"img_mlp.2", c.MLP, D)},
			ffCtx: nn.FeedForward{lin(p+"txt_mlp.0", D, c.MLP), lin(p+"txt_mlp.2", c.MLP, D)},
		})
	}
	// linear1 is [3D + MLP, D]: cut into rows of gcd(D, MLP) and regroup.
	g := gcd(D, c.MLP)
	for i := range c.SingleLayers {
		p := fmt.Sprintf("single_blocks.%d.", i)
		parts := split(p+"linear1", (3*D+c.MLP)/g, D, g)
		per := D / g
		bl := singleBlock{
			mod: lin(p+"modulation.lin", D, 3*D),
			attn: attention{
				normQ: b.Tensor(p+"norm.query_norm.scale", hd), normK: b.Tensor(p+"norm.key_norm.scale", hd),
			},
			projOut: lin(p+"linear2", D+c.MLP, D),
		}
		bl.attn.q, bl.attn.k, bl.attn.v = &nn.Linear{In: D, Out: D}, &nn.Linear{In: D, Out: D}, &nn.Linear{In: D, Out: D}
		bl.projMLP = &nn.Linear{In: D, Out: c.MLP}
		join(bl.attn.q, parts[:per]...)
		join(bl.attn.k, parts[per:2*per]...)
		join(bl.attn.v, parts[2*per:3*per]...)
		join(bl.projMLP, parts[3*per:]...)
		m.single = append(m.single, bl)
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	for _, j := range joins {
		j()
	}
	return m, nil
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
