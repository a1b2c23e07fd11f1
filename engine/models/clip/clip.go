// Package clip implements the CLIP text encoder (the transformer that turns
// prompt tokens into the denoiser's cross-attention context) in both
// layouts checkpoints store it in: Hugging Face transformers'
// (CLIPTextModel / CLIPTextModelWithProjection: OpenAI CLIP-L, diffusers'
// text_encoder and text_encoder_2, ComfyUI's clip_l / clip_g files) and
// OpenCLIP's (SD2's ViT-H and SDXL's bigG inside Stability's single
// files: fused q/k/v projections, a projection matrix).
package clip

import (
	"fmt"
	"slices"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Layout is how a checkpoint names a CLIP text tower's tensors.
type Layout uint8

// Layouts.
const (
	// HF is transformers' naming: [text_model.]embeddings.*,
	// encoder.layers.N.self_attn.{q,k,v,out}_proj, final_layer_norm, and
	// text_projection.weight [proj, width] beside text_model.
	HF Layout = iota
	// OpenCLIP is open_clip's naming: token_embedding, positional_embedding,
	// transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2,
	// mlp.c_fc, mlp.c_proj}, ln_final, text_projection [width, proj].
	OpenCLIP
)

// Config describes a CLIP text transformer.
type Config struct {
	Vocab     int // token vocabulary (49408 for every real CLIP)
	Positions int // maximum sequence length (77)
	Width     int // hidden size
	Layers    int
	Heads     int
	MLP       int // intermediate size
	// Projection is the width of the text projection (the pooled output's
	// width), or 0 when the checkpoint has none.
	Projection int
	// Act is the MLP activation: QuickGELU for OpenAI CLIP ViT-L (SD1),
	// GELU for OpenCLIP (SD2, SDXL's second encoder). Shapes cannot tell:
	// ConfigFromWeights sets QuickGELU for the HF layout and GELU for
	// OpenCLIP's, and families set what their encoder is.
	Act backend.UnaryOp
	Eps float32
	// Layout is the tensor naming; Tower is the HF text model's prefix
	// inside the root ("text_model." or "" when the root is the tower).
	Layout Layout
	Tower  string
}

// HeadDim is the width of every real CLIP attention head; shapes do not tell
// the number of heads, so it is derived from the width.
const HeadDim = 64

// String is a one-line summary.
func (c Config) String() string {
	s := fmt.Sprintf("width %d, %d layers, %d heads, mlp %d, vocab %d, %d positions, %v",
		c.Width, c.Layers, c.Heads, c.MLP, c.Vocab, c.Positions, c.Act)
	if c.Projection > 0 {
		s += fmt.Sprintf(", projection %d", c.Projection)
	}
	if c.Layout == OpenCLIP {
		s += ", OpenCLIP layout"
	}
	return s
}

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix: the root of an HF text model ("…transformer." holding
// text_model.* and text_projection.weight), the HF tower itself
// ("…text_model."), or an OpenCLIP root ("conditioner.embedders.1.model.").
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	c := Config{Eps: 1e-5}
	var tok, pos []int
	switch {
	case shape("text_model.embeddings.token_embedding.weight") != nil:
		c.Tower = "text_model."
		fallthrough
	case shape("embeddings.token_embedding.weight") != nil:
		c.Layout, c.Act = HF, backend.QuickGELU
		tok, pos = shape(c.Tower+"embeddings.token_embedding.weight"), shape(c.Tower+"embeddings.position_embedding.weight")
	case shape("token_embedding.weight") != nil:
		c.Layout, c.Act = OpenCLIP, backend.GELU
		tok, pos = shape("token_embedding.weight"), shape("positional_embedding")
	default:
		return Config{}, fmt.Errorf("clip: no %sembeddings.token_embedding.weight (or an OpenCLIP token_embedding.weight)", prefix)
	}
	if len(tok) != 2 {
		return Config{}, fmt.Errorf("clip: token embedding under %q has shape %v", prefix, tok)
	}
	if len(pos) != 2 || pos[1] != tok[1] {
		return Config{}, fmt.Errorf("clip: no position embedding of width %d under %q", tok[1], prefix)
	}
	c.Vocab, c.Width, c.Positions = tok[0], tok[1], pos[0]
	layerKey, fc1Key := c.Tower+"encoder.layers.%d.self_attn.q_proj.weight", c.Tower+"encoder.layers.0.mlp.fc1.weight"
	if c.Layout == OpenCLIP {
		layerKey, fc1Key = "transformer.resblocks.%d.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_fc.weight"
	}
	for shape(fmt.Sprintf(layerKey, c.Layers)) != nil {
		c.Layers++
	}
	if c.Layers == 0 {
		return Config{}, fmt.Errorf("clip: no encoder layers under %q", prefix)
	}
	fc1 := shape(fc1Key)
	if len(fc1) != 2 {
		return Config{}, fmt.Errorf("clip: no %s%s", prefix, fc1Key)
	}
	c.MLP = fc1[0]
	switch p := shape(c.projectionName()); {
	case c.Layout == HF && len(p) == 2 && p[1] == c.Width:
		c.Projection = p[0]
	case c.Layout == OpenCLIP && len(p) == 2 && p[0] == c.Width:
		c.Projection = p[1]
	case p != nil:
		return Config{}, fmt.Errorf("clip: text projection %s%s has shape %v for width %d", prefix, c.projectionName(), p, c.Width)
	}
	c.Heads = max(1, c.Width/HeadDim)
	if c.Width%c.Heads != 0 {
		return Config{}, fmt.Errorf("clip: width %d not divisible into %d heads", c.Width, c.Heads)
	}
	return c, nil
}

func (c Config) projectionName() string {
	if c.Layout == OpenCLIP {
		return "text_projection"
	}
	return "text_projection.weight"
}

type layer struct {
	ln1, ln2     *nn.LayerNorm
	q, k, v, out *nn.Linear
	fc1, fc2     *nn.Linear
}

// TextModel is a loaded CLIP text transformer.
type TextModel struct {
	Config  Config
	tokEmb  *backend.Tensor
	posEmb  *backend.Tensor
	layers  []layer
	finalLN *nn.LayerNorm
	// proj maps the pooled hidden state to the projection: a Linear weight
	// [proj, width] (HF) or a matrix [width, proj] (OpenCLIP).
	proj *backend.Tensor
}

// Load builds the text model from b, prefixed at the root ConfigFromWeights
// was given. Tensors the model never reads (position_ids, logit_scale) are
// claimed so that they do not count as unused.
func Load(b *weights.Builder, c Config) *TextModel {
	if c.Layout == OpenCLIP {
		return loadOpenCLIP(b, c)
	}
	b.Claim("logit_scale")
	t := b
	if c.Tower != "" {
		t = b.Sub(c.Tower[:len(c.Tower)-1])
	}
	t.Claim("embeddings.position_ids")
	m := &TextModel{
		Config: c,
		tokEmb: t.Tensor("embeddings.token_embedding.weight", c.Vocab, c.Width),
		posEmb: t.Tensor("embeddings.position_embedding.weight", c.Positions, c.Width),
	}
	for i := range c.Layers {
		lb := t.Subf("encoder.layers.%d", i)
		ab := lb.Sub("self_attn")
		m.layers = append(m.layers, layer{
			ln1: nn.LoadLayerNorm(lb.Sub("layer_norm1"), c.Width, c.Eps),
			ln2: nn.LoadLayerNorm(lb.Sub("layer_norm2"), c.Width, c.Eps),
			q:   nn.LoadLinear(ab.Sub("q_proj"), c.Width, c.Width, true),
			k:   nn.LoadLinear(ab.Sub("k_proj"), c.Width, c.Width, true),
			v:   nn.LoadLinear(ab.Sub("v_proj"), c.Width, c.Width, true),
			out: nn.LoadLinear(ab.Sub("out_proj"), c.Width, c.Width, true),
			fc1: nn.LoadLinear(lb.Sub("mlp.fc1"), c.Width, c.MLP, true),
			fc2: nn.LoadLinear(lb.Sub("mlp.fc2"), c.MLP, c.Width, true),
		})
	}
	m.finalLN = nn.LoadLayerNorm(t.Sub("final_layer_norm"), c.Width, c.Eps)
	if c.Projection > 0 {
		m.proj = b.Tensor("text_projection.weight", c.Projection, c.Width)
	}
	return m
}

// loadOpenCLIP reads open_clip's layout, cutting the fused in_proj
// weights into q, k and v.
func loadOpenCLIP(b *weights.Builder, c Config) *TextModel {
	b.Claim("logit_scale")
	m := &TextModel{
		Config: c,
		tokEmb: b.Tensor("token_embedding.weight", c.Vocab, c.Width),
		posEmb: b.Tensor("positional_embedding", c.Positions, c.Width),
	}
	for i := range c.Layers {
		lb := b.Subf("transformer.resblocks.%d", i)
		w := lb.Split("attn.in_proj_weight", 3, c.Width, c.Width)
		bias := lb.Split("attn.in_proj_bias", 3, c.Width)
		lin := func(j int) *nn.Linear { return &nn.Linear{Weight: w[j], Bias: bias[j], In: c.Width, Out: c.Width} }
		m.layers = append(m.layers, layer{
			ln1: nn.LoadLayerNorm(lb.Sub("ln_1"), c.Width, c.Eps),
			ln2: nn.LoadLayerNorm(lb.Sub("ln_2"), c.Width, c.Eps),
			q:   lin(0), k: lin(1), v: lin(2),
			out: nn.LoadLinear(lb.Sub("attn.out_proj"), c.Width, c.Width, true),
			fc1: nn.LoadLinear(lb.Sub("mlp.c_fc"), c.Width, c.MLP, true),
			fc2: nn.LoadLinear(lb.Sub("mlp.c_proj"), c.MLP, c.Width, true),
		})
	}
	m.finalLN = nn.LoadLayerNorm(b.Sub("ln_final"), c.Width, c.Eps)
	if c.Projection > 0 {
		m.proj = b.Tensor("text_projection", c.Width, c.Projection)
	}
	return m
}

// Pooling selects the pooled output Run computes.
type Pooling uint8

// Poolings.
const (
	// NoPool computes no pooled output.
	NoPool Pooling = iota
	// PoolEOS is the last layer's final-layer-normed hidden state at the
	// first end token (transformers' pooler_output).
	PoolEOS
	// PoolProjected is PoolEOS through the text projection
	// (CLIPTextModelWithProjection's text_embeds; SDXL's pooled vector).
	PoolProjected
)

// Options select what Run returns.
type Options struct {
	// Skip selects the hidden layer: 1 (or 0) is the last layer, 2 the
	// penultimate (A1111's "clip skip 2"), and so on.
	Skip int
	// NoFinalNorm returns the chosen layer's hidden states without the
	// final layer norm (SDXL's encoders, as ComfyUI and diffusers take
	// them); by default the norm is applied, as for SD1 and SD2.
	NoFinalNorm bool
	// Pool selects the pooled output; it always comes from the last layer.
	Pool Pooling
	// EOS is the end token id the pooled output is read at (its first
	// occurrence in each sequence; the largest id when it is absent, as
	// transformers does for legacy configs).
	EOS int
	// Extra holds the input vectors of placeholder ids (textual-inversion
	// embeddings): id −1 − k takes Extra[k] (Width values) in place of a
	// token embedding.
	Extra [][]float32
}

// Forward encodes token ids [B][T] (T ≤ Positions) and returns the hidden
// states [B, T, Width] of the layer skip selects after the final layer
// norm (as ComfyUI and diffusers apply it for SD1).
func (m *TextModel) Forward(dev backend.Device, ids [][]int, skip int) (*backend.Tensor, error) {
	h, _, err := m.Run(dev, ids, Options{Skip: skip})
	return h, err
}

// Run encodes token ids [B][T] and returns the hidden states [B, T, Width]
// of the chosen layer and, when o.Pool asks, the pooled output [B, P].
func (m *TextModel) Run(dev backend.Device, ids [][]int, o Options) (hidden, pooled *backend.Tensor, err error) {
	c := m.Config
	if len(ids) == 0 {
		return nil, nil, fmt.Errorf("clip: no token sequences")
	}
	t := len(ids[0])
	if t > c.Positions {
		return nil, nil, fmt.Errorf("clip: %d tokens exceed the %d positions", t, c.Positions)
	}
	skip := max(o.Skip, 1)
	if skip > c.Layers {
		return nil, nil, fmt.Errorf("clip skip %d: the text encoder has only %d layers", skip, c.Layers)
	}
	if o.Pool == PoolProjected && m.proj == nil {
		return nil, nil, fmt.Errorf("clip: this text encoder has no text projection for a pooled output")
	}
	flat := make([]int, 0, len(ids)*t)
	for _, seq := range ids {
		if len(seq) != t {
			return nil, nil, fmt.Errorf("clip: token sequences of different lengths %d and %d", t, len(seq))
		}
		for _, id := range seq {
			switch {
			case id < 0 && -1-id < len(o.Extra):
				if len(o.Extra[-1-id]) != c.Width {
					return nil, nil, fmt.Errorf("clip: embedding vector %d has %d values, the encoder is %d wide", -1-id, len(o.Extra[-1-id]), c.Width)
				}
			case id < 0 || id >= c.Vocab:
				return nil, nil, fmt.Errorf("clip: token id %d outside the vocabulary of %d", id, c.Vocab)
			}
		}
		flat = append(flat, seq...)
	}
	var extraAt []int // positions of placeholder ids in flat
	for i, id := range flat {
		if id < 0 {
			extraAt = append(extraAt, i)
		}
	}
	if len(extraAt) > 0 {
		flat = slices.Clone(flat)
		for _, i := range extraAt {
			flat[i] = 0
		}
	}
	b := len(ids)
	x := dev.Alloc(b, t, c.Width)
	dev.Embedding(x, m.tokEmb, flat)
	if len(extraAt) > 0 {
		// Textual-inversion vectors replace their placeholders' rows.
		h, err := dev.Download(x)
		if err != nil {
			return nil, nil, err
		}
		for _, i := range extraAt {
			copy(h[i*c.Width:(i+1)*c.Width], o.Extra[-1-ids[i/t][i%t]])
		}
		dev.Free(x)
		x = dev.Upload(h, b, t, c.Width)
	}
	pos := dev.Alloc(t, c.Width)
	dev.Slice(pos, m.posEmb, 0, 0)
	dev.Binary(backend.Add, x, x, pos)

	layers := c.Layers - (skip - 1)
	if o.Pool != NoPool {
		layers = c.Layers
	}
	attn := backend.AttentionParams{Heads: c.Heads, Scale: 1 / sqrt32(float32(c.Width/c.Heads)), Causal: true}
	for i := range layers {
		l := &m.layers[i]
		// Self-attention block: x = x + out(attn(ln1(x))).
		h := l.ln1.Forward(dev, x)
		q, k, v := l.q.Forward(dev, h), l.k.Forward(dev, h), l.v.Forward(dev, h)
		a := nn.Attention(dev, q, k, v, attn)
		l.out.AddInto(dev, x, a)
		// MLP block: x = x + fc2(act(fc1(ln2(x)))).
		h = l.ln2.Forward(dev, x)
		f := l.fc1.Forward(dev, h)
		dev.Unary(c.Act, f, f)
		l.fc2.AddInto(dev, x, f)
		if i == c.Layers-skip {
			hidden = x
			if o.Pool != NoPool {
				hidden = dev.Alloc(x.Shape...)
				dev.Slice(hidden, x, 0, 0)
			}
		}
	}
	if !o.NoFinalNorm {
		hidden = m.finalLN.Forward(dev, hidden)
	}
	if o.Pool == NoPool {
		return hidden, nil, nil
	}
	last := m.finalLN.Forward(dev, x).Reshape(b*t, c.Width)
	rows := make([]*backend.Tensor, b)
	for i, seq := range ids {
		rows[i] = dev.Alloc(1, c.Width)
		dev.Slice(rows[i], last, 0, i*t+eosPosition(seq, o.EOS))
	}
	pooled = rows[0]
	if b > 1 {
		pooled = nn.Concat(dev, 0, rows...)
	}
	if o.Pool == PoolProjected {
		p := dev.Alloc(b, c.Projection)
		if c.Layout == OpenCLIP {
			dev.MatMul(p, pooled, m.proj, false)
		} else {
			dev.Linear(p, pooled, m.proj, nil)
		}
		pooled = p
	}
	return hidden, pooled, nil
}

// eosPosition is the first position of eos in seq, or of its largest id
// when eos is absent.
func eosPosition(seq []int, eos int) int {
	best := 0
	for i, id := range seq {
		if id == eos {
			return i
		}
		if id > seq[best] {
			best = i
		}
	}
	return best
}
