// Package sdxl is the SDXL family, base and refiner: the SGM UNet with a
// vector input (label_emb: the pooled OpenCLIP-bigG embedding and Fourier
// embeddings of the size and crop conditioning, or of the aesthetic score
// for the refiner), cross-attention to CLIP-L and OpenCLIP-bigG hidden
// states (the base) or bigG alone (the refiner), the SDXL autoencoder
// (scale 0.13025) and the SD discrete schedule. It registers itself;
// import it for its side effect (engine/families/all does).
package sdxl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/internal/ldm"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Name is the family's name.
const Name = "SDXL"

func init() { family.Register(Family{}) }

// Family is the SDXL family.
type Family struct{}

// Name returns "SDXL".
func (Family) Name() string { return Name }

// ADM input widths of the real networks (label_emb.0.0): pooled bigG 1280
// + 6 size ids × 256 for the base, + 5 × 256 for the refiner (aesthetic
// score instead of the target size).
const (
	admBase    = 2816
	admRefiner = 2560
)

// Canonical prefixes of the components (see keymap): the UNet and VAE as
// every LDM family; CLIP-L in transformers layout as Stability's single
// file or as diffusers' text_encoder / a separate clip_l file stores it;
// bigG in OpenCLIP layout (single files: the base's embedders.1, the
// refiner's embedders.0) or in transformers layout (diffusers'
// text_encoder_2, a separate clip_g file).
const (
	PrefixUNet = keymap.UNetPrefix
	PrefixVAE  = keymap.VAEPrefix
)

var (
	clipLRoots = []string{"conditioner.embedders.0.transformer.", "cond_stage_model.transformer."}
	clipGRoots = []string{"conditioner.embedders.1.model.", "conditioner.embedders.0.model.", "text_encoders.clip_g.transformer."}
)

// Probe claims an LDM UNet with a vector input (label_emb): Stability's
// single files, UNet-only files and diffusers folders, which the weights
// layer presents under the same names.
func (Family) Probe(k *family.Keys) (family.Detection, bool) {
	d, ok := probe(k)
	d.Runnable = ok
	return d, ok
}

func probe(k *family.Keys) (family.Detection, bool) {
	u := keymap.UNetPrefix
	lab := u + "label_emb.0.0.weight"
	if !k.Has(lab) || !k.Has(u+"input_blocks.") {
		return family.Detection{}, false
	}
	adm := k.Dim(lab, 1)
	ev := []string{k.Key(lab)}
	if adm > 0 {
		ev[0] += fmt.Sprintf(" (adm %d)", adm)
	}
	var g string
	for _, r := range clipGRoots {
		if g = k.First(r); g != "" {
			break
		}
	}
	var l string
	for _, r := range clipLRoots {
		if l = k.First(r); l != "" {
			break
		}
	}
	if g != "" {
		ev = append([]string{k.Key(g)}, ev...)
	}
	// The vector input's width tells the real base from the refiner
	// whatever encoders came with the file; other sizes (small test
	// models) by whether a CLIP-L is there.
	switch {
	case adm == admBase:
		return family.Detection{Variant: "base", Evidence: ev}, true
	case adm == admRefiner:
		return family.Detection{Variant: "refiner", Evidence: ev}, true
	case g != "" && l != "":
		return family.Detection{Variant: "base", Evidence: ev}, true
	case g != "":
		return family.Detection{Variant: "refiner", Evidence: ev}, true
	}
	return family.Detection{}, false
}

func firstRoot(src *family.Source, roots []string) string {
	for _, r := range roots {
		if src.Keys().Has(r) {
			return r
		}
	}
	return ""
}

// Defaults are SDXL's: 1024², 20 steps, CFG 7, euler / normal (ComfyUI's
// SDXL template: 20 steps at cfg 8 with the refiner; the model card's
// 30-50 at 5-7).
var Defaults = family.Defaults{Width: 1024, Height: 1024, Steps: 20, CFG: 7, Sampler: "euler", Scheduler: "normal"}

// LatentFormat is SDXL's latent space: 4 channels, factor 8, scale 0.13025,
// ComfyUI's latent→RGB factors for SDXL and TAESDXL.
func LatentFormat() family.LatentFormat {
	return family.LatentFormat{
		Channels: 4, Factor: 8, Scale: 0.13025,
		RGB: [][3]float32{
			{0.3651, 0.4232, 0.4341},
			{-0.2533, -0.0042, 0.1068},
			{0.1076, 0.1111, -0.0362},
			{-0.3165, -0.2492, -0.2188},
		},
		RGBBias: [3]float32{0.1084, -0.0175, -0.0011},
		TAESD:   "taesdxl_decoder.safetensors",
	}
}

// Load builds the SDXL components: CLIP-L (base only) and bigG, the UNet
// and its vector input, the VAE.
func (Family) Load(ctx context.Context, src *family.Source, env family.Env) (*family.Components, error) {
	k := src.Keys()
	if !k.Has(PrefixUNet) {
		return nil, fmt.Errorf("no UNet weights (nothing under %q)", PrefixUNet)
	}
	if !k.Has(PrefixVAE) {
		return nil, fmt.Errorf("no VAE weights (nothing under %q); give a separate file with --vae (ComfyUI's vae/ folder: sdxl_vae.safetensors)", PrefixVAE)
	}
	if f := ldm.StrayTextEncoder(src, ""); f != "" {
		return nil, fmt.Errorf("--text-encoder %s: SDXL uses CLIP-L and OpenCLIP bigG text encoders, and this file is neither", f)
	}
	uc, err := unet.ConfigFromWeights(src, PrefixUNet)
	if err != nil {
		return nil, err
	}
	if uc.ADMInChannels == 0 {
		return nil, fmt.Errorf("the UNet has no vector input (label_emb): not an SDXL UNet")
	}
	vc, err := vae.ConfigFromWeights(src, PrefixVAE)
	if err != nil {
		return nil, err
	}
	concat, err := ldm.CheckLatents(uc, vc)
	if err != nil {
		return nil, err
	}
	lRoot, gRoot := firstRoot(src, clipLRoots), firstRoot(src, clipGRoots)
	if gRoot == "" {
		return nil, fmt.Errorf("no OpenCLIP bigG text encoder (under %s); give ComfyUI's clip_g.safetensors with --text-encoder", strings.Join(clipGRoots, ", "))
	}
	gc, err := clip.ConfigFromWeights(src, gRoot)
	if err != nil {
		return nil, err
	}
	gc.Act = backend.GELU
	if gc.Projection == 0 {
		return nil, fmt.Errorf("the bigG text encoder under %q has no text projection (SDXL needs its pooled output)", gRoot)
	}
	var lc clip.Config
	refiner := lRoot == ""
	ctxWidth := gc.Width
	if !refiner {
		if lc, err = clip.ConfigFromWeights(src, lRoot); err != nil {
			return nil, err
		}
		lc.Act = backend.QuickGELU
		ctxWidth += lc.Width
	}
	if ctxWidth != uc.ContextDim {
		switch {
		case refiner && uc.ContextDim > gc.Width:
			return nil, fmt.Errorf("no CLIP-L text encoder: this SDXL base UNet attends to %d-wide contexts (CLIP-L + bigG, %d from bigG); give ComfyUI's clip_l.safetensors with --text-encoder", uc.ContextDim, gc.Width)
		case !refiner:
			return nil, fmt.Errorf("text encoders give %d-wide contexts (CLIP-L %d + bigG %d), the UNet attends to %d", ctxWidth, lc.Width, gc.Width, uc.ContextDim)
		default:
			return nil, fmt.Errorf("the bigG text encoder is %d wide, the refiner UNet attends to %d", gc.Width, uc.ContextDim)
		}
	}
	ids := 6
	if refiner {
		ids = 5
	}
	embed := (uc.ADMInChannels - gc.Projection) / ids
	if embed <= 0 || embed%2 != 0 || gc.Projection+ids*embed != uc.ADMInChannels {
		return nil, fmt.Errorf("the UNet's vector input is %d wide; the pooled bigG output (%d) and %d size embeddings do not fill it", uc.ADMInChannels, gc.Projection, ids)
	}
	decl, err := ldm.DeclaredPrediction(src)
	if err != nil {
		return nil, err
	}
	tokL, tokG, err := ldm.LoadTokenizers(src)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dev := env.Device
	// Shapes cannot tell the scaling: SDXL's autoencoder uses 0.13025.
	vc.ScalingFactor = LatentFormat().Scale
	texts := []ldm.TextSpec{{Root: gRoot, Config: gc}}
	if !refiner {
		texts = append(texts, ldm.TextSpec{Root: lRoot, Config: lc})
	}
	nets, err := ldm.LoadNets(src, dev, "SDXL", uc, vc, texts...)
	if err != nil {
		return nil, err
	}
	g := nets.Text[0]
	ms, err := ldm.Sampling(decl)
	if err != nil {
		return nil, err
	}
	f := LatentFormat()
	f.Channels, f.Factor = vc.ZChannels, vc.Factor()
	text := &Conditioner{
		G: clip.PromptEncoder{Tok: tokG, Model: g, Pad: 0, NoFinalNorm: true, Pool: clip.PoolProjected,
			Embeddings: family.EmbeddingsFor(env.Embeddings, "clip_g", gc.Width)},
		Dev: dev, ZeroEmptyNegative: zeroEmptyNegative(src, refiner),
	}
	if !refiner {
		text.L = &clip.PromptEncoder{Tok: tokL, Model: nets.Text[1], Pad: tokL.EOS(), NoFinalNorm: true,
			Embeddings: family.EmbeddingsFor(env.Embeddings, "clip_l", lc.Width)}
	}
	c := &family.Components{
		Text: text,
		Denoiser: &ldm.Denoiser{Net: nets.UNet, Dev: dev, Pred: decl.Pred,
			Vector: (&vector{embed: embed, refiner: refiner, pooled: gc.Projection}).build, Concat: concat},
		VAE:                family.NewVAE(nets.VAE, f),
		InpaintChannels:    concat,
		VAEOn:              ldm.VAEOn(src, vc, f),
		Sampling:           ms,
		Defaults:           Defaults,
		Parts:              Family{}.Describe(src),
		PredictionEvidence: decl.Evidence,
	}
	if refiner {
		c.RefineOnly = "this is an SDXL refiner (bigG only, aesthetic-score conditioning): it refines, it does not start from noise; run a base model with --refiner <this file> (step swap, --refiner-switch 0.8), or refine an image with it (--init-image, --denoise 0.3)"
	}
	return c, nil
}

// zeroEmptyNegative is diffusers' force_zeros_for_empty_prompt: true for
// the base pipeline, false for the refiner's, as the repos configure them
// (a folder's model_index.json says).
func zeroEmptyNegative(src *family.Source, refiner bool) bool {
	if b, ok := src.JSON["model_index.json"]; ok {
		var cfg struct {
			Force *bool `json:"force_zeros_for_empty_prompt"`
		}
		if json.Unmarshal(b, &cfg) == nil && cfg.Force != nil {
			return *cfg.Force
		}
	}
	return !refiner
}

// Describe infers the component configurations from shapes.
func (Family) Describe(src *family.Source) []family.Part {
	uc, uerr := unet.ConfigFromWeights(src, PrefixUNet)
	vc, verr := vae.ConfigFromWeights(src, PrefixVAE)
	parts := []family.Part{ldm.Part("UNet", PrefixUNet, uc, uerr), ldm.Part("VAE", PrefixVAE, vc, verr)}
	if r := firstRoot(src, clipLRoots); r != "" {
		c, err := clip.ConfigFromWeights(src, r)
		parts = append(parts, ldm.Part("text encoder (CLIP-L)", r, c, err))
	}
	if r := firstRoot(src, clipGRoots); r != "" {
		c, err := clip.ConfigFromWeights(src, r)
		c.Act = backend.GELU
		parts = append(parts, ldm.Part("text encoder (OpenCLIP bigG)", r, c, err))
	}
	return parts
}

// Conditioner encodes prompts with CLIP-L and bigG, window by window
// together (as ComfyUI's SDXL tokenizer and encoder do), concatenating
// their penultimate hidden states (not layer-normed) into the UNet's
// context and taking bigG's projected pooled output of the first window.
// The refiner has bigG alone.
type Conditioner struct {
	L   *clip.PromptEncoder // nil for the refiner
	G   clip.PromptEncoder
	Dev backend.Device
	// ZeroEmptyNegative gives an empty prompt all-zero conditioning under
	// diffusers' convention (its force_zeros_for_empty_prompt for a
	// negative prompt left unset).
	ZeroEmptyNegative bool
}

// layers reads both encoders at their penultimate layer by default.
var layers = ldm.SkipMap{Default: 2}

// Encode encodes text into the context [1, 77·k, wL+wG] and the pooled
// vector [1, P].
func (c *Conditioner) Encode(ctx context.Context, text string, opt family.PromptOptions) (*family.Cond, error) {
	skip := layers.Skip(opt.ClipSkip)
	if opt.Negative && opt.Convention != family.ConventionComfy {
		skip = layers.Skip(0) // diffusers encodes the negative prompt at the default layer
	}
	comfy := opt.Convention == family.ConventionComfy
	if !comfy && text == "" && c.ZeroEmptyNegative {
		return c.zeros(ctx, text)
	}
	encode := func(p *clip.PromptEncoder) (*clip.Encoded, error) {
		if comfy {
			return p.Encode(ctx, c.Dev, text, skip)
		}
		return p.EncodeLiteral(ctx, c.Dev, text, skip)
	}
	g, err := encode(&c.G)
	if err != nil {
		return nil, err
	}
	cond := &family.Cond{Prompt: text, Tokens: g.Tokens, Chunks: g.Chunks, Context: g.Hidden, Pooled: g.Pooled}
	if c.L == nil {
		return cond, nil
	}
	l, err := encode(c.L)
	if err != nil {
		return nil, err
	}
	if l.Chunks != g.Chunks {
		return nil, fmt.Errorf("encode prompt: CLIP-L split it into %d windows, bigG into %d (different tokenizers?)", l.Chunks, g.Chunks)
	}
	cond.Tokens = l.Tokens
	cond.Context = concatFeatures(c.Dev, l.Hidden, g.Hidden)
	return cond, nil
}

// zeros is the all-zero conditioning of one window.
func (c *Conditioner) zeros(ctx context.Context, text string) (*family.Cond, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w := c.G.Model.Config.Width
	if c.L != nil {
		w += c.L.Model.Config.Width
	}
	p := c.G.Model.Config.Projection
	return &family.Cond{
		Prompt:  text,
		Chunks:  1,
		Context: c.Dev.Upload(make([]float32, tokenizer.ContextLength*w), 1, tokenizer.ContextLength, w),
		Pooled:  c.Dev.Upload(make([]float32, p), 1, p),
	}, nil
}

// concatFeatures joins [1, T, a] and [1, T, b] into [1, T, a+b].
func concatFeatures(dev backend.Device, a, b *backend.Tensor) *backend.Tensor {
	out := dev.Alloc(a.Shape[0], a.Shape[1], a.Shape[2]+b.Shape[2])
	dev.Concat(out, 2, a, b)
	return out
}

// Tokenize returns the first encoder's ids with start and end tokens.
func (c *Conditioner) Tokenize(text string) []int {
	if c.L != nil {
		return c.L.Tok.Encode(text)
	}
	return c.G.Tok.Encode(text)
}

// Check refuses a clip skip deeper than the encoders.
func (c *Conditioner) Check(opt family.PromptOptions) error {
	n := c.G.Model.Config.Layers
	if c.L != nil {
		n = min(n, c.L.Model.Config.Layers)
	}
	return layers.Check(opt.ClipSkip, n)
}

// vector builds the UNet's vector input: bigG's pooled output, then the
// sinusoidal embeddings (cos first, max period 10000) of the original
// height and width, the crop's top and left and the target height and
// width — or, for the refiner, of the original size, the crop and the
// aesthetic score — as both ComfyUI (model_base.SDXL.encode_adm) and
// diffusers (add_time_ids) compute it.
type vector struct {
	embed, pooled int
	refiner       bool
}

// Aesthetic scores the refiner is conditioned on by default (ComfyUI's and
// diffusers').
const (
	DefaultAesthetic         = 6.0
	DefaultNegativeAesthetic = 2.5
)

func (v *vector) build(dev backend.Device, rows []*family.Cond, in family.Inputs) (*backend.Tensor, error) {
	s := in.Size
	ow, oh := or(s.OriginalWidth, in.Width), or(s.OriginalHeight, in.Height)
	tw, th := or(s.TargetWidth, in.Width), or(s.TargetHeight, in.Height)
	adm := v.pooled + v.embed*6
	if v.refiner {
		adm = v.pooled + v.embed*5
	}
	out := make([]float32, 0, len(rows)*adm)
	for i, r := range rows {
		if r.Pooled == nil || r.Pooled.Len() != v.pooled {
			return nil, fmt.Errorf("sdxl: row %d has no pooled text embedding of width %d", i, v.pooled)
		}
		p, err := dev.Download(r.Pooled)
		if err != nil {
			return nil, err
		}
		ids := []float32{float32(oh), float32(ow), float32(s.CropTop), float32(s.CropLeft), float32(th), float32(tw)}
		if v.refiner {
			score := orf(s.Aesthetic, DefaultAesthetic)
			if i < in.NegativeRows {
				score = orf(s.NegativeAesthetic, DefaultNegativeAesthetic)
			}
			ids = []float32{float32(oh), float32(ow), float32(s.CropTop), float32(s.CropLeft), float32(score)}
		}
		out = append(out, p...)
		out = append(out, backend.TimestepTable(ids, backend.TimestepParams{Dim: v.embed, FlipSinToCos: true, MaxPeriod: 10000, Scale: 1})...)
	}
	return dev.Upload(out, len(rows), adm), nil
}

func or(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

func orf(v, def float64) float64 {
	if v != 0 {
		return v
	}
	return def
}
