// Package t5 implements the encoder of T5 v1.1 (Google's text-to-text
// transformer), the text encoder of Flux and SD3 (T5-XXL) and of other
// diffusion models, as Hugging Face transformers' T5EncoderModel computes
// it. Checkpoints name its tensors as transformers stores them
// (shared.weight, encoder.block.N.layer.0.SelfAttention.q.weight, …) —
// diffusers' text_encoder_2/ and ComfyUI's t5xxl_*.safetensors alike — under
// some root prefix, or without the "encoder." level (a bare T5Stack).
//
// Each block is pre-norm: RMS layer norm (no mean, no bias, float32
// statistics), self-attention without the 1/√d scaling and with a learned
// relative-position bias (computed by the first block, shared by all),
// residual; RMS norm, feed-forward (gated GELU for v1.1: gelu_tanh(wi_0·x) ⊙
// wi_1·x, then wo; ReLU for the original T5), residual. A final RMS norm
// ends the stack.
package t5

import (
	"errors"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// MaxDistance is the relative distance beyond which every T5 bucket is the
// same (relative_attention_max_distance: 128 for every T5; shapes cannot
// tell it).
const MaxDistance = 128

// Eps is T5's layer-norm epsilon (layer_norm_epsilon).
const Eps = 1e-6

// Half16Limit bounds the hidden states after every residual when the
// device stores float16: transformers clamps them to ±(65504 − 1000) once
// any is infinite (to ±65504 otherwise, which leaves finite values alone),
// so that an overflow becomes a large finite value instead of spreading
// NaN through the next norm. Clamping always to ±64504 differs from that
// only for finite values between 64504 and 65504.
const Half16Limit = 65504 - 1000

// Config describes a T5 encoder stack.
type Config struct {
	Vocab   int // embedding rows (32128 for T5 v1.1)
	Width   int // d_model (4096 for T5-XXL)
	Heads   int // num_heads (64)
	HeadDim int // d_kv (64)
	FF      int // d_ff (10240)
	Layers  int // num_layers (24)
	Buckets int // relative_attention_num_buckets (32)
	// Gated is v1.1's gated-GELU feed-forward (wi_0, wi_1); otherwise the
	// original T5's ReLU one (wi).
	Gated bool
	// Stack is the name prefix of the encoder stack under the root:
	// "encoder." (transformers, ComfyUI) or "" (a bare T5Stack).
	Stack string
	// Embedding is the name of the token embedding under the root
	// ("shared.weight" or Stack+"embed_tokens.weight").
	Embedding string
}

// String is a one-line summary.
func (c Config) String() string {
	ff := "gated-gelu"
	if !c.Gated {
		ff = "relu"
	}
	return fmt.Sprintf("width %d, %d layers, %d heads × %d, ff %d (%s), vocab %d, %d buckets",
		c.Width, c.Layers, c.Heads, c.HeadDim, c.FF, ff, c.Vocab, c.Buckets)
}

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix (the root holding shared.weight and encoder.*, or a bare stack
// holding block.* and embed_tokens.weight).
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	var c Config
	const q0 = "block.0.layer.0.SelfAttention.q.weight"
	switch {
	case shape("encoder."+q0) != nil:
		c.Stack = "encoder."
	case shape(q0) != nil:
	default:
		return Config{}, fmt.Errorf("t5: no %sencoder.%s (nor a bare %s%s): not a T5 encoder", prefix, q0, prefix, q0)
	}
	for _, n := range []string{"shared.weight", c.Stack + "embed_tokens.weight"} {
		if shape(n) != nil {
			c.Embedding = n
			break
		}
	}
	if c.Embedding == "" {
		return Config{}, fmt.Errorf("t5: no token embedding %sshared.weight or %s%sembed_tokens.weight", prefix, prefix, c.Stack)
	}
	emb := shape(c.Embedding)
	if len(emb) != 2 || emb[0] <= 0 || emb[1] <= 0 {
		return Config{}, fmt.Errorf("t5: token embedding %s%s has shape %v, want [vocab, width]", prefix, c.Embedding, emb)
	}
	c.Vocab, c.Width = emb[0], emb[1]
	attn := c.Stack + "block.0.layer.0.SelfAttention."
	rel := shape(attn + "relative_attention_bias.weight")
	if len(rel) != 2 || rel[0] < 2 || rel[1] <= 0 {
		return Config{}, fmt.Errorf("t5: %s%srelative_attention_bias.weight has shape %v, want [buckets, heads]", prefix, attn, rel)
	}
	c.Buckets, c.Heads = rel[0], rel[1]
	q := shape(attn + "q.weight")
	if len(q) != 2 || q[1] != c.Width || q[0]%c.Heads != 0 {
		return Config{}, fmt.Errorf("t5: %s%sq.weight has shape %v, want [heads·d_kv, %d] with %d heads", prefix, attn, q, c.Width, c.Heads)
	}
	c.HeadDim = q[0] / c.Heads
	ff := c.Stack + "block.0.layer.1.DenseReluDense."
	if w := shape(ff + "wi_0.weight"); w != nil {
		c.Gated = true
		c.FF = w[0]
	} else if w := shape(ff + "wi.weight"); w != nil {
		c.FF = w[0]
	} else {
		return Config{}, fmt.Errorf("t5: no %s%swi_0.weight (nor wi.weight)", prefix, ff)
	}
	for shape(fmt.Sprintf("%sblock.%d.layer.0.SelfAttention.q.weight", c.Stack, c.Layers)) != nil {
		c.Layers++
	}
	return c, nil
}

type block struct {
	ln0, ln1   *backend.Tensor
	q, k, v, o *nn.Linear
	wi0, wi1   *nn.Linear // wi0 is wi for the ReLU feed-forward
	wo         *nn.Linear
}

// Encoder is a loaded T5 encoder.
type Encoder struct {
	Config  Config
	embed   *backend.Tensor
	relBias *backend.Tensor // [Buckets, Heads]
	blocks  []block
	final   *backend.Tensor
}

// Load builds the encoder from b, prefixed at the root ConfigFromWeights
// was given. The tied second copy of the embedding, when a file has both
// shared.weight and encoder.embed_tokens.weight, is claimed unread.
func Load(b *weights.Builder, c Config) *Encoder {
	m := &Encoder{Config: c, embed: b.Tensor(c.Embedding, c.Vocab, c.Width)}
	b.Claim(c.Stack + "embed_tokens.weight")
	inner := c.Heads * c.HeadDim
	for i := range c.Layers {
		lb := b.Subf("%sblock.%d.layer", c.Stack, i)
		ab := lb.Sub("0.SelfAttention")
		fb := lb.Sub("1.DenseReluDense")
		bl := block{
			ln0: lb.Tensor("0.layer_norm.weight", c.Width),
			ln1: lb.Tensor("1.layer_norm.weight", c.Width),
			q:   nn.LoadLinear(ab.Sub("q"), c.Width, inner, false),
			k:   nn.LoadLinear(ab.Sub("k"), c.Width, inner, false),
			v:   nn.LoadLinear(ab.Sub("v"), c.Width, inner, false),
			o:   nn.LoadLinear(ab.Sub("o"), inner, c.Width, false),
			wo:  nn.LoadLinear(fb.Sub("wo"), c.FF, c.Width, false),
		}
		if c.Gated {
			bl.wi0 = nn.LoadLinear(fb.Sub("wi_0"), c.Width, c.FF, false)
			bl.wi1 = nn.LoadLinear(fb.Sub("wi_1"), c.Width, c.FF, false)
		} else {
			bl.wi0 = nn.LoadLinear(fb.Sub("wi"), c.Width, c.FF, false)
		}
		if i == 0 {
			m.relBias = ab.Tensor("relative_attention_bias.weight", c.Buckets, c.Heads)
		}
		m.blocks = append(m.blocks, bl)
	}
	m.final = b.Tensor(c.Stack+"final_layer_norm.weight", c.Width)
	return m
}

// Bucket maps a relative position (key − query) to its bucket as
// transformers' T5Attention._relative_position_bucket does for the
// bidirectional encoder, in float32 arithmetic as torch computes it: half
// the buckets for each direction, exact up to a quarter of them, then
// logarithmic up to maxDistance.
func Bucket(rel, buckets, maxDistance int) int {
	half := buckets / 2
	b := 0
	if rel > 0 {
		b = half
	}
	if rel < 0 {
		rel = -rel
	}
	exact := half / 2
	if rel < exact {
		return b + rel
	}
	v := float32(math.Log(float64(float32(rel) / float32(exact))))
	v /= float32(math.Log(float64(maxDistance) / float64(exact)))
	v *= float32(half - exact)
	return b + min(exact+int(v), half-1)
}

// Forward encodes token ids [B][T] and returns the last hidden states
// [B, T, Width] after the final norm (T5EncoderModel's last_hidden_state).
//
// mask selects the attention: nil attends every key, padding included, as
// diffusers' Flux and SD3 pipelines call T5 (no attention_mask); a [B][T]
// mask of 1 (token) and 0 (padding) hides the padded keys, as
// transformers does with attention_mask. Padded positions get outputs
// either way.
//
// On a float16 device the hidden states are clamped to ±Half16Limit after
// every residual, as transformers does in float16; float32 and bfloat16
// devices need no clamp (T5-XXL's activations overflow float16 only).
func (m *Encoder) Forward(dev backend.Device, ids [][]int, mask [][]int) (*backend.Tensor, error) {
	c := m.Config
	if len(ids) == 0 || len(ids[0]) == 0 {
		return nil, errors.New("t5: no tokens to encode")
	}
	if mask != nil && len(mask) != len(ids) {
		return nil, fmt.Errorf("t5: %d masks for %d token sequences", len(mask), len(ids))
	}
	B, T := len(ids), len(ids[0])
	flat := make([]int, 0, B*T)
	for i, seq := range ids {
		if len(seq) != T {
			return nil, fmt.Errorf("t5: token sequences of different lengths %d and %d", T, len(seq))
		}
		if mask != nil && len(mask[i]) != T {
			return nil, fmt.Errorf("t5: mask %d has %d entries for %d tokens", i, len(mask[i]), T)
		}
		for _, id := range seq {
			if id < 0 || id >= c.Vocab {
				return nil, fmt.Errorf("t5: token id %d outside the vocabulary of %d", id, c.Vocab)
			}
		}
		flat = append(flat, seq...)
	}
	H, D, W := c.Heads, c.HeadDim, c.Width

	x := dev.Alloc(B, T, W)
	dev.Embedding(x.Reshape(B*T, W), m.embed, flat)

	pos := m.positionBias(dev, T)
	bias := pos.Reshape(1, H, T, T)
	if mask != nil {
		add := make([]float32, B*T)
		for i, row := range mask {
			for j, v := range row {
				if v == 0 {
					add[i*T+j] = -math.MaxFloat32 // torch.finfo(float32).min, as transformers adds
				}
			}
		}
		mb := dev.Upload(add, B, 1, 1, T)
		full := dev.Alloc(B, H, T, T)
		dev.Binary(backend.Add, full, bias, mb)
		dev.Free(mb)
		dev.Free(pos)
		bias = full
	}
	half := backend.IsHalf(dev)
	clamp := func() {
		if half {
			dev.Clamp(x, x, -Half16Limit, Half16Limit)
		}
	}

	heads := func(t *backend.Tensor) *backend.Tensor { // [B, T, H·D] -> [B, H, T, D]
		out := dev.Alloc(B, H, T, D)
		dev.Permute(out, t.Reshape(B, T, H, D), 0, 2, 1, 3)
		dev.Free(t)
		return out
	}
	for i := range m.blocks {
		bl := &m.blocks[i]
		// Self-attention: x += o(softmax(q·kᵀ + bias)·v), unscaled.
		h := dev.Alloc(B, T, W)
		dev.RMSNorm(h, x, bl.ln0, Eps)
		q, k, v := heads(bl.q.Forward(dev, h)), heads(bl.k.Forward(dev, h)), heads(bl.v.Forward(dev, h))
		dev.Free(h)
		s := dev.Alloc(B, H, T, T)
		dev.MatMul(s, q, k, true)
		dev.Binary(backend.Add, s, s, bias)
		p := dev.Alloc(B, H, T, T)
		dev.Softmax(p, s)
		dev.Free(s)
		a := dev.Alloc(B, H, T, D)
		dev.MatMul(a, p, v, false)
		dev.Free(p)
		dev.Free(q)
		dev.Free(k)
		dev.Free(v)
		at := dev.Alloc(B, T, H, D)
		dev.Permute(at, a, 0, 2, 1, 3)
		dev.Free(a)
		bl.o.AddInto(dev, x, at.Reshape(B, T, H*D))
		dev.Free(at)
		clamp()

		// Feed-forward: x += wo(gelu_tanh(wi_0·h) ⊙ wi_1·h) (v1.1) or wo(relu(wi·h)).
		h = dev.Alloc(B, T, W)
		dev.RMSNorm(h, x, bl.ln1, Eps)
		f := bl.wi0.Forward(dev, h)
		if c.Gated {
			dev.Unary(backend.GELUTanh, f, f)
			g := bl.wi1.Forward(dev, h)
			dev.Binary(backend.Mul, f, f, g)
			dev.Free(g)
		} else {
			dev.Unary(backend.ReLU, f, f)
		}
		dev.Free(h)
		bl.wo.AddInto(dev, x, f)
		dev.Free(f)
		clamp()
	}
	dev.Free(bias)
	out := dev.Alloc(B, T, W)
	dev.RMSNorm(out, x, m.final, Eps)
	dev.Free(x)
	return out, nil
}

// positionBias returns block 0's relative-position bias [H, T, T]:
// bias[h][i][j] = relative_attention_bias[Bucket(j−i)][h].
func (m *Encoder) positionBias(dev backend.Device, T int) *backend.Tensor {
	c := m.Config
	buckets := make([]int, T*T)
	for i := range T {
		for j := range T {
			buckets[i*T+j] = Bucket(j-i, c.Buckets, MaxDistance)
		}
	}
	g := dev.Alloc(T*T, c.Heads)
	dev.Embedding(g, m.relBias, buckets)
	out := dev.Alloc(c.Heads, T, T)
	dev.Permute(out, g.Reshape(T, T, c.Heads), 2, 0, 1)
	dev.Free(g)
	return out
}
