// Package nextdit implements Z-Image's diffusion transformer, the
// single-stream "S3-DiT" (ComfyUI's NextDiT with Z-Image modulation), as
// diffusers' ZImageTransformer2DModel computes it for text-to-image.
//
// The latent [B, 16, H, W] is cut into 2×2 patches whose values are taken
// channel-last ((ph, pw, c), not Flux's (c, ph, pw)) and embedded; the
// image tokens are padded to a multiple of 32 with a learned x_pad_token
// and refined by noise_refiner blocks. The LLM text states are
// RMS-normalised and embedded (cap_embedder), padded to a multiple of 32
// with a learned cap_pad_token and refined by context_refiner blocks. Then
// [image, text] runs through the main layers as one sequence — pad tokens
// included, attention is not masked within a sample — and a final
// adaptive LayerNorm maps the image tokens back to patches. Every block is
// pre- and post-RMS-normed attention and SwiGLU feed-forward; the image
// and main blocks are modulated by the timestep embedding (scale 1+s and
// tanh gates, no shift), the context refiner is not. Attention has
// per-head RMS query/key norms and a 3-axis RoPE (base 256) over positions
// (1+k, 0, 0) for the k-th text token and (Lt+1, h, w) for the image
// patch at (h, w), Lt the padded text length; pad image tokens sit at
// (0, 0, 0).
//
// Checkpoints name the tensors as diffusers stores them
// (all_x_embedder.2-1, attention.to_q/to_k/to_v, attention.to_out.0,
// attention.norm_q/norm_k, all_final_layer.2-1) or as ComfyUI's files do
// (x_embedder, fused attention.qkv, attention.out, attention.q_norm/k_norm,
// final_layer), under a root prefix. The projections are kept fused
// (q‖k‖v in one matrix) in both cases.
package nextdit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// PadMultiple is the token multiple both sequences are padded to
// (diffusers' SEQ_MULTI_OF, ComfyUI's pad_tokens_multiple).
const PadMultiple = 32

// FinalEps is the epsilon of the final layer's LayerNorm.
const FinalEps = 1e-6

// FreqDim is the width of the sinusoidal timestep embedding.
const FreqDim = 256

// Defaults of the released Z-Image models that shapes cannot tell (a
// diffusers folder's transformer/config.json may say otherwise).
var (
	DefaultAxesDim   = []int{32, 48, 48}
	DefaultTheta     = 256.0
	DefaultTimeScale = float32(1000)
	DefaultEps       = float32(1e-5)
)

// Config describes a Z-Image transformer.
type Config struct {
	InChannels int // latent channels (16)
	Patch      int // patch size (2)
	Width      int // dim (3840)
	Heads      int // n_heads (30)
	HeadDim    int // Width / Heads (128)
	Layers     int // main layers (30)
	Refiners   int // noise_refiner and context_refiner blocks each (2)
	FF         int // feed-forward hidden width (10240)
	CapDim     int // text-state width (Qwen3-4B: 2560)
	AdaDim     int // timestep embedding width, the modulations' input (min(Width, 256))
	TimeMid    int // hidden width of the timestep MLP (1024)
	AxesDim    []int
	Theta      float64
	TimeScale  float32 // t_scale: the timestep is multiplied by it before embedding
	Eps        float32 // norm_eps of every RMSNorm
	QKNorm     bool
	OutBias    bool // attention output projections have biases
	// Comfy is ComfyUI's naming (x_embedder, attention.qkv, final_layer)
	// instead of diffusers'.
	Comfy bool
	// axesSet: AxesDim came from a config.json.
	axesSet bool
}

// String is a one-line summary.
func (c Config) String() string {
	return fmt.Sprintf("width %d (%d heads × %d), %d layers + %d+%d refiners, ff %d, text %d, patch %d, in %d, rope %v θ %g",
		c.Width, c.Heads, c.HeadDim, c.Layers, c.Refiners, c.Refiners, c.FF, c.CapDim, c.Patch, c.InChannels, c.AxesDim, c.Theta)
}

// names are the tensor names that differ between the two layouts.
type names struct {
	x, final          string // embedder and final layer roots
	out, qNorm, kNorm string // under a block's attention.
	q, k, v, qkv      string // separate (diffusers) or fused (ComfyUI) projections
}

var (
	diffusersNames = names{x: "all_x_embedder.%d-1", final: "all_final_layer.%d-1", out: "to_out.0", qNorm: "norm_q", kNorm: "norm_k", q: "to_q", k: "to_k", v: "to_v"}
	comfyNames     = names{x: "x_embedder", final: "final_layer", out: "out", qNorm: "q_norm", kNorm: "k_norm", qkv: "qkv"}
)

func (c Config) names() names {
	n := diffusersNames
	if c.Comfy {
		n = comfyNames
	} else {
		n.x, n.final = fmt.Sprintf(n.x, c.Patch), fmt.Sprintf(n.final, c.Patch)
	}
	return n
}

// Has reports whether a source holds a Z-Image transformer under prefix, in
// either layout.
func Has(src weights.Source, prefix string) bool {
	for _, n := range []string{"x_embedder.weight", "all_x_embedder.2-1.weight"} {
		if _, ok := src.Info(prefix + n); ok {
			if _, ok := src.Info(prefix + "cap_embedder.1.weight"); ok {
				return true
			}
		}
	}
	return false
}

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix, then applies a diffusers transformer/config.json when configJSON
// is not nil (axes_dims, rope_theta, t_scale, norm_eps, n_heads when there
// are no query norms to tell the head width).
func ConfigFromWeights(src weights.Source, prefix string, configJSON []byte) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	c := Config{AxesDim: DefaultAxesDim, Theta: DefaultTheta, TimeScale: DefaultTimeScale, Eps: DefaultEps}
	var xw []int
	if xw = shape("x_embedder.weight"); xw != nil {
		// ComfyUI's names do not carry the patch size: Z-Image's is 2.
		c.Comfy, c.Patch = true, 2
	} else {
		for p := 1; p <= 8 && xw == nil; p++ {
			if xw = shape(fmt.Sprintf("all_x_embedder.%d-1.weight", p)); xw != nil {
				c.Patch = p
			}
		}
	}
	if len(xw) != 2 {
		return Config{}, fmt.Errorf("nextdit: no %sx_embedder.weight (nor all_x_embedder.2-1.weight) [width, patch²·channels]", prefix)
	}
	c.Width = xw[0]
	n := c.names()
	fo := shape(n.final + ".linear.weight")
	if len(fo) != 2 || fo[1] != c.Width {
		return Config{}, fmt.Errorf("nextdit: %s%s.linear.weight has shape %v, want [patch²·channels, %d]", prefix, n.final, fo, c.Width)
	}
	pp := c.Patch * c.Patch
	if xw[1]%pp != 0 || fo[0] != xw[1] {
		return Config{}, fmt.Errorf("nextdit: the embedder takes %d and the final layer gives %d values a patch; want the same multiple of %d", xw[1], fo[0], pp)
	}
	c.InChannels = xw[1] / pp
	count := func(format string) int {
		k := 0
		for shape(fmt.Sprintf(format, k)) != nil {
			k++
		}
		return k
	}
	c.Layers = count("layers.%d.attention_norm1.weight")
	c.Refiners = count("noise_refiner.%d.attention_norm1.weight")
	if c.Layers == 0 || c.Refiners == 0 {
		return Config{}, fmt.Errorf("nextdit: %d layers and %d noise refiners under %q", c.Layers, c.Refiners, prefix)
	}
	if k := count("context_refiner.%d.attention_norm1.weight"); k != c.Refiners {
		return Config{}, fmt.Errorf("nextdit: %d noise refiners but %d context refiners", c.Refiners, k)
	}
	if qn := shape("layers.0.attention." + n.qNorm + ".weight"); len(qn) == 1 {
		c.QKNorm, c.HeadDim = true, qn[0]
	}
	if w1 := shape("layers.0.feed_forward.w1.weight"); len(w1) == 2 {
		c.FF = w1[0]
	}
	if ce := shape("cap_embedder.0.weight"); len(ce) == 1 {
		c.CapDim = ce[0]
	}
	if m := shape("t_embedder.mlp.2.weight"); len(m) == 2 {
		c.AdaDim, c.TimeMid = m[0], m[1]
	}
	_, c.OutBias = src.Info(prefix + "layers.0.attention." + n.out + ".bias")
	if configJSON != nil {
		if err := c.applyJSON(configJSON); err != nil {
			return Config{}, err
		}
	}
	if c.HeadDim == 0 {
		c.HeadDim = 128
	}
	if configJSON == nil || !c.axesSet {
		// Z-Image's split of the head between the axes, a quarter for the
		// sequence and three eighths for each image axis ([32, 48, 48] at
		// 128), as files without a config need.
		if c.HeadDim%8 == 0 {
			c.AxesDim = []int{c.HeadDim / 4, 3 * c.HeadDim / 8, 3 * c.HeadDim / 8}
		}
	}
	if c.HeadDim <= 0 || c.Width%c.HeadDim != 0 {
		return Config{}, fmt.Errorf("nextdit: width %d is not a whole number of %d-wide heads", c.Width, c.HeadDim)
	}
	c.Heads = c.Width / c.HeadDim
	if !c.Comfy {
		if q := shape("layers.0.attention.to_k.weight"); len(q) == 2 && q[0] != c.Width {
			return Config{}, fmt.Errorf("nextdit: key projection of %d rows for width %d: grouped key/value heads are not supported", q[0], c.Width)
		}
	} else if q := shape("layers.0.attention.qkv.weight"); len(q) == 2 && q[0] != 3*c.Width {
		return Config{}, fmt.Errorf("nextdit: fused q‖k‖v projection of %d rows for width %d: grouped key/value heads are not supported", q[0], c.Width)
	}
	return c, c.check()
}

// applyJSON takes what a diffusers transformer/config.json says.
func (c *Config) applyJSON(data []byte) error {
	var j struct {
		AxesDims  []int    `json:"axes_dims"`
		Theta     *float64 `json:"rope_theta"`
		TScale    *float64 `json:"t_scale"`
		Eps       *float64 `json:"norm_eps"`
		Heads     *int     `json:"n_heads"`
		KVHeads   *int     `json:"n_kv_heads"`
		Siglip    *int     `json:"siglip_feat_dim"`
		PatchSize []int    `json:"all_patch_size"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("transformer/config.json: %w", err)
	}
	if j.AxesDims != nil {
		c.AxesDim, c.axesSet = j.AxesDims, true
	}
	if j.Theta != nil {
		c.Theta = *j.Theta
	}
	if j.TScale != nil {
		c.TimeScale = float32(*j.TScale)
	}
	if j.Eps != nil {
		c.Eps = float32(*j.Eps)
	}
	if j.Heads != nil && *j.Heads > 0 {
		if c.QKNorm && c.Width/(*j.Heads) != c.HeadDim {
			return fmt.Errorf("transformer/config.json: n_heads %d, but the query norms are %d wide for width %d", *j.Heads, c.HeadDim, c.Width)
		}
		c.HeadDim = c.Width / *j.Heads
		if j.KVHeads != nil && *j.KVHeads != *j.Heads {
			return fmt.Errorf("transformer/config.json: n_kv_heads %d ≠ n_heads %d is not supported", *j.KVHeads, *j.Heads)
		}
	}
	return nil
}

func (c Config) check() error {
	sum := 0
	for _, a := range c.AxesDim {
		if a <= 0 || a%2 != 0 {
			return fmt.Errorf("nextdit: rope axes %v: each must be even and positive", c.AxesDim)
		}
		sum += a
	}
	if len(c.AxesDim) != 3 || sum != c.HeadDim {
		return fmt.Errorf("nextdit: rope axes %v: want 3 axes summing to the head width %d", c.AxesDim, c.HeadDim)
	}
	if c.FF <= 0 || c.CapDim <= 0 || c.AdaDim <= 0 || c.TimeMid <= 0 {
		return fmt.Errorf("nextdit: incomplete config (feed-forward %d, text %d, timestep %d/%d)", c.FF, c.CapDim, c.AdaDim, c.TimeMid)
	}
	return nil
}

// block is one transformer block; mod is nil for the context refiner.
type block struct {
	qkv, out     *nn.Linear
	qNorm, kNorm *backend.Tensor
	norm1, norm2 *backend.Tensor // attention_norm1/2
	ffn1, ffn2   *backend.Tensor // ffn_norm1/2
	w1, w2, w3   *nn.Linear
	mod          *nn.Linear // adaLN_modulation.0: AdaDim → 4·Width
}

// Model is a loaded Z-Image transformer.
type Model struct {
	Config         Config
	xEmbed         *nn.Linear
	capNorm        *backend.Tensor
	capEmbed       *nn.Linear
	time           nn.MLP2
	xPad, capPad   *backend.Tensor // [1, 1, Width]
	noise, context []block
	layers         []block
	finalMod       *nn.Linear // SiLU, then AdaDim → Width
	finalLin       *nn.Linear
}

// Load builds the model on dev from b, prefixed at the root
// ConfigFromWeights was given. Missing or misshaped tensors are reported
// together by b.Err; a ComfyUI-saved file's unused norm_final.weight is
// claimed.
func Load(b *weights.Builder, dev backend.Device, c Config) (*Model, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	D, n := c.Width, c.names()
	lin := func(name string, in, out int, bias bool) *nn.Linear { return nn.LoadLinear(b.Sub(name), in, out, bias) }
	m := &Model{
		Config:   c,
		xEmbed:   lin(n.x, c.Patch*c.Patch*c.InChannels, D, true),
		capNorm:  b.Tensor("cap_embedder.0.weight", c.CapDim),
		capEmbed: lin("cap_embedder.1", c.CapDim, D, true),
		time:     nn.MLP2{lin("t_embedder.mlp.0", FreqDim, c.TimeMid, true), lin("t_embedder.mlp.2", c.TimeMid, c.AdaDim, true)},
		xPad:     b.Tensor("x_pad_token", 1, D),
		capPad:   b.Tensor("cap_pad_token", 1, D),
		finalMod: lin(n.final+".adaLN_modulation.1", c.AdaDim, D, true),
		finalLin: lin(n.final+".linear", D, c.Patch*c.Patch*c.InChannels, true),
	}
	if b.Has("norm_final.weight") {
		b.Claim("norm_final.weight")
	}
	var joins []func()
	load := func(p string, modulated bool) block {
		a := p + "attention."
		bl := block{
			out:   lin(a+n.out, D, D, c.OutBias),
			norm1: b.Tensor(p+"attention_norm1.weight", D), norm2: b.Tensor(p+"attention_norm2.weight", D),
			ffn1: b.Tensor(p+"ffn_norm1.weight", D), ffn2: b.Tensor(p+"ffn_norm2.weight", D),
			w1: lin(p+"feed_forward.w1", D, c.FF, false), w2: lin(p+"feed_forward.w2", c.FF, D, false),
			w3: lin(p+"feed_forward.w3", D, c.FF, false),
		}
		if c.QKNorm {
			bl.qNorm, bl.kNorm = b.Tensor(a+n.qNorm+".weight", c.HeadDim), b.Tensor(a+n.kNorm+".weight", c.HeadDim)
		}
		if c.Comfy {
			bl.qkv = lin(a+n.qkv, D, 3*D, false)
		} else {
			q, k, v := lin(a+n.q, D, D, false), lin(a+n.k, D, D, false), lin(a+n.v, D, D, false)
			bl.qkv = &nn.Linear{In: D, Out: 3 * D}
			dst := bl.qkv
			joins = append(joins, func() {
				dst.Weight = nn.Concat(dev, 0, q.Weight, k.Weight, v.Weight)
				nn.FreeAll(dev, q.Weight, k.Weight, v.Weight)
			})
		}
		if modulated {
			bl.mod = lin(p+"adaLN_modulation.0", c.AdaDim, 4*D, true)
		}
		return bl
	}
	for i := range c.Refiners {
		m.noise = append(m.noise, load(fmt.Sprintf("noise_refiner.%d.", i), true))
		m.context = append(m.context, load(fmt.Sprintf("context_refiner.%d.", i), false))
	}
	for i := range c.Layers {
		m.layers = append(m.layers, load(fmt.Sprintf("layers.%d.", i), true))
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("nextdit: %w", err)
	}
	for _, j := range joins {
		j()
	}
	m.xPad, m.capPad = m.xPad.Reshape(1, 1, D), m.capPad.Reshape(1, 1, D)
	return m, nil
}

// Rope returns the rotary tables cos, sin [N, HeadDim] of 3-axis positions
// as diffusers' Z-Image RopeEmbedder computes them: per axis of width d the
// frequencies 1/θ^(2j/d) in float64, the angle position·frequency rounded
// to float32, its cosine and sine (each pair's value twice, interleaved).
func Rope(pos [][3]int, axesDim []int, theta float64) (cos, sin []float32) {
	width := 0
	for _, d := range axesDim {
		width += d
	}
	cos, sin = make([]float32, len(pos)*width), make([]float32, len(pos)*width)
	freqs := make([][]float64, len(axesDim))
	for a, d := range axesDim {
		for j := 0; j < d; j += 2 {
			freqs[a] = append(freqs[a], 1/math.Pow(theta, float64(j)/float64(d)))
		}
	}
	for n, p := range pos {
		off := n * width
		for a, d := range axesDim {
			for j, f := range freqs[a] {
				angle := float64(float32(float64(p[a]) * f))
				s, c := math.Sincos(angle)
				cos[off+2*j], cos[off+2*j+1] = float32(c), float32(c)
				sin[off+2*j], sin[off+2*j+1] = float32(s), float32(s)
			}
			off += d
		}
	}
	return cos, sin
}

// Padded is n rounded up to a multiple of PadMultiple.
func Padded(n int) int { return (n + PadMultiple - 1) / PadMultiple * PadMultiple }

// Positions returns the RoPE positions of the joint sequence [image, text]
// for an image of ht × wt patches and text of textLen tokens: image
// patches (Lt+1, h, w), then their padding at (0, 0, 0), then text token k
// at (1+k, 0, 0) with its padding continuing the count; Lt is the padded
// text length.
func Positions(ht, wt, textLen int) [][3]int {
	n, lt := ht*wt, Padded(textLen)
	pos := make([][3]int, 0, Padded(n)+lt)
	for h := range ht {
		for w := range wt {
			pos = append(pos, [3]int{lt + 1, h, w})
		}
	}
	for len(pos) < Padded(n) {
		pos = append(pos, [3]int{})
	}
	for k := range lt {
		pos = append(pos, [3]int{1 + k, 0, 0})
	}
	return pos
}

// Half16Limit bounds the attention and feed-forward outputs on float16
// devices, as ComfyUI's NextDiT does (clamp_fp16: ±65504): Z-Image's
// activations outgrow float16 otherwise.
const Half16Limit = 65504

// run holds the per-call state of a forward pass.
type run struct {
	dev  backend.Device
	c    Config
	half bool // a float16 device: clamp as ComfyUI does
}

// clamp bounds x to ±Half16Limit on float16 devices.
func (r *run) clamp(x *backend.Tensor) {
	if r.half {
		r.dev.Clamp(x, x, -Half16Limit, Half16Limit)
	}
}

// Forward runs the transformer on latents x [B, InChannels, H, W] (H and W
// multiples of the patch size), text states txt [B, T, CapDim] (every row
// T valid tokens: rows of other lengths run as separate calls) and one
// timestep per row in the model's convention (diffusers passes
// (1000 − t)/1000, i.e. 1 − σ; ComfyUI 1 − σ as well), and returns the
// model's raw output [B, InChannels, H, W] (the negated flow velocity: the
// pipelines negate it).
func (m *Model) Forward(ctx context.Context, dev backend.Device, x, txt *backend.Tensor, t []float32) (*backend.Tensor, error) {
	c := m.Config
	if x == nil || txt == nil {
		return nil, errors.New("nextdit: nil input tensor")
	}
	p := c.Patch
	if len(x.Shape) != 4 || x.Shape[1] != c.InChannels || x.Shape[2]%p != 0 || x.Shape[3]%p != 0 || x.Shape[2] == 0 || x.Shape[3] == 0 {
		return nil, fmt.Errorf("nextdit: latent shape %v, want [B, %d, H, W] with H and W multiples of %d", x.Shape, c.InChannels, p)
	}
	B, H, W := x.Shape[0], x.Shape[2], x.Shape[3]
	if len(txt.Shape) != 3 || txt.Shape[0] != B || txt.Shape[2] != c.CapDim || txt.Shape[1] == 0 {
		return nil, fmt.Errorf("nextdit: text states of shape %v, want [%d, T, %d]", txt.Shape, B, c.CapDim)
	}
	if len(t) != B {
		return nil, fmt.Errorf("nextdit: %d timesteps for a batch of %d", len(t), B)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &run{dev: dev, c: c, half: backend.IsHalf(dev)}
	D, T := c.Width, txt.Shape[1]
	ht, wt := H/p, W/p
	N := ht * wt
	Np, Tp := Padded(N), Padded(T)

	// Timestep embedding: cos‖sin of t·t_scale, then the MLP.
	scaled := make([]float32, B)
	for i, v := range t {
		scaled[i] = v * c.TimeScale
	}
	e := dev.Alloc(B, FreqDim)
	dev.TimestepEmbedding(e, scaled, backend.TimestepParams{Dim: FreqDim, FlipSinToCos: true, MaxPeriod: 10000, Scale: 1})
	temb := m.time.Forward(dev, e)
	dev.Free(e)
	defer dev.Free(temb)

	pos := Positions(ht, wt, T)
	cosv, sinv := Rope(pos, c.AxesDim, c.Theta)
	cos, sin := dev.Upload(cosv, 1, len(pos), 1, c.HeadDim), dev.Upload(sinv, 1, len(pos), 1, c.HeadDim)
	defer nn.FreeAll(dev, cos, sin)
	xcos, xsin := r.rows(cos, 0, Np), r.rows(sin, 0, Np)
	tcos, tsin := r.rows(cos, Np, Tp), r.rows(sin, Np, Tp)
	defer nn.FreeAll(dev, xcos, xsin, tcos, tsin)

	// Image tokens: channel-last 2×2 patches, embedded, padded, refined.
	patches := nn.Permute(dev, x.Reshape(B, c.InChannels, ht, p, wt, p), 0, 2, 4, 3, 5, 1)
	xe := m.xEmbed.Forward(dev, patches.Reshape(B, N, p*p*c.InChannels))
	dev.Free(patches)
	img := r.pad(xe, m.xPad, Np)
	for i := range m.noise {
		if err := ctx.Err(); err != nil {
			dev.Free(img)
			return nil, err
		}
		r.block(&m.noise[i], img, temb, xcos, xsin)
	}

	// Text tokens: RMSNorm, embedded, padded, refined.
	tn := dev.Alloc(txt.Shape...)
	dev.RMSNorm(tn, txt, m.capNorm, c.Eps)
	te := m.capEmbed.Forward(dev, tn)
	dev.Free(tn)
	text := r.pad(te, m.capPad, Tp)
	for i := range m.context {
		r.block(&m.context[i], text, nil, tcos, tsin)
	}

	joint := nn.Concat(dev, 1, img, text)
	nn.FreeAll(dev, img, text)
	for i := range m.layers {
		if err := ctx.Err(); err != nil {
			dev.Free(joint)
			return nil, err
		}
		r.block(&m.layers[i], joint, temb, cos, sin)
	}
	out := dev.Alloc(B, N, D)
	dev.Slice(out, joint, 1, 0)
	dev.Free(joint)

	// Final layer: LayerNorm·(1 + Linear(SiLU(temb))), Linear.
	st := dev.Alloc(temb.Shape...)
	dev.Unary(backend.SiLU, st, temb)
	scale := m.finalMod.Forward(dev, st)
	dev.Free(st)
	dev.Affine(scale, scale, 1, 1)
	h := dev.Alloc(out.Shape...)
	dev.LayerNorm(h, out, nil, nil, FinalEps)
	dev.Free(out)
	dev.Binary(backend.Mul, h, h, scale.Reshape(B, 1, D))
	dev.Free(scale)
	y := m.finalLin.Forward(dev, h)
	dev.Free(h)
	// Unpatchify: [B, ht, wt, p, p, C] → [B, C, ht, p, wt, p].
	res := nn.Permute(dev, y.Reshape(B, ht, wt, p, p, c.InChannels), 0, 5, 1, 3, 2, 4)
	dev.Free(y)
	if err := dev.Sync(ctx); err != nil {
		dev.Free(res)
		return nil, fmt.Errorf("nextdit: %w", err)
	}
	return res.Reshape(B, c.InChannels, H, W), nil
}

// rows returns rows [from, from+n) of a rotary table [1, L, 1, hd].
func (r *run) rows(t *backend.Tensor, from, n int) *backend.Tensor {
	out := r.dev.Alloc(1, n, 1, t.Shape[3])
	r.dev.Slice(out, t, 1, from)
	return out
}

// pad returns x [B, n, D] followed by copies of the pad token [1, 1, D]
// up to length to, and frees x.
func (r *run) pad(x, tok *backend.Tensor, to int) *backend.Tensor {
	dev := r.dev
	B, n := x.Shape[0], x.Shape[1]
	if n == to {
		return x
	}
	parts := []*backend.Tensor{x.Reshape(B, n, x.Shape[2])}
	one := nn.Concat(dev, 1, repeat(tok, to-n)...)
	fill := one
	if B > 1 {
		fill = nn.Concat(dev, 0, repeat(one, B)...)
		dev.Free(one)
	}
	out := nn.Concat(dev, 1, append(parts, fill)...)
	nn.FreeAll(dev, x, fill)
	return out
}

func repeat(t *backend.Tensor, n int) []*backend.Tensor {
	out := make([]*backend.Tensor, n)
	for i := range out {
		out[i] = t
	}
	return out
}

// rmsNorm returns RMSNorm(x)·w over the last dimension.
func (r *run) rmsNorm(x, w *backend.Tensor) *backend.Tensor {
	y := r.dev.Alloc(x.Shape...)
	r.dev.RMSNorm(y, x, w, r.c.Eps)
	return y
}

// block updates x [B, S, D] in place: x += g₁·norm2(attn(norm1(x)·s₁)),
// x += g₂·ffn_norm2(ffn(ffn_norm1(x)·s₂)), with (s₁, g₁, s₂, g₂) = (1 +
// scale, tanh gate) of the block's modulation of temb, or s = g = 1 when
// the block has none (temb nil).
func (r *run) block(bl *block, x, temb, cos, sin *backend.Tensor) {
	dev, D := r.dev, r.c.Width
	var mods []*backend.Tensor // scale_msa, gate_msa, scale_mlp, gate_mlp
	if bl.mod != nil {
		mod := bl.mod.Forward(dev, temb)
		mods = nn.Chunks(dev, mod, 4, D)
		dev.Free(mod)
		defer nn.FreeAll(dev, mods...)
		for i, m := range mods {
			if i%2 == 0 {
				dev.Affine(m, m, 1, 1)
			} else {
				dev.Unary(backend.Tanh, m, m)
			}
		}
	}
	h := r.rmsNorm(x, bl.norm1)
	if mods != nil {
		dev.Binary(backend.Mul, h, h, mods[0])
	}
	a := r.attention(bl, h, cos, sin)
	dev.Free(h)
	r.clamp(a)
	r.residual(x, a, bl.norm2, mods, 1)

	h = r.rmsNorm(x, bl.ffn1)
	if mods != nil {
		dev.Binary(backend.Mul, h, h, mods[2])
	}
	g := bl.w1.Forward(dev, h)
	u := bl.w3.Forward(dev, h)
	dev.Free(h)
	dev.Unary(backend.SiLU, g, g)
	dev.Binary(backend.Mul, g, g, u)
	dev.Free(u)
	r.clamp(g)
	f := bl.w2.Forward(dev, g)
	dev.Free(g)
	if mods != nil {
		r.clamp(f) // ComfyUI leaves the context refiner's feed-forward output as it is
	}
	r.residual(x, f, bl.ffn2, mods, 3)
}

// residual does x += gate·RMSNorm(y)·w (gate mods[i], or 1 without
// modulation) and frees y.
func (r *run) residual(x, y, w *backend.Tensor, mods []*backend.Tensor, i int) {
	n := r.rmsNorm(y, w)
	r.dev.Free(y)
	if mods != nil {
		nn.GatedAdd(r.dev, x, mods[i], n)
	} else {
		r.dev.Binary(backend.Add, x, x, n)
	}
	r.dev.Free(n)
}

// attention returns the block's self-attention of h [B, S, D]: fused q‖k‖v,
// per-head RMS query/key norms, the rotary embedding, softmax(q·kᵀ/√hd)·v
// and the output projection.
func (r *run) attention(bl *block, h, cos, sin *backend.Tensor) *backend.Tensor {
	dev, c := r.dev, r.c
	B, S, D := h.Shape[0], h.Shape[1], c.Width
	qkv := bl.qkv.Forward(dev, h)
	part := func(i int, norm *backend.Tensor) *backend.Tensor {
		y := dev.Alloc(B, S, D)
		dev.Slice(y, qkv, 2, i*D)
		y4 := y.Reshape(B, S, c.Heads, c.HeadDim)
		if norm == nil {
			return y4
		}
		n := dev.Alloc(y4.Shape...)
		dev.RMSNorm(n, y4, norm, c.Eps)
		dev.Free(y)
		return n
	}
	q, k, v := part(0, bl.qNorm), part(1, bl.kNorm), part(2, nil)
	dev.Free(qkv)
	nn.RotatePairs(dev, q, cos, sin)
	nn.RotatePairs(dev, k, cos, sin)
	o := dev.Alloc(B, S, D)
	dev.Attention(o, q.Reshape(B, S, D), k.Reshape(B, S, D), v.Reshape(B, S, D),
		backend.AttentionParams{Heads: c.Heads, Scale: float32(1 / math.Sqrt(float64(c.HeadDim)))})
	nn.FreeAll(dev, q, k, v)
	y := bl.out.Forward(dev, o)
	dev.Free(o)
	return y
}
