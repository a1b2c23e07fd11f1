// Package flux1 is the FLUX.1 family (dev, schnell, Krea and fine-tunes):
// the Flux transformer (engine/models/flux) conditioned on T5-XXL token
// states and CLIP-L's pooled output, the 16-channel Flux autoencoder
// (scale 0.3611, shift 0.1159) and flow matching with Flux's shift
// (resolution-dependent for dev, fixed for schnell). It registers itself;
// import it for its side effect (engine/families/all does).
//
// Files are read as users have them: BFL's transformer-only
// flux1-dev.safetensors with ae.safetensors, clip_l.safetensors and a
// t5xxl file beside it (--vae, --text-encoder), ComfyUI's all-in-one
// checkpoints (model.diffusion_model., vae., text_encoders.clip_l.,
// text_encoders.t5xxl.) and the diffusers FluxPipeline folder.
package flux1

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/internal/ldm"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/flux"
	"github.com/darkroom-ai/darkroom/engine/models/t5"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Name is the family's name.
const Name = "Flux.1"

func init() { family.Register(Family{}) }

// Family is the Flux.1 family.
type Family struct{}

// Name returns "Flux.1".
func (Family) Name() string { return Name }

// Probe claims Flux.1 transformers (see Probe) and marks them runnable.
func (Family) Probe(k *family.Keys) (family.Detection, bool) {
	d, ok := Probe(k)
	d.Runnable = ok
	return d, ok
}

// Probe claims BFL's names (double_blocks with img_mod, single_blocks; bare
// or under model.diffusion_model.) or a diffusers FluxTransformer2DModel
// (transformer_blocks with norm1.linear and single_transformer_blocks);
// Chroma (no per-block modulation, a distilled guidance layer), FLUX.2
// (shared modulation) and HunyuanVideo (the same block names, with a text
// token refiner) are their own families. The guidance embedding makes
// it dev-like, its absence schnell-like.
func Probe(k *family.Keys) (family.Detection, bool) {
	if root, key, ok := k.FindUnder(family.NativeRoots, "double_blocks.0.img_mod.lin.", "single_blocks."); ok {
		if k.Has(root+"distilled_guidance_layer.") || k.Has(root+"double_stream_modulation_img.") || k.Has(root+"txt_in.individual_token_refiner.") {
			return family.Detection{}, false
		}
		return family.Detection{Variant: variant(k.Has(root + "guidance_in.")), Evidence: []string{k.Key(key)}}, true
	}
	if root, key, ok := k.FindUnder(family.DiffusersRoots, "transformer_blocks.0.norm1.linear.", "single_transformer_blocks.0.norm.linear.", "x_embedder."); ok && !k.Has(root+"context_embedder.token_refiner.") {
		d := family.Detection{Variant: variant(k.Has(root + "time_text_embed.guidance_embedder.")), Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}

func variant(guidance bool) string {
	if guidance {
		return "dev"
	}
	return "schnell"
}

// Where each component's tensors live in the layouts users have.
var (
	transformerRoots = []string{"", "model.diffusion_model.", "transformer."}
	vaeRoots         = []string{keymap.VAEPrefix, "vae."}
	clipRoots        = []string{"cond_stage_model.transformer.", "text_encoders.clip_l.transformer."}
	t5Roots          = []string{"text_encoder_2.", "text_encoders.t5xxl.transformer."}
)

// LatentFormat is Flux's latent space (ldm.FluxLatentFormat).
func LatentFormat() family.LatentFormat { return ldm.FluxLatentFormat() }

// Defaults of the two variants: dev as ComfyUI's Flux dev workflow (20
// steps, euler / simple, guidance 3.5, no negative pass) with diffusers'
// 512 T5 tokens; schnell 4 steps with 256.
var (
	DevDefaults = family.Defaults{Width: 1024, Height: 1024, Steps: 20, CFG: 1, Sampler: "euler", Scheduler: "simple",
		Guidance: DefaultGuidance, MaxSequenceLength: 512}
	SchnellDefaults = family.Defaults{Width: 1024, Height: 1024, Steps: 4, CFG: 1, Sampler: "euler", Scheduler: "simple",
		MaxSequenceLength: 256}
)

// DefaultGuidance is Flux dev's embedded guidance (diffusers' guidance_scale
// default, ComfyUI's FluxGuidance default).
const DefaultGuidance = 3.5

// ComfyMinLength is ComfyUI's T5 padding for Flux: prompts are padded to at
// least 256 tokens and never truncated.
const ComfyMinLength = 256

// parts locates the components of a source.
type parts struct {
	root, vae, clip, t5 string
	fc                  flux.Config
	ferr                error
}

func locate(src *family.Source) parts {
	k := src.Keys()
	var p parts
	p.root = "-"
	for _, r := range transformerRoots {
		if k.Has(r+"img_in.weight") || k.Has(r+"x_embedder.weight") {
			p.root = r
			break
		}
	}
	if p.root == "-" {
		p.root, p.ferr = "", errors.New("no Flux transformer weights")
	} else {
		p.fc, p.ferr = flux.ConfigFromWeights(src, p.root)
		if p.ferr == nil {
			p.ferr = ldm.ReadRopeAxes(src, &p.fc)
		}
	}
	p.vae = ldm.FirstRoot(k, vaeRoots, "decoder.conv_in.weight")
	p.clip = ldm.FirstRoot(k, clipRoots, "text_model.embeddings.token_embedding.weight")
	p.t5 = ldm.T5Root(k, t5Roots)
	return p
}

// missing names the files a transformer-only model still needs, or "".
func (p parts) missing() string {
	var need []string
	if p.vae == "" {
		need = append(need, "--vae ae.safetensors")
	}
	if p.clip == "" {
		need = append(need, "--text-encoder clip_l.safetensors")
	}
	if p.t5 == "" {
		need = append(need, "--text-encoder t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn.safetensors)")
	}
	if len(need) == 0 {
		return ""
	}
	return "this Flux model has no " + strings.Join(p.lacking(), ", ") + ": also give " + strings.Join(need, " ")
}

func (p parts) lacking() []string {
	var l []string
	if p.vae == "" {
		l = append(l, "VAE")
	}
	if p.clip == "" {
		l = append(l, "CLIP-L")
	}
	if p.t5 == "" {
		l = append(l, "T5-XXL")
	}
	return l
}

// Load builds the Flux components.
func (Family) Load(ctx context.Context, src *family.Source, env family.Env) (*family.Components, error) {
	p := locate(src)
	if p.ferr != nil {
		return nil, p.ferr
	}
	if msg := p.missing(); msg != "" {
		return nil, errors.New(msg)
	}
	if err := strayTextEncoder(src, p); err != nil {
		return nil, err
	}
	fc := p.fc
	vc, err := vae.ConfigFromWeights(src, p.vae)
	if err != nil {
		return nil, err
	}
	f := LatentFormat()
	if vc.ZChannels != f.Channels {
		return nil, fmt.Errorf("the VAE has %d latent channels; Flux needs its own 16-channel autoencoder (BFL's ae.safetensors, --vae)", vc.ZChannels)
	}
	if fc.InChannels != 4*vc.ZChannels || fc.OutChannels != 4*vc.ZChannels {
		return nil, fmt.Errorf("the Flux transformer takes %d and predicts %d values per token; 2×2 patches of the VAE's %d channels are %d (an inpainting or control variant is not supported)",
			fc.InChannels, fc.OutChannels, vc.ZChannels, 4*vc.ZChannels)
	}
	if vc.InChannels != 3 {
		return nil, fmt.Errorf("the VAE decodes %d image channels; only RGB (3) is supported", vc.InChannels)
	}
	cc, err := clip.ConfigFromWeights(src, p.clip)
	if err != nil {
		return nil, err
	}
	cc.Act = backend.QuickGELU
	if err := ldm.ReadCLIPHeads(src, "text_encoder/config.json", &cc); err != nil {
		return nil, err
	}
	if cc.Width != fc.PooledDim {
		return nil, fmt.Errorf("the CLIP text encoder is %d wide; this Flux transformer takes a %d-wide pooled vector (CLIP-L: clip_l.safetensors)", cc.Width, fc.PooledDim)
	}
	tc, err := t5.ConfigFromWeights(src, p.t5)
	if err != nil {
		return nil, err
	}
	if tc.Width != fc.JointDim {
		return nil, fmt.Errorf("the T5 text encoder is %d wide; this Flux transformer attends to %d-wide text states (T5-XXL: t5xxl_fp16.safetensors)", tc.Width, fc.JointDim)
	}
	tokL, err := ldm.LoadTokenizer(src.TokenizerDirs["tokenizer"])
	if err != nil {
		return nil, err
	}
	var t5dir string
	if src.Layout == weights.Diffusers {
		t5dir = src.Path
	}
	tokT, err := tokenizer.FindT5(t5dir)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dev := env.Device
	b := weights.NewBuilder(src, dev)
	vc.ScalingFactor, vc.ShiftFactor = f.Scale, f.Shift
	autoencoder := vae.Load(b.Sub(strings.TrimSuffix(p.vae, ".")), vc)
	clipModel := clip.Load(b.Sub(strings.TrimSuffix(p.clip, ".")), cc)
	t5Model := t5.Load(b.Sub(strings.TrimSuffix(p.t5, ".")), tc)
	if err := b.Err(); err != nil {
		return nil, err
	}
	net, err := flux.Load(b.Sub(strings.TrimSuffix(p.root, ".")), dev, fc)
	if err != nil {
		return nil, err
	}
	if err := ldm.CheckUnused(b, "Flux", p.vae, p.clip, p.t5, p.root); err != nil {
		return nil, err
	}
	ms, err := family.NewFluxSampling(fc.Guidance)
	if err != nil {
		return nil, err
	}
	if cfg, ok := src.JSON["scheduler/scheduler_config.json"]; ok {
		if err := ms.ReadDiffusersScheduler(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(src.Path, "scheduler", "scheduler_config.json"), err)
		}
	}
	defaults := SchnellDefaults
	if fc.Guidance {
		defaults = DevDefaults
	}
	return &family.Components{
		Text: &Conditioner{
			L:      clip.PromptEncoder{Tok: tokL, Model: clipModel, Pad: tokL.EOS(), Pool: clip.PoolEOS},
			T5:     t5.PromptEncoder{Tok: tokT, Model: t5Model},
			Dev:    dev,
			MaxLen: defaults.MaxSequenceLength,
		},
		Denoiser: &Denoiser{Net: net, Dev: dev},
		VAE:      family.NewVAE(autoencoder, f),
		VAEOn:    ldm.VAEOnAt(src, p.vae, vc, f),
		Sampling: ms,
		Defaults: defaults,
		Parts:    Family{}.Describe(src),
	}, nil
}

// strayTextEncoder refuses a separate text-encoder file that is neither
// the CLIP-L nor the T5 the model uses.
func strayTextEncoder(src *family.Source, p parts) error {
	if name, where := ldm.FoundUnder(src, []string{keymap.CLIPGPrefix, keymap.OpenCLIPGPrefix, keymap.OpenCLIPHPrefix}); name != "" {
		return fmt.Errorf("%s holds an OpenCLIP text encoder (%q); Flux uses CLIP-L and T5-XXL only", where, name)
	}
	if f := ldm.StrayTextEncoder(src, p.t5); f != "" {
		return fmt.Errorf("--text-encoder %s: Flux uses CLIP-L and T5-XXL text encoders, and this file is neither (or a second T5)", f)
	}
	return nil
}

// Describe infers the component configurations from shapes.
func (Family) Describe(src *family.Source) []family.Part {
	p := locate(src)
	out := []family.Part{ldm.Part("transformer (Flux)", p.root, p.fc, p.ferr)}
	if p.vae != "" {
		out = append(out, ldm.VAEPart(src, p.vae, LatentFormat()))
	}
	if p.clip != "" {
		c, err := clip.ConfigFromWeights(src, p.clip)
		out = append(out, ldm.Part("text encoder (CLIP-L, pooled)", p.clip, c, err))
	}
	if p.t5 != "" {
		c, err := t5.ConfigFromWeights(src, p.t5)
		out = append(out, ldm.Part("text encoder (T5)", p.t5, c, err))
	}
	return out
}

// Conditioner encodes prompts into T5's token states (the transformer's
// text stream) and CLIP-L's pooled output (its vector input), as ComfyUI's
// FluxClipModel and diffusers' FluxPipeline.encode_prompt do.
type Conditioner struct {
	L   clip.PromptEncoder
	T5  t5.PromptEncoder
	Dev backend.Device
	// MaxLen is diffusers' max_sequence_length default (512 dev, 256
	// schnell).
	MaxLen int
}

// Encode encodes text: under ComfyUI's convention with weights, CLIP-L's
// 77-token windows (the first one's pooled output) and T5 padded to at
// least 256 tokens; under diffusers', CLIP-L truncated to one window and
// T5 truncated and padded to max_sequence_length.
func (c *Conditioner) Encode(ctx context.Context, text string, opt family.PromptOptions) (*family.Cond, error) {
	comfy := opt.Convention == family.ConventionComfy
	var l *clip.Encoded
	var err error
	if comfy {
		l, err = c.L.Encode(ctx, c.Dev, text, 1)
	} else {
		l, err = c.L.EncodeLiteral(ctx, c.Dev, text, 1)
	}
	if err != nil {
		return nil, err
	}
	c.Dev.Free(l.Hidden)
	o := t5.PromptOptions{Literal: !comfy, MaxLength: opt.MaxSequenceLength, MinLength: ComfyMinLength}
	if !comfy && o.MaxLength == 0 {
		o.MaxLength = c.MaxLen
	}
	t, err := c.T5.Encode(ctx, c.Dev, text, o)
	if err != nil {
		return nil, err
	}
	return &family.Cond{Prompt: text, Tokens: t.Tokens, Chunks: 1, Context: t.Hidden, Pooled: l.Pooled}, nil
}

// Tokenize returns T5's ids (</s> last): the encoder whose window limits
// a Flux prompt.
func (c *Conditioner) Tokenize(text string) []int {
	ids, _ := c.T5.Tok.Encode(text, 0, false)
	return ids
}

// Check refuses a clip skip: Flux reads only CLIP-L's pooled output, which
// comes from the last layer whatever the skip.
func (c *Conditioner) Check(opt family.PromptOptions) error {
	if opt.ClipSkip > 1 {
		return &family.FieldError{Field: "clip_skip", Value: opt.ClipSkip, Msg: "Flux reads only CLIP-L's pooled output (from its last layer): clip skip has no effect"}
	}
	return nil
}

// Denoiser runs the Flux transformer on 2×2-packed latents.
type Denoiser struct {
	Net *flux.Model
	Dev backend.Device
}

// Prediction is a flow velocity.
func (d *Denoiser) Prediction() sampling.Prediction { return sampling.Velocity }

// Reset has nothing to drop.
func (d *Denoiser) Reset() {}

// group is a run of consecutive rows with text states of one length, run
// through the transformer together, with its guidance values and text ids.
type group struct {
	*family.RowGroup
	guidance []float32
	txtIDs   [][3]float32
}

// Bind stacks each run of rows whose T5 states have the same length (a
// prompt and a negative prompt of different lengths run as two batches,
// family.GroupByLength).
func (d *Denoiser) Bind(_ context.Context, rows []*family.Cond, in family.Inputs) (family.Step, error) {
	if in.Concat != nil || in.Control != nil {
		return nil, errors.New("this Flux transformer takes no concatenated latents or control residuals")
	}
	c := d.Net.Config
	guidance := in.Guidance
	if c.Guidance && guidance == 0 {
		guidance = DefaultGuidance
	}
	rgs, err := family.GroupByLength(d.Dev, rows, "flux")
	if err != nil {
		return nil, err
	}
	groups := map[*family.RowGroup]*group{}
	for _, rg := range rgs {
		g := &group{RowGroup: rg, txtIDs: flux.TextIDs(rg.Context.Shape[1])}
		if c.Guidance {
			g.guidance = make([]float32, rg.To-rg.From)
			for j := range g.guidance {
				g.guidance[j] = guidance
			}
		}
		groups[rg] = g
	}
	return func(ctx context.Context, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
		return d.step(ctx, rgs, groups, len(rows), x, ts)
	}, nil
}

// step pads an odd-sized latent to whole 2×2 patches (circularly, as
// ComfyUI's pad_to_patch_size), runs each group and crops the prediction
// back.
func (d *Denoiser) step(ctx context.Context, rgs []*family.RowGroup, groups map[*family.RowGroup]*group, rows int, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
	dev := d.Dev
	if len(x.Shape) != 4 || x.Shape[0] != rows || len(ts) != rows {
		return nil, fmt.Errorf("flux: latent %v with %d timesteps for %d bound rows", x.Shape, len(ts), rows)
	}
	h, w := x.Shape[2], x.Shape[3]
	xp := nn.PadCircular(dev, x, 2)
	hp, wp := xp.Shape[2], xp.Shape[3]
	tokens, err := flux.Pack(dev, xp)
	if xp != x {
		dev.Free(xp)
	}
	if err != nil {
		return nil, err
	}
	defer dev.Free(tokens)
	imgIDs := flux.ImageIDs(hp, wp)
	all, err := family.RunGroups(dev, rgs, tokens, func(rg *family.RowGroup, img *backend.Tensor) (*backend.Tensor, error) {
		g := groups[rg]
		return d.Net.Forward(ctx, dev, img, g.Context, g.Pooled, ts[g.From:g.To], g.guidance, imgIDs, g.txtIDs)
	})
	if err != nil {
		return nil, err
	}
	defer dev.Free(all)
	v, err := flux.Unpack(dev, all, hp, wp)
	if err != nil {
		return nil, err
	}
	return nn.CropTo(dev, v, h, w), nil
}
