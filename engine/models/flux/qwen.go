package flux

import (
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Qwen-Image's transformer (diffusers' QwenImageTransformer2DModel, 60
// blocks at width 3072) is Flux's double-stream block stack without the
// single-stream blocks: the same adaLN-zero modulation (shift, scale, gate
// for attention and feed-forward, per stream), joint attention over
// [text, image] with RMS query/key norms and biased projections, the
// tanh-GELU feed-forwards and the continuous adaptive LayerNorm out. It
// differs in its names (img_mod.1, txt_mod.1, img_mlp, txt_mlp, img_in,
// txt_in), an RMS norm of the text states before txt_in, no pooled or
// guidance embedding, and its rotary positions (MSRoPE, QwenIDs), whose
// tables diffusers builds in float32 (RopeF32). ComfyUI's Qwen-Image files
// use the same names.

// qwenNames are the tensors qwenConfig reads.
var qwenNames = layoutNames{
	x: "img_in.weight", txt: "txt_in.weight", time: "time_text_embed.timestep_embedder.linear_1.weight",
	out: "proj_out.weight", double: "transformer_blocks.%d.img_mod.1.weight",
	doubleNormQ: "transformer_blocks.0.attn.norm_q.weight", doubleMLP: "transformer_blocks.0.img_mlp.net.0.proj.weight",
	name: "Qwen-Image",
}

// QwenAxesDim is axes_dims_rope of the released Qwen-Image models.
var QwenAxesDim = []int{16, 56, 56}

// qwenConfig infers a Qwen-Image transformer's configuration from shapes.
func qwenConfig(shape func(string) []int, prefix string) (Config, error) {
	n := qwenNames
	c := Config{Qwen: true}
	for _, f := range []struct {
		name string
		dst  *int
		dim  int
	}{{n.x, &c.InChannels, 1}, {n.x, &c.Width, 0}, {n.txt, &c.JointDim, 1}, {n.time, &c.TimeDim, 1}, {n.out, &c.OutChannels, 0}} {
		s := shape(f.name)
		if len(s) != 2 {
			return Config{}, fmt.Errorf("flux: %s%s has shape %v, want a matrix (Qwen-Image layout)", prefix, f.name, s)
		}
		*f.dst = s[f.dim]
	}
	for shape(fmt.Sprintf(n.double, c.Layers)) != nil {
		c.Layers++
	}
	nq, mlp := shape(n.doubleNormQ), shape(n.doubleMLP)
	if len(nq) != 1 || nq[0] <= 0 || c.Width%nq[0] != 0 || nq[0]%2 != 0 {
		return Config{}, fmt.Errorf("flux: query norm has shape %v, want [head dim] (even, dividing %d)", nq, c.Width)
	}
	if len(mlp) != 2 || mlp[0] <= 0 {
		return Config{}, fmt.Errorf("flux: feed-forward weight has shape %v, want [mlp, %d]", mlp, c.Width)
	}
	c.HeadDim, c.Heads, c.MLP = nq[0], c.Width/nq[0], mlp[0]
	if c.HeadDim == 128 {
		c.AxesDim = append([]int(nil), QwenAxesDim...)
	}
	return c, nil
}

// loadQwen builds a Qwen-Image transformer from diffusers' names.
func loadQwen(b *weights.Builder, c Config) (*Model, error) {
	D, hd := c.Width, c.HeadDim
	lin := func(name string, in, out int) *nn.Linear { return nn.LoadLinear(b.Sub(name), in, out, true) }
	m := &Model{
		Config:   c,
		xEmbed:   lin("img_in", c.InChannels, D),
		ctxEmbed: lin("txt_in", c.JointDim, D),
		txtNorm:  b.Tensor("txt_norm.weight", c.JointDim),
		timeEmbed: nn.MLP2{lin("time_text_embed.timestep_embedder.linear_1", c.TimeDim, D),
			lin("time_text_embed.timestep_embedder.linear_2", D, D)},
		normOut: lin("norm_out.linear", D, 2*D),
		projOut: lin("proj_out", D, c.OutChannels),
	}
	for i := range c.Layers {
		p := fmt.Sprintf("transformer_blocks.%d.", i)
		a := p + "attn."
		m.double = append(m.double, doubleBlock{
			mod:    lin(p+"img_mod.1", D, 6*D),
			modCtx: lin(p+"txt_mod.1", D, 6*D),
			attn: attention{
				q: lin(a+"to_q", D, D), k: lin(a+"to_k", D, D), v: lin(a+"to_v", D, D),
				normQ: b.Tensor(a+"norm_q.weight", hd), normK: b.Tensor(a+"norm_k.weight", hd),
				aq: lin(a+"add_q_proj", D, D), ak: lin(a+"add_k_proj", D, D), av: lin(a+"add_v_proj", D, D),
				normAQ: b.Tensor(a+"norm_added_q.weight", hd), normAK: b.Tensor(a+"norm_added_k.weight", hd),
				out: lin(a+"to_out.0", D, D), addOut: lin(a+"to_add_out", D, D),
			},
			ff:    nn.FeedForward{lin(p+"img_mlp.net.0.proj", D, c.MLP), lin(p+"img_mlp.net.2", c.MLP, D)},
			ffCtx: nn.FeedForward{lin(p+"txt_mlp.net.0.proj", D, c.MLP), lin(p+"txt_mlp.net.2", c.MLP, D)},
		})
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	return m, nil
}

// QwenIDs returns the rotary positions of Qwen-Image's MSRoPE for an image
// of ht × wt patches and n text tokens, as diffusers' QwenEmbedRope with
// scale_rope builds them: patch (h, w) at (0, h − ⌈ht/2⌉, w − ⌈wt/2⌉)
// (centred, negative above and left), then text token k at (m+k, m+k, m+k)
// with m = max(⌊ht/2⌋, ⌊wt/2⌋).
func QwenIDs(ht, wt, n int) (img, txt [][3]float32) {
	img = make([][3]float32, 0, ht*wt)
	for h := range ht {
		for w := range wt {
			img = append(img, [3]float32{0, float32(h - (ht - ht/2)), float32(w - (wt - wt/2))})
		}
	}
	m := max(ht/2, wt/2)
	txt = make([][3]float32, n)
	for k := range txt {
		v := float32(m + k)
		txt[k] = [3]float32{v, v, v}
	}
	return img, txt
}

// RopeF32 is Rope computed as diffusers' QwenEmbedRope does, in float32:
// frequencies 1/θ^(2j/d) with the exponent and the power in float32, the
// angle position·frequency a float32 product, its cosine and sine rounded
// to float32.
func RopeF32(ids [][3]float32, axesDim []int) (cos, sin []float32) {
	width := 0
	freqs := make([][]float32, len(axesDim))
	for a, d := range axesDim {
		width += d
		for j := 0; j < d; j += 2 {
			e := float32(j) / float32(d)
			freqs[a] = append(freqs[a], 1/float32(math.Pow(Theta, float64(e))))
		}
	}
	cos, sin = make([]float32, len(ids)*width), make([]float32, len(ids)*width)
	for n, id := range ids {
		off := n * width
		for a, d := range axesDim {
			for j, f := range freqs[a] {
				s, c := math.Sincos(float64(id[a] * f))
				cos[off+2*j], cos[off+2*j+1] = float32(c), float32(c)
				sin[off+2*j], sin[off+2*j+1] = float32(s), float32(s)
			}
			off += d
		}
	}
	return cos, sin
}
