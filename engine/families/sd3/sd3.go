// Package sd3 is the Stable Diffusion 3 / 3.5 family (3 Medium, 3.5
// Medium, 3.5 Large, 3.5 Large Turbo): the MMDiT (engine/models/mmdit)
// conditioned on CLIP-L and OpenCLIP bigG penultimate states, padded to
// T5's width and followed by T5-XXL's token states, with the pooled CLIP-L ⊕
// bigG vector; the 16-channel SD3 autoencoder (scale 1.5305, shift 0.0609);
// flow matching with shift 3. It registers itself; import it for its side
// effect (engine/families/all does).
//
// Files are read as users have them: Stability's single files with or
// without text encoders inside (model.diffusion_model., first_stage_model.,
// text_encoders.clip_l/clip_g/t5xxl.transformer.), a diffusion-model-only
// file with separate clip_l / clip_g / t5xxl files (--text-encoder) and a
// VAE, and the diffusers StableDiffusion3Pipeline folder. T5 is optional,
// as ComfyUI allows: without it the text states are CLIP's alone (ComfyUI)
// or followed by zeros (diffusers).
package sd3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/internal/ldm"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/mmdit"
	"github.com/darkroom-ai/darkroom/engine/models/t5"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Name is the family's name.
const Name = "SD3"

func init() { family.Register(Family{}) }

// Family is the SD3 family.
type Family struct{}

// Name returns "SD3".
func (Family) Name() string { return Name }

// Probe claims SD3 transformers (see Probe) and marks them runnable.
func (Family) Probe(k *family.Keys) (family.Detection, bool) {
	d, ok := Probe(k)
	d.Runnable = ok
	return d, ok
}

// Probe claims MMDiT joint blocks (Stability's names) or a diffusers
// SD3Transformer2DModel (joint transformer blocks with a patch-embedding
// convolution and no single-stream blocks), and tells 3 Medium, 3.5 Medium
// (MMDiT-X: a second attention in the first blocks) and 3.5 Large (38
// blocks) apart.
func Probe(k *family.Keys) (family.Detection, bool) {
	if root, key, ok := k.FindUnder(family.NativeRoots, "joint_blocks.", "x_embedder."); ok {
		depth := k.CountBlocks(root + "joint_blocks.")
		return family.Detection{Variant: variant(depth, k.Has(root+"joint_blocks.0.x_block.attn2."), k.Has(root+"joint_blocks.0.x_block.attn.ln_q.")),
			Evidence: []string{k.Key(key), fmt.Sprintf("%d joint blocks", depth)}}, true
	}
	if root, key, ok := k.FindUnder(family.DiffusersRoots, "transformer_blocks.", "pos_embed.proj.", "context_embedder."); ok && !k.Has(root+"single_transformer_blocks.") {
		depth := k.CountBlocks(root + "transformer_blocks.")
		d := family.Detection{Variant: variant(depth, k.Has(root+"transformer_blocks.0.attn2."), k.Has(root+"transformer_blocks.0.attn.norm_q.")),
			Evidence: []string{k.Key(key), fmt.Sprintf("%d joint blocks", depth)}}
		return d, true
	}
	return family.Detection{}, false
}

func variant(depth int, attn2, qkNorm bool) string {
	switch {
	case attn2:
		return "3.5 Medium"
	case depth >= 38:
		return "3.5 Large"
	case qkNorm:
		return "3.5"
	}
	return "3 Medium"
}

// Where each component's tensors live in the layouts users have.
var (
	transformerRoots = []string{"model.diffusion_model.", "transformer.", ""}
	clipLRoots       = []string{"text_encoders.clip_l.transformer.", "cond_stage_model.transformer."}
	clipGRoots       = []string{keymap.CLIPGPrefix, "text_encoder_2."}
	t5Roots          = []string{"text_encoders.t5xxl.transformer.", "text_encoder_3."}
)

// LatentFormat is SD3's latent space: 16 channels, factor 8, scale 1.5305
// and shift 0.0609, ComfyUI's latent→RGB factors for SD3 and TAESD3.
func LatentFormat() family.LatentFormat {
	return family.LatentFormat{
		Channels: 16, Factor: 8, Scale: 1.5305, Shift: 0.0609,
		RGB: [][3]float32{
			{-0.0922, -0.0175, 0.0749}, {0.0311, 0.0633, 0.0954}, {0.1994, 0.0927, 0.0458}, {0.0856, 0.0339, 0.0902},
			{0.0587, 0.0272, -0.0496}, {-0.0006, 0.1104, 0.0309}, {0.0978, 0.0306, 0.0427}, {-0.0042, 0.1038, 0.1358},
			{-0.0194, 0.0020, 0.0669}, {-0.0488, 0.0130, -0.0268}, {0.0922, 0.0988, 0.0951}, {-0.0278, 0.0524, -0.0542},
			{0.0332, 0.0456, 0.0895}, {-0.0069, -0.0030, -0.0810}, {-0.0596, -0.0465, -0.0293}, {-0.1448, -0.1463, -0.1189},
		},
		RGBBias: [3]float32{0.2394, 0.2135, 0.1925},
		TAESD:   "taesd3_decoder.safetensors",
	}
}

// Defaults: ComfyUI's SD3.5 workflows and the model cards (28 steps, CFG
// 4.5; Large Turbo 4 steps without CFG); diffusers' 256 T5 tokens.
var (
	Defaults      = family.Defaults{Width: 1024, Height: 1024, Steps: 28, CFG: 4.5, Sampler: "euler", Scheduler: "simple", MaxSequenceLength: 256}
	TurboDefaults = family.Defaults{Width: 1024, Height: 1024, Steps: 4, CFG: 1, Sampler: "euler", Scheduler: "simple", MaxSequenceLength: 256}
)

// ComfyMinLength is ComfyUI's T5 padding for SD3: prompts are padded to at
// least 77 tokens and never truncated.
const ComfyMinLength = 77

// parts locates the components of a source.
type parts struct {
	root, vae, l, g, t5 string
	mc                  mmdit.Config
	merr                error
}

func locate(src *family.Source) parts {
	k := src.Keys()
	var p parts
	p.root = "-"
	for _, r := range transformerRoots {
		if k.Has(r+"x_embedder.proj.weight") || k.Has(r+"pos_embed.proj.weight") {
			p.root = r
			break
		}
	}
	if p.root == "-" {
		p.root, p.merr = "", errors.New("no SD3 transformer weights")
	} else {
		p.mc, p.merr = mmdit.ConfigFromWeights(src, p.root)
		if p.merr == nil {
			p.merr = readHeadDim(src, &p.mc)
		}
	}
	if k.Has(keymap.VAEPrefix + "decoder.conv_in.weight") {
		p.vae = keymap.VAEPrefix
	}
	const emb = "text_model.embeddings.token_embedding.weight"
	p.l, p.g = ldm.FirstRoot(k, clipLRoots, emb), ldm.FirstRoot(k, clipGRoots, emb)
	p.t5 = ldm.T5Root(k, t5Roots)
	return p
}

// readHeadDim takes the head width from a diffusers folder's
// transformer/config.json (attention_head_dim): a model without query/key
// norms does not show it in its shapes.
func readHeadDim(src *family.Source, c *mmdit.Config) error {
	b, ok := src.JSON["transformer/config.json"]
	if !ok {
		return nil
	}
	var cfg struct {
		HeadDim int `json:"attention_head_dim"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("transformer/config.json: %w", err)
	}
	if cfg.HeadDim == 0 {
		return nil
	}
	if err := c.SetHeadDim(cfg.HeadDim); err != nil {
		return fmt.Errorf("transformer/config.json: %w", err)
	}
	return nil
}

// missing names the files a model still needs, or "" (T5 is optional).
func (p parts) missing() string {
	var lack, need []string
	if p.vae == "" {
		lack, need = append(lack, "VAE"), append(need, "--vae (the SD3 VAE, e.g. diffusion_pytorch_model.safetensors of the vae/ folder)")
	}
	if p.l == "" {
		lack, need = append(lack, "CLIP-L"), append(need, "--text-encoder clip_l.safetensors")
	}
	if p.g == "" {
		lack, need = append(lack, "CLIP-G"), append(need, "--text-encoder clip_g.safetensors")
	}
	if len(need) == 0 {
		return ""
	}
	return "this SD3 model has no " + strings.Join(lack, ", ") + ": also give " + strings.Join(need, " ") +
		" (and --text-encoder t5xxl_fp16.safetensors for T5, optional)"
}

// Load builds the SD3 components.
func (Family) Load(ctx context.Context, src *family.Source, env family.Env) (*family.Components, error) {
	p := locate(src)
	if p.merr != nil {
		return nil, p.merr
	}
	if msg := p.missing(); msg != "" {
		return nil, errors.New(msg)
	}
	if err := strayTextEncoder(src, p); err != nil {
		return nil, err
	}
	mc := p.mc
	vc, err := vae.ConfigFromWeights(src, p.vae)
	if err != nil {
		return nil, err
	}
	f := LatentFormat()
	if vc.ZChannels != f.Channels {
		return nil, fmt.Errorf("the VAE has %d latent channels; SD3 needs its own 16-channel autoencoder (--vae)", vc.ZChannels)
	}
	if mc.InChannels != vc.ZChannels || mc.OutChannels != vc.ZChannels {
		return nil, fmt.Errorf("the SD3 transformer takes %d and predicts %d channels, the VAE's latents have %d (a ControlNet or inpainting variant is not supported)",
			mc.InChannels, mc.OutChannels, vc.ZChannels)
	}
	if vc.InChannels != 3 {
		return nil, fmt.Errorf("the VAE decodes %d image channels; only RGB (3) is supported", vc.InChannels)
	}
	lc, err := clip.ConfigFromWeights(src, p.l)
	if err != nil {
		return nil, err
	}
	lc.Act = backend.QuickGELU
	gc, err := clip.ConfigFromWeights(src, p.g)
	if err != nil {
		return nil, err
	}
	gc.Act = backend.GELU
	if err := ldm.ReadCLIPHeads(src, "text_encoder/config.json", &lc); err != nil {
		return nil, err
	}
	if err := ldm.ReadCLIPHeads(src, "text_encoder_2/config.json", &gc); err != nil {
		return nil, err
	}
	if gc.Projection == 0 {
		return nil, fmt.Errorf("the CLIP-G text encoder under %q has no text projection (SD3 needs its pooled output)", p.g)
	}
	if lc.Width+gc.Width > mc.JointDim {
		return nil, fmt.Errorf("CLIP-L (%d) and CLIP-G (%d) states are wider than the transformer's %d-wide text input", lc.Width, gc.Width, mc.JointDim)
	}
	if lc.Width+gc.Projection != mc.PooledDim {
		return nil, fmt.Errorf("the transformer takes a %d-wide pooled vector; CLIP-L (%d) and CLIP-G's projection (%d) give %d",
			mc.PooledDim, lc.Width, gc.Projection, lc.Width+gc.Projection)
	}
	var tc t5.Config
	if p.t5 != "" {
		if tc, err = t5.ConfigFromWeights(src, p.t5); err != nil {
			return nil, err
		}
		if tc.Width != mc.JointDim {
			return nil, fmt.Errorf("the T5 text encoder is %d wide; this SD3 transformer attends to %d-wide text states (T5-XXL: t5xxl_fp16.safetensors)", tc.Width, mc.JointDim)
		}
	}
	tokL, tokG, err := ldm.LoadTokenizers(src)
	if err != nil {
		return nil, err
	}
	var tokT *tokenizer.T5
	if p.t5 != "" {
		var t5dir string
		if src.Layout == weights.Diffusers {
			t5dir = src.Path
		}
		if tokT, err = tokenizer.FindT5(t5dir); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dev := env.Device
	b := weights.NewBuilder(src, dev)
	vc.ScalingFactor, vc.ShiftFactor = f.Scale, f.Shift
	autoencoder := vae.Load(b.Sub(strings.TrimSuffix(p.vae, ".")), vc)
	l := clip.Load(b.Sub(strings.TrimSuffix(p.l, ".")), lc)
	g := clip.Load(b.Sub(strings.TrimSuffix(p.g, ".")), gc)
	var t5Model *t5.Encoder
	if p.t5 != "" {
		t5Model = t5.Load(b.Sub(strings.TrimSuffix(p.t5, ".")), tc)
	}
	if err := b.Err(); err != nil {
		return nil, err
	}
	net, err := mmdit.Load(b.Sub(strings.TrimSuffix(p.root, ".")), dev, mc)
	if err != nil {
		return nil, err
	}
	prefixes := []string{p.vae, p.l, p.g, p.root}
	if p.t5 != "" {
		prefixes = append(prefixes, p.t5)
	}
	if err := ldm.CheckUnused(b, "SD3", prefixes...); err != nil {
		return nil, err
	}
	ms, err := family.NewSD3Sampling(family.SD3Shift)
	if err != nil {
		return nil, err
	}
	if cfg, ok := src.JSON["scheduler/scheduler_config.json"]; ok {
		if err := ms.ReadDiffusersScheduler(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(src.Path, "scheduler", "scheduler_config.json"), err)
		}
	}
	defaults := Defaults
	if turbo(src) {
		defaults = TurboDefaults
	}
	text := &Conditioner{
		L: clip.PromptEncoder{Tok: tokL, Model: l, Pad: tokL.EOS(), NoFinalNorm: true, Pool: clip.PoolEOS,
			Embeddings: family.EmbeddingsFor(env.Embeddings, "clip_l", lc.Width)},
		G: clip.PromptEncoder{Tok: tokG, Model: g, Pad: 0, NoFinalNorm: true, Pool: clip.PoolProjected,
			Embeddings: family.EmbeddingsFor(env.Embeddings, "clip_g", gc.Width)},
		Dev: dev, JointDim: mc.JointDim, MaxLen: defaults.MaxSequenceLength,
	}
	if t5Model != nil {
		text.T5 = &t5.PromptEncoder{Tok: tokT, Model: t5Model}
	}
	return &family.Components{
		Text:     text,
		Denoiser: &Denoiser{Net: net, Dev: dev},
		VAE:      family.NewVAE(autoencoder, f),
		VAEOn:    ldm.VAEOnAt(src, p.vae, vc, f),
		Sampling: ms,
		Defaults: defaults,
		Parts:    Family{}.Describe(src),
	}, nil
}

// turbo tells SD3.5 Large Turbo (distilled: 4 steps, no CFG) by its file or
// folder name or its modelspec title: its tensors are Large's.
func turbo(src *family.Source) bool {
	if strings.Contains(strings.ToLower(filepath.Base(src.Path)), "turbo") {
		return true
	}
	return strings.Contains(strings.ToLower(src.Metadata["modelspec.title"]), "turbo")
}

// strayTextEncoder refuses a separate text-encoder file SD3 has no use for
// (an OpenCLIP ViT-H, a second T5).
func strayTextEncoder(src *family.Source, p parts) error {
	k := src.Keys()
	if name := k.First(keymap.OpenCLIPHPrefix); name != "" {
		return fmt.Errorf("the model holds an OpenCLIP ViT-H text encoder (%q); SD3 uses CLIP-L, CLIP-G and T5-XXL", name)
	}
	if f := ldm.StrayTextEncoder(src, p.t5); f != "" {
		return fmt.Errorf("--text-encoder %s: SD3 uses CLIP-L, CLIP-G and T5-XXL text encoders, and this file is none of them (or a second T5)", f)
	}
	return nil
}

// Describe infers the component configurations from shapes.
func (Family) Describe(src *family.Source) []family.Part {
	p := locate(src)
	out := []family.Part{ldm.Part("transformer (MMDiT)", p.root, p.mc, p.merr)}
	if p.vae != "" {
		vc, err := vae.ConfigFromWeights(src, p.vae)
		vc.ScalingFactor, vc.ShiftFactor = LatentFormat().Scale, LatentFormat().Shift
		out = append(out, ldm.Part("VAE", p.vae, vc, err))
	}
	for _, e := range []struct {
		name, root string
		act        backend.UnaryOp
	}{{"text encoder (CLIP-L)", p.l, backend.QuickGELU}, {"text encoder (CLIP-G)", p.g, backend.GELU}} {
		if e.root != "" {
			c, err := clip.ConfigFromWeights(src, e.root)
			c.Act = e.act
			out = append(out, ldm.Part(e.name, e.root, c, err))
		}
	}
	if p.t5 != "" {
		c, err := t5.ConfigFromWeights(src, p.t5)
		out = append(out, ldm.Part("text encoder (T5)", p.t5, c, err))
	}
	return out
}

// layers reads both CLIP encoders at their penultimate layer by default.
var layers = ldm.SkipMap{Default: 2}

// Conditioner encodes prompts as ComfyUI's SD3ClipModel and diffusers'
// StableDiffusion3Pipeline.encode_prompt do: CLIP-L's and CLIP-G's
// penultimate states (not layer-normed) side by side, zero-padded to the
// transformer's text width, then T5's token states; the pooled vector is
// CLIP-L's pooled output (ComfyUI: unprojected; diffusers: projected) ⊕
// CLIP-G's projected one.
type Conditioner struct {
	L, G clip.PromptEncoder
	// T5 is nil when the model has no T5 encoder.
	T5  *t5.PromptEncoder
	Dev backend.Device
	// JointDim is the transformer's text width (4096).
	JointDim int
	// MaxLen is diffusers' max_sequence_length default (256).
	MaxLen int
}

// Encode encodes text: under ComfyUI's convention with weights, CLIP's
// 77-token windows and T5 padded to at least 77 tokens (or nothing without
// T5); under diffusers', each CLIP truncated to one window and T5
// truncated and padded to max_sequence_length (zeros without T5).
func (c *Conditioner) Encode(ctx context.Context, text string, opt family.PromptOptions) (*family.Cond, error) {
	comfy := opt.Convention == family.ConventionComfy
	skip := layers.Skip(opt.ClipSkip)
	if opt.Negative && opt.Convention != family.ConventionComfy {
		skip = layers.Skip(0) // diffusers encodes the negative prompt at the default layer
	}
	encode := func(p *clip.PromptEncoder) (*clip.Encoded, error) {
		if comfy {
			return p.Encode(ctx, c.Dev, text, skip)
		}
		return p.EncodeLiteral(ctx, c.Dev, text, skip)
	}
	// ComfyUI pools CLIP-L unprojected, diffusers through its projection
	// (text_embeds).
	lp := c.L
	if !comfy {
		if c.L.Model.Config.Projection == 0 {
			return nil, errors.New("encode prompt: this CLIP-L has no text projection, which diffusers' SD3 pipeline pools through: use --convention comfyui")
		}
		lp.Pool = clip.PoolProjected
	}
	l, err := encode(&lp)
	if err != nil {
		return nil, err
	}
	g, err := encode(&c.G)
	if err != nil {
		nn.FreeAll(c.Dev, l.Hidden, l.Pooled)
		return nil, err
	}
	dev := c.Dev
	defer nn.FreeAll(dev, l.Hidden, g.Hidden, l.Pooled, g.Pooled)
	// ComfyUI cuts both to the shorter window count; they tokenise alike.
	T := min(l.Hidden.Shape[1], g.Hidden.Shape[1])
	wl, wg := l.Hidden.Shape[2], g.Hidden.Shape[2]
	cut := func(h *backend.Tensor) *backend.Tensor {
		out := dev.Alloc(1, T, h.Shape[2])
		dev.Slice(out, h, 1, 0)
		return out
	}
	lh, gh := cut(l.Hidden), cut(g.Hidden)
	parts := []*backend.Tensor{lh, gh}
	if pad := c.JointDim - wl - wg; pad > 0 {
		parts = append(parts, dev.Upload(make([]float32, T*pad), 1, T, pad))
	}
	lg := nn.Concat(dev, 2, parts...)
	nn.FreeAll(dev, parts...)
	pooled := nn.Concat(dev, 1, l.Pooled, g.Pooled)
	cond := &family.Cond{Prompt: text, Tokens: l.Tokens, Chunks: l.Chunks, Context: lg, Pooled: pooled}

	var tail *backend.Tensor
	switch {
	case c.T5 != nil:
		o := t5.PromptOptions{Literal: !comfy, MaxLength: opt.MaxSequenceLength, MinLength: ComfyMinLength}
		if !comfy && o.MaxLength == 0 {
			o.MaxLength = c.MaxLen
		}
		t, err := c.T5.Encode(ctx, dev, text, o)
		if err != nil {
			nn.FreeAll(dev, lg, pooled)
			return nil, err
		}
		tail = t.Hidden
	case !comfy:
		n := opt.MaxSequenceLength
		if n == 0 {
			n = c.MaxLen
		}
		tail = dev.Upload(make([]float32, n*c.JointDim), 1, n, c.JointDim)
	}
	if tail != nil {
		cond.Context = nn.Concat(dev, 1, lg, tail)
		nn.FreeAll(dev, lg, tail)
	}
	return cond, nil
}

// Tokenize returns CLIP-L's ids with start and end tokens.
func (c *Conditioner) Tokenize(text string) []int { return c.L.Tok.Encode(text) }

// Check refuses a clip skip deeper than the CLIP encoders.
func (c *Conditioner) Check(opt family.PromptOptions) error {
	return layers.Check(opt.ClipSkip, min(c.L.Model.Config.Layers, c.G.Model.Config.Layers))
}

// Denoiser runs the MMDiT.
type Denoiser struct {
	Net *mmdit.Model
	Dev backend.Device
}

// Prediction is a flow velocity.
func (d *Denoiser) Prediction() sampling.Prediction { return sampling.Velocity }

// Reset has nothing to drop.
func (d *Denoiser) Reset() {}

// Blocks is the number of joint blocks (family.LayerSkipper).
func (d *Denoiser) Blocks() int { return d.Net.Config.Layers }

// Bind stacks each run of rows whose text states have the same length (a
// prompt and a negative prompt of different window counts run as two
// batches, family.GroupByLength); in.SkipLayers leaves those blocks out
// (Skip-Layer Guidance).
func (d *Denoiser) Bind(_ context.Context, rows []*family.Cond, in family.Inputs) (family.Step, error) {
	if in.Concat != nil || in.Control != nil {
		return nil, errors.New("this SD3 transformer takes no concatenated latents or control residuals")
	}
	groups, err := family.GroupByLength(d.Dev, rows, "sd3")
	if err != nil {
		return nil, err
	}
	opt := mmdit.ForwardOptions{Skip: in.SkipLayers}
	return func(ctx context.Context, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
		return d.step(ctx, groups, len(rows), x, ts, opt)
	}, nil
}

// step pads a latent to whole patches (circularly, as ComfyUI's
// pad_to_patch_size), runs each group and crops the prediction back.
func (d *Denoiser) step(ctx context.Context, groups []*family.RowGroup, rows int, x *backend.Tensor, ts []float32, opt mmdit.ForwardOptions) (*backend.Tensor, error) {
	dev := d.Dev
	if len(x.Shape) != 4 || x.Shape[0] != rows || len(ts) != rows {
		return nil, fmt.Errorf("sd3: latent %v with %d timesteps for %d bound rows", x.Shape, len(ts), rows)
	}
	h, w := x.Shape[2], x.Shape[3]
	xp := nn.PadCircular(dev, x, d.Net.Config.Patch)
	defer func() {
		if xp != x {
			dev.Free(xp)
		}
	}()
	out, err := family.RunGroups(dev, groups, xp, func(g *family.RowGroup, img *backend.Tensor) (*backend.Tensor, error) {
		return d.Net.Forward(ctx, dev, img, g.Context, g.Pooled, ts[g.From:g.To], opt)
	})
	if err != nil {
		return nil, err
	}
	return nn.CropTo(dev, out, h, w), nil
}
