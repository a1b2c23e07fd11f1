// Package clip implements the CLIP text encoder (the transformer that turns
// prompt tokens into the UNet's cross-attention context).
package clip

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Config describes a CLIP text transformer.
type Config struct {
	Vocab     int // token vocabulary (49408 for every OpenAI CLIP)
	Positions int // maximum sequence length (77)
	Width     int // hidden size
	Layers    int
	Heads     int
	MLP       int // intermediate size
	// Act is the MLP activation: QuickGELU for OpenAI CLIP ViT-L (SD1),
	// GELU for OpenCLIP (SD2, SDXL's second encoder).
	Act backend.UnaryOp
	Eps float32
}

// HeadDim is the width of every real CLIP attention head; shapes do not tell
// the number of heads, so it is derived from the width.
const HeadDim = 64

// String is a one-line summary.
func (c Config) String() string {
	return fmt.Sprintf("width %d, %d layers, %d heads, mlp %d, vocab %d, %d positions, %v",
		c.Width, c.Layers, c.Heads, c.MLP, c.Vocab, c.Positions, c.Act)
}

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix (e.g. "cond_stage_model.transformer.text_model.").
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	tok, ok := src.Info(prefix + "embeddings.token_embedding.weight")
	if !ok || len(tok.Shape) != 2 {
		return Config{}, fmt.Errorf("clip: no %sembeddings.token_embedding.weight", prefix)
	}
	pos, ok := src.Info(prefix + "embeddings.position_embedding.weight")
	if !ok || len(pos.Shape) != 2 {
		return Config{}, fmt.Errorf("clip: no %sembeddings.position_embedding.weight", prefix)
	}
	c := Config{Vocab: tok.Shape[0], Width: tok.Shape[1], Positions: pos.Shape[0], Act: backend.QuickGELU, Eps: 1e-5}
	for {
		if _, ok := src.Info(fmt.Sprintf("%sencoder.layers.%d.self_attn.q_proj.weight", prefix, c.Layers)); !ok {
			break
		}
		c.Layers++
	}
	if c.Layers == 0 {
		return Config{}, fmt.Errorf("clip: no encoder layers under %q", prefix)
	}
	fc1, ok := src.Info(prefix + "encoder.layers.0.mlp.fc1.weight")
	if !ok || len(fc1.Shape) != 2 {
		return Config{}, fmt.Errorf("clip: no %sencoder.layers.0.mlp.fc1.weight", prefix)
	}
	c.MLP = fc1.Shape[0]
	c.Heads = max(1, c.Width/HeadDim)
	if c.Width%c.Heads != 0 {
		return Config{}, fmt.Errorf("clip: width %d not divisible into %d heads", c.Width, c.Heads)
	}
	return c, nil
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
}

// Load builds the text model from b (prefixed at text_model.).
func Load(b *weights.Builder, c Config) *TextModel {
	m := &TextModel{
		Config: c,
		tokEmb: b.Tensor("embeddings.token_embedding.weight", c.Vocab, c.Width),
		posEmb: b.Tensor("embeddings.position_embedding.weight", c.Positions, c.Width),
	}
	for i := range c.Layers {
		lb := b.Subf("encoder.layers.%d", i)
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
	m.finalLN = nn.LoadLayerNorm(b.Sub("final_layer_norm"), c.Width, c.Eps)
	return m
}

// Forward encodes token ids [B][T] (T ≤ Positions) and returns the hidden
// states [B, T, Width] after the final layer norm. skip selects the layer:
// 1 (or 0) is the last layer, 2 the penultimate (A1111's "clip skip 2"), and
// so on; the final layer norm is applied to the chosen layer's output as
// ComfyUI and diffusers do.
func (m *TextModel) Forward(dev backend.Device, ids [][]int, skip int) (*backend.Tensor, error) {
	c := m.Config
	if len(ids) == 0 {
		return nil, fmt.Errorf("clip: no token sequences")
	}
	t := len(ids[0])
	if t > c.Positions {
		return nil, fmt.Errorf("clip: %d tokens exceed the %d positions", t, c.Positions)
	}
	skip = max(skip, 1)
	if skip > c.Layers {
		return nil, fmt.Errorf("clip skip %d: the text encoder has only %d layers", skip, c.Layers)
	}
	flat := make([]int, 0, len(ids)*t)
	for _, seq := range ids {
		if len(seq) != t {
			return nil, fmt.Errorf("clip: token sequences of different lengths %d and %d", t, len(seq))
		}
		for _, id := range seq {
			if id < 0 || id >= c.Vocab {
				return nil, fmt.Errorf("clip: token id %d outside the vocabulary of %d", id, c.Vocab)
			}
		}
		flat = append(flat, seq...)
	}
	b := len(ids)
	x := dev.Alloc(b, t, c.Width)
	dev.Embedding(x, m.tokEmb, flat)
	pos := dev.Alloc(t, c.Width)
	dev.Slice(pos, m.posEmb, 0, 0)
	dev.Binary(backend.Add, x, x, pos)

	attn := backend.AttentionParams{Heads: c.Heads, Scale: 1 / sqrt32(float32(c.Width/c.Heads)), Causal: true}
	for i := range c.Layers - (skip - 1) {
		l := &m.layers[i]
		// Self-attention block: x = x + out(attn(ln1(x))).
		h := l.ln1.Forward(dev, x)
		q, k, v := l.q.Forward(dev, h), l.k.Forward(dev, h), l.v.Forward(dev, h)
		a := nn.Attention(dev, q, k, v, attn)
		o := l.out.Forward(dev, a)
		dev.Binary(backend.Add, x, x, o)
		// MLP block: x = x + fc2(act(fc1(ln2(x)))).
		h = l.ln2.Forward(dev, x)
		f := l.fc1.Forward(dev, h)
		dev.Unary(c.Act, f, f)
		o = l.fc2.Forward(dev, f)
		dev.Binary(backend.Add, x, x, o)
	}
	return m.finalLN.Forward(dev, x), nil
}
