// Package qwenllm implements the decoder-only language models that
// condition Z-Image (Qwen3-4B) and Qwen-Image (the language model of
// Qwen2.5-VL-7B, text only), as Hugging Face transformers' Qwen3Model and
// Qwen2_5_VLTextModel compute their hidden states.
//
// Each layer is pre-norm: RMSNorm; grouped-query self-attention (q/k/v
// projections — with biases in Qwen2.5, without in Qwen3 —, Qwen3's
// per-head RMSNorm of queries and keys, rotary position embedding in
// transformers' rotate_half layout, key/value heads shared by groups of
// query heads, causal mask, 1/√head_dim scale), output projection,
// residual; RMSNorm, SwiGLU feed-forward (down(silu(gate·x) ⊙ up·x)),
// residual. A final RMSNorm ends the stack.
//
// Qwen2.5-VL's multimodal RoPE gives every token three position rows
// (temporal, height, width) and takes each frequency band from one of them
// (mrope_section); text tokens have the same position in all three rows,
// so for text the bands agree and it is the 1-D RoPE computed here (see
// docs/llm-encoders.md for the proof against transformers).
//
// Checkpoints name the tensors as transformers stores them —
// model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, …,
// model.norm.weight — in ComfyUI's qwen_3_4b.safetensors and
// qwen_2.5_vl_7b*.safetensors and in diffusers' text_encoder/ folders.
package qwenllm

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Arch is one of the supported model architectures.
type Arch uint8

// Architectures.
const (
	// Qwen3 has per-head q_norm/k_norm and no q/k/v biases (Z-Image's Qwen3-4B).
	Qwen3 Arch = iota + 1
	// Qwen25VL is Qwen2.5-VL's language model: q/k/v biases, no q/k norms,
	// multimodal RoPE that is 1-D for text (Qwen-Image's Qwen2.5-VL-7B).
	Qwen25VL
)

// String names the architecture.
func (a Arch) String() string {
	switch a {
	case Qwen3:
		return "Qwen3"
	case Qwen25VL:
		return "Qwen2.5-VL"
	}
	return fmt.Sprintf("Arch(%d)", uint8(a))
}

// DefaultEps is rms_norm_eps of Qwen3-4B and Qwen2.5-VL-7B.
const DefaultEps = 1e-6

// DefaultTheta is the RoPE base (rope_theta) of Qwen3-4B and Qwen2.5-VL-7B.
const DefaultTheta = 1e6

// DefaultHeadDim is the head width of Qwen2.5 models, whose tensors do not
// show it (Qwen3's q_norm weight does).
const DefaultHeadDim = 128

// Config describes a language model.
type Config struct {
	Arch    Arch
	Vocab   int // embedding rows
	Width   int // hidden_size
	Layers  int // num_hidden_layers
	Heads   int // num_attention_heads
	KVHeads int // num_key_value_heads (divides Heads)
	HeadDim int // head_dim
	FF      int // intermediate_size
	// Eps is rms_norm_eps; Theta is the RoPE base.
	Eps   float32
	Theta float64
	// Stack is the name prefix of the model under the root ("model.").
	Stack string
}

// String is a one-line summary.
func (c Config) String() string {
	return fmt.Sprintf("%s: width %d, %d layers, %d heads (%d key/value) × %d, ff %d, vocab %d, eps %g, rope theta %g",
		c.Arch, c.Width, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.FF, c.Vocab, c.Eps, c.Theta)
}

// qNorm reports whether the architecture has per-head query/key norms,
// qkvBias whether its q/k/v projections have biases.
func (c Config) qNorm() bool   { return c.Arch == Qwen3 }
func (c Config) qkvBias() bool { return c.Arch == Qwen25VL }

// Ignored reports whether a tensor name under the root is one the text
// encoder does not read and a file may hold: the vision tower of
// Qwen2.5-VL (visual.*: images are not inputs to text-to-image) and the
// language-model head (lm_head.weight: only hidden states are used, never
// next-token logits).
func Ignored(name string) bool {
	return name == "lm_head.weight" || strings.HasPrefix(name, "visual.")
}

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix (the root that holds model.*), then applies a transformers
// config.json when configJSON is not nil (a folder's text_encoder/config.json;
// for Qwen2.5-VL its text_config or top level): the head counts and width,
// rms_norm_eps and rope_theta shapes cannot tell. Without one, Qwen3's
// head width is its q_norm width and Qwen2.5's is DefaultHeadDim; eps and
// theta are DefaultEps and DefaultTheta.
func ConfigFromWeights(src weights.Source, prefix string, configJSON []byte) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	c := Config{Stack: "model.", Eps: DefaultEps, Theta: DefaultTheta}
	const q0 = "layers.0.self_attn.q_proj.weight"
	if shape(c.Stack+q0) == nil {
		if shape(q0) == nil {
			return Config{}, fmt.Errorf("qwenllm: no %smodel.%s (nor a bare %s%s): not a Qwen language model", prefix, q0, prefix, q0)
		}
		c.Stack = ""
	}
	at := func(n string) string { return c.Stack + n }
	emb := shape(at("embed_tokens.weight"))
	if len(emb) != 2 || emb[0] <= 0 || emb[1] <= 0 {
		return Config{}, fmt.Errorf("qwenllm: %s%s has shape %v, want [vocab, width]", prefix, at("embed_tokens.weight"), emb)
	}
	c.Vocab, c.Width = emb[0], emb[1]
	attn := at("layers.0.self_attn.")
	q, k := shape(attn+"q_proj.weight"), shape(attn+"k_proj.weight")
	if len(q) != 2 || q[1] != c.Width || len(k) != 2 || k[1] != c.Width {
		return Config{}, fmt.Errorf("qwenllm: %s%sq_proj/k_proj.weight have shapes %v, %v, want [·, %d]", prefix, attn, q, k, c.Width)
	}
	switch qn := shape(attn + "q_norm.weight"); {
	case qn != nil:
		c.Arch = Qwen3
		if len(qn) != 1 || qn[0] <= 0 {
			return Config{}, fmt.Errorf("qwenllm: %s%sq_norm.weight has shape %v, want [head_dim]", prefix, attn, qn)
		}
		c.HeadDim = qn[0]
	case shape(attn+"q_proj.bias") != nil:
		c.Arch = Qwen25VL
		c.HeadDim = DefaultHeadDim
	default:
		return Config{}, fmt.Errorf("qwenllm: %s%s has neither q_norm.weight (Qwen3) nor q_proj.bias (Qwen2.5)", prefix, attn)
	}
	gate := shape(at("layers.0.mlp.gate_proj.weight"))
	if len(gate) != 2 || gate[1] != c.Width {
		return Config{}, fmt.Errorf("qwenllm: %s%s has shape %v, want [intermediate, %d]", prefix, at("layers.0.mlp.gate_proj.weight"), gate, c.Width)
	}
	c.FF = gate[0]
	for shape(fmt.Sprintf("%slayers.%d.self_attn.q_proj.weight", c.Stack, c.Layers)) != nil {
		c.Layers++
	}
	if configJSON != nil {
		if err := c.applyJSON(configJSON); err != nil {
			return Config{}, err
		}
	}
	if c.HeadDim <= 0 || q[0]%c.HeadDim != 0 || k[0]%c.HeadDim != 0 {
		return Config{}, fmt.Errorf("qwenllm: q_proj/k_proj widths %d, %d are not whole heads of %d: give the model's config.json", q[0], k[0], c.HeadDim)
	}
	c.Heads, c.KVHeads = q[0]/c.HeadDim, k[0]/c.HeadDim
	if c.KVHeads == 0 || c.Heads%c.KVHeads != 0 {
		return Config{}, fmt.Errorf("qwenllm: %d query heads are not groups of %d key/value heads", c.Heads, c.KVHeads)
	}
	return c, nil
}

// hfConfig is what applyJSON reads of a transformers config.json.
type hfConfig struct {
	Heads      int      `json:"num_attention_heads"`
	HeadDim    int      `json:"head_dim"`
	Hidden     int      `json:"hidden_size"`
	Eps        *float64 `json:"rms_norm_eps"`
	Theta      *float64 `json:"rope_theta"`
	RopeParams *struct {
		Theta *float64 `json:"rope_theta"`
	} `json:"rope_parameters"`
	TextConfig *hfConfig `json:"text_config"`
}

// applyJSON takes the head width, eps and RoPE base from a config.json.
func (c *Config) applyJSON(data []byte) error {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return fmt.Errorf("qwenllm: config.json: %w", err)
	}
	if h.TextConfig != nil { // Qwen2.5-VL keeps the language model's settings here
		h = *h.TextConfig
	}
	switch {
	case h.HeadDim > 0:
		c.HeadDim = h.HeadDim
	case h.Heads > 0 && h.Hidden > 0:
		c.HeadDim = h.Hidden / h.Heads
	}
	if h.Eps != nil {
		c.Eps = float32(*h.Eps)
	}
	if h.RopeParams != nil && h.RopeParams.Theta != nil {
		c.Theta = *h.RopeParams.Theta
	} else if h.Theta != nil {
		c.Theta = *h.Theta
	}
	if c.Eps <= 0 || c.Theta <= 0 {
		return fmt.Errorf("qwenllm: config.json gives rms_norm_eps %g and rope_theta %g, want both positive", c.Eps, c.Theta)
	}
	return nil
}

type layer struct {
	ln1, ln2       *backend.Tensor
	qNorm, kNorm   *backend.Tensor // Qwen3 only
	q, k, v, o     *nn.Linear
	gate, up, down *nn.Linear
}

// Model is a loaded language model.
type Model struct {
	Config Config
	embed  *backend.Tensor
	layers []layer
	norm   *backend.Tensor
}

// Load builds the model from b, prefixed at the root ConfigFromWeights was
// given (b.Sub of that prefix, without its dot), reading every tensor of
// the language model. The vision tower and
// lm_head a file may hold are left unread (see Ignored).
func Load(b *weights.Builder, c Config) *Model {
	s := b.Sub(c.Stack[:max(len(c.Stack)-1, 0)])
	qw, kw := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	m := &Model{Config: c, embed: s.Tensor("embed_tokens.weight", c.Vocab, c.Width)}
	for i := range c.Layers {
		lb := s.Subf("layers.%d", i)
		ab := lb.Sub("self_attn")
		fb := lb.Sub("mlp")
		l := layer{
			ln1:  lb.Tensor("input_layernorm.weight", c.Width),
			ln2:  lb.Tensor("post_attention_layernorm.weight", c.Width),
			q:    nn.LoadLinear(ab.Sub("q_proj"), c.Width, qw, c.qkvBias()),
			k:    nn.LoadLinear(ab.Sub("k_proj"), c.Width, kw, c.qkvBias()),
			v:    nn.LoadLinear(ab.Sub("v_proj"), c.Width, kw, c.qkvBias()),
			o:    nn.LoadLinear(ab.Sub("o_proj"), qw, c.Width, false),
			gate: nn.LoadLinear(fb.Sub("gate_proj"), c.Width, c.FF, false),
			up:   nn.LoadLinear(fb.Sub("up_proj"), c.Width, c.FF, false),
			down: nn.LoadLinear(fb.Sub("down_proj"), c.FF, c.Width, false),
		}
		if c.qNorm() {
			l.qNorm = ab.Tensor("q_norm.weight", c.HeadDim)
			l.kNorm = ab.Tensor("k_norm.weight", c.HeadDim)
		}
		m.layers = append(m.layers, l)
	}
	m.norm = s.Tensor("norm.weight", c.Width)
	return m
}

// HiddenState returns entry index of transformers' hidden_states tuple
// (output_hidden_states=True) for token ids [B][T]: 0 is the token
// embedding, k in 1..Layers−1 the output of layer k, Layers (or −1) the
// last layer's output after the final norm; negative indices count from
// the end as Python's do. Z-Image's pipeline takes −2 (the second-to-last
// layer's output, no final norm), Qwen-Image's −1 (last_hidden_state).
func (m *Model) HiddenState(dev backend.Device, ids [][]int, mask [][]int, index int) (*backend.Tensor, error) {
	n := m.Config.Layers + 1
	k := index
	if k < 0 {
		k += n
	}
	if k < 0 || k >= n {
		return nil, fmt.Errorf("qwenllm: hidden state %d out of range for %d layers (want −%d…%d)", index, m.Config.Layers, n, n-1)
	}
	return m.Forward(dev, ids, mask, k, k == m.Config.Layers)
}

// Forward runs token ids [B][T] through the first layers layers and
// returns their output [B, T, Width], after the final norm when norm is
// set.
//
// mask, when not nil, is the [B][T] attention mask of the tokenizer (1 on
// tokens, 0 on padding) and must pad on the right, as both pipelines'
// tokenizers do: attention is causal, so no valid token sees a later
// padded one, and the valid tokens' states equal transformers' with the
// mask. The padded positions get outputs that differ from transformers'
// (they attend earlier padding too); the pipelines drop them.
func (m *Model) Forward(dev backend.Device, ids [][]int, mask [][]int, layers int, norm bool) (*backend.Tensor, error) {
	c := m.Config
	if layers < 0 || layers > c.Layers {
		return nil, fmt.Errorf("qwenllm: %d layers asked of %d", layers, c.Layers)
	}
	if len(ids) == 0 || len(ids[0]) == 0 {
		return nil, errors.New("qwenllm: no tokens to encode")
	}
	if err := checkIDs(ids, mask, c.Vocab); err != nil {
		return nil, err
	}
	B, T, W := len(ids), len(ids[0]), c.Width
	flat := make([]int, 0, B*T)
	for _, seq := range ids {
		flat = append(flat, seq...)
	}
	x := dev.Alloc(B, T, W)
	dev.Embedding(x.Reshape(B*T, W), m.embed, flat)
	if layers > 0 {
		cosv, sinv := Rope(T, c.HeadDim, c.Theta)
		r := &run{dev: dev, c: c, B: B, T: T,
			cos: dev.Upload(cosv, 1, T, 1, c.HeadDim), sin: dev.Upload(sinv, 1, T, 1, c.HeadDim)}
		for i := range layers {
			r.layer(&m.layers[i], x)
		}
		dev.Free(r.cos)
		dev.Free(r.sin)
	}
	if norm {
		out := dev.Alloc(B, T, W)
		dev.RMSNorm(out, x, m.norm, c.Eps)
		dev.Free(x)
		x = out
	}
	return x, nil
}

// checkIDs validates token ids and an optional right-padding mask.
func checkIDs(ids, mask [][]int, vocab int) error {
	T := len(ids[0])
	if mask != nil && len(mask) != len(ids) {
		return fmt.Errorf("qwenllm: %d masks for %d token sequences", len(mask), len(ids))
	}
	for i, seq := range ids {
		if len(seq) != T {
			return fmt.Errorf("qwenllm: token sequences of different lengths %d and %d", T, len(seq))
		}
		for _, id := range seq {
			if id < 0 || id >= vocab {
				return fmt.Errorf("qwenllm: token id %d outside the vocabulary of %d", id, vocab)
			}
		}
		if mask == nil {
			continue
		}
		if len(mask[i]) != T {
			return fmt.Errorf("qwenllm: mask %d has %d entries for %d tokens", i, len(mask[i]), T)
		}
		for j := 1; j < T; j++ {
			if mask[i][j] != 0 && mask[i][j-1] == 0 {
				return fmt.Errorf("qwenllm: mask %d has a token after padding at %d: only right padding is supported", i, j)
			}
		}
	}
	return nil
}

// Rope returns the rotary tables cos, sin [T, headDim] of positions
// 0..T−1 as transformers computes them in float32: inv_freq[i] =
// 1/theta^(2i/headDim), the angle position·inv_freq[i] repeated over both
// halves of the head (rotate_half layout).
func Rope(T, headDim int, theta float64) (cos, sin []float32) {
	half := headDim / 2
	inv := make([]float32, half)
	for i := range inv {
		e := float32(2*i) / float32(headDim)
		inv[i] = 1 / float32(math.Pow(theta, float64(e)))
	}
	cos, sin = make([]float32, T*headDim), make([]float32, T*headDim)
	for p := range T {
		row := p * headDim
		for i, f := range inv {
			a := float64(float32(p) * f)
			cv, sv := float32(math.Cos(a)), float32(math.Sin(a))
			cos[row+i], cos[row+half+i] = cv, cv
			sin[row+i], sin[row+half+i] = sv, sv
		}
	}
	return cos, sin
}

// run holds one forward pass's shapes and rotary tables.
type run struct {
	dev      backend.Device
	c        Config
	B, T     int
	cos, sin *backend.Tensor // [1, T, 1, HeadDim]
}

// layer applies one decoder layer to x [B, T, Width] in place.
func (r *run) layer(l *layer, x *backend.Tensor) {
	dev, c, B, T := r.dev, r.c, r.B, r.T
	H, KV, D := c.Heads, c.KVHeads, c.HeadDim
	h := dev.Alloc(B, T, c.Width)
	dev.RMSNorm(h, x, l.ln1, c.Eps)
	q := l.q.Forward(dev, h).Reshape(B, T, H, D)
	k := l.k.Forward(dev, h).Reshape(B, T, KV, D)
	v := l.v.Forward(dev, h).Reshape(B, T, KV, D)
	dev.Free(h)
	if l.qNorm != nil {
		q, k = r.headNorm(q, l.qNorm), r.headNorm(k, l.kNorm)
	}
	r.rope(q)
	r.rope(k)
	k, v = r.repeatKV(k), r.repeatKV(v)
	a := dev.Alloc(B, T, H*D)
	dev.Attention(a, q.Reshape(B, T, H*D), k.Reshape(B, T, H*D), v.Reshape(B, T, H*D),
		backend.AttentionParams{Heads: H, Scale: float32(1 / math.Sqrt(float64(D))), Causal: true})
	dev.Free(q)
	dev.Free(k)
	dev.Free(v)
	l.o.AddInto(dev, x, a)
	dev.Free(a)

	h = dev.Alloc(B, T, c.Width)
	dev.RMSNorm(h, x, l.ln2, c.Eps)
	g := l.gate.Forward(dev, h)
	dev.Unary(backend.SiLU, g, g)
	u := l.up.Forward(dev, h)
	dev.Free(h)
	dev.Binary(backend.Mul, g, g, u)
	dev.Free(u)
	l.down.AddInto(dev, x, g)
	dev.Free(g)
}

// headNorm returns Qwen3's per-head RMSNorm of x [B, T, N, D] (q_norm,
// k_norm) and frees x.
func (r *run) headNorm(x, w *backend.Tensor) *backend.Tensor {
	out := r.dev.Alloc(x.Shape...)
	r.dev.RMSNorm(out, x, w, r.c.Eps)
	r.dev.Free(x)
	return out
}

// rope rotates x [B, T, N, D] in place as transformers' apply_rotary_pos_emb:
// x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁) of its halves.
func (r *run) rope(x *backend.Tensor) {
	dev := r.dev
	B, T, N, D := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	x1, x2 := dev.Alloc(B, T, N, D/2), dev.Alloc(B, T, N, D/2)
	dev.Slice(x1, x, 3, 0)
	dev.Slice(x2, x, 3, D/2)
	dev.Unary(backend.Neg, x2, x2)
	rot := dev.Alloc(B, T, N, D)
	dev.Concat(rot, 3, x2, x1)
	dev.Free(x1)
	dev.Free(x2)
	dev.Binary(backend.Mul, rot, rot, r.sin)
	dev.Binary(backend.Mul, x, x, r.cos)
	dev.Binary(backend.Add, x, x, rot)
	dev.Free(rot)
}

// repeatKV returns x [B, T, KV, D] with each key/value head repeated for
// the Heads/KV query heads that share it ([B, T, Heads, D], head h reading
// key/value head h/(Heads/KV), as transformers' repeat_kv); x itself when
// every query head has its own. It frees x otherwise.
func (r *run) repeatKV(x *backend.Tensor) *backend.Tensor {
	c := r.c
	g := c.Heads / c.KVHeads
	if g == 1 {
		return x
	}
	one := x.Reshape(r.B, r.T, c.KVHeads, 1, c.HeadDim)
	parts := make([]*backend.Tensor, g)
	for i := range parts {
		parts[i] = one
	}
	out := r.dev.Alloc(r.B, r.T, c.KVHeads, g, c.HeadDim)
	r.dev.Concat(out, 3, parts...)
	r.dev.Free(x)
	return out.Reshape(r.B, r.T, c.Heads, c.HeadDim)
}
