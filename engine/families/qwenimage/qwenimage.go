// Package qwenimage is the Qwen-Image family: the 60-block double-stream
// MMDiT (engine/models/flux's Qwen-Image layout) conditioned by the last
// hidden state of Qwen2.5-VL-7B's language model (engine/models/qwenllm)
// over Qwen-Image's prompt template, with its Wan-style VAE
// (engine/models/wanvae: 16 channels, per-channel latent mean and std) and
// flow matching — ComfyUI's fixed shift, diffusers' resolution-dependent
// one with shift_terminal. Under diffusers' convention CFG is the
// pipeline's true CFG with its norm-preserving rescale. It registers
// itself; import it for its side effect (engine/families/all does).
//
// Files are read as users have them: ComfyUI's split files
// (qwen_image_bf16.safetensors or qwen_image_fp8_e4m3fn.safetensors with
// --text-encoder qwen_2.5_vl_7b.safetensors and --vae
// qwen_image_vae.safetensors) and the diffusers QwenImagePipeline folder.
package qwenimage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/internal/ldm"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/flux"
	"github.com/darkroom-ai/darkroom/engine/models/qwenllm"
	"github.com/darkroom-ai/darkroom/engine/models/wanvae"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Name is the family's name.
const Name = "Qwen-Image"

func init() { family.Register(Family{}) }

// Family is the Qwen-Image family.
type Family struct{}

// Name returns "Qwen-Image".
func (Family) Name() string { return Name }

// Probe claims Qwen-Image transformers (see Probe) and marks them runnable.
func (Family) Probe(k *family.Keys) (family.Detection, bool) {
	d, ok := Probe(k)
	d.Runnable = ok
	return d, ok
}

// Probe claims transformer blocks with image and text modulation
// (img_mod, txt_mod) and a text RMS norm (txt_norm), bare, under
// model.diffusion_model. or in a diffusers transformer/.
func Probe(k *family.Keys) (family.Detection, bool) {
	roots := append(append([]string{}, family.NativeRoots...), family.DiffusersRoots...)
	if _, key, ok := k.FindUnder(roots, "transformer_blocks.0.img_mod.", "transformer_blocks.0.txt_mod.", "txt_norm."); ok {
		d := family.Detection{Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}

// Where each component's tensors live in the layouts users have.
var (
	transformerRoots = []string{"", "model.diffusion_model.", "transformer."}
	vaeRoots         = []string{"vae.", weights.VideoVAEPrefix}
	textRoots        = []string{"text_encoder.", "text_encoders.qwen25_7b.transformer.", "text_encoders.qwen25_7b."}
)

// ComfyShift is the shift of ComfyUI's Qwen-Image template
// (ModelSamplingAuraFlow 3.1, multiplier 1).
const ComfyShift = 3.1

// Defaults: ComfyUI's Qwen-Image template (20 steps, CFG 2.5, euler /
// simple); diffusers' 512 text tokens.
var Defaults = family.Defaults{Width: 1328, Height: 1328, Steps: 20, CFG: 2.5, Sampler: "euler", Scheduler: "simple", MaxSequenceLength: 512}

// LatentFormat is Qwen-Image's latent space: 16 channels, factor 8; the
// VAE codec applies the per-channel mean and std itself (scale 1, shift
// 0 here); ComfyUI's latent→RGB factors of the Wan 2.1 latent space, which
// Qwen-Image's VAE shares.
func LatentFormat() family.LatentFormat {
	return family.LatentFormat{
		Channels: 16, Factor: 8, Scale: 1,
		RGB: [][3]float32{
			{-0.1299, -0.1692, 0.2932}, {0.0671, 0.0406, 0.0442}, {0.3568, 0.2548, 0.1747}, {0.0372, 0.2344, 0.1420},
			{0.0313, 0.0189, -0.0328}, {0.0296, -0.0956, -0.0665}, {-0.3477, -0.4059, -0.2925}, {0.0166, 0.1902, 0.1975},
			{-0.0412, 0.0267, -0.1364}, {-0.1293, 0.0740, 0.1636}, {0.0680, 0.3019, 0.1128}, {0.0032, 0.0581, 0.0639},
			{-0.1251, 0.0927, 0.1699}, {0.0060, -0.0633, 0.0005}, {0.3477, 0.2275, 0.2950}, {0.1984, 0.0913, 0.1861},
		},
		RGBBias: [3]float32{-0.1835, -0.0868, -0.3360},
	}
}

// parts locates the components of a source.
type parts struct {
	root, vae, text string
	fc              flux.Config
	ferr            error
}

func locate(src *family.Source) parts {
	k := src.Keys()
	var p parts
	p.root = "-"
	for _, r := range transformerRoots {
		if k.Has(r+"txt_norm.weight") && k.Has(r+"img_in.weight") {
			p.root = r
			break
		}
	}
	if p.root == "-" {
		p.root, p.ferr = "", errors.New("no Qwen-Image transformer weights")
	} else if p.fc, p.ferr = flux.ConfigFromWeights(src, p.root); p.ferr == nil && !p.fc.Qwen {
		p.ferr = errors.New("the transformer is not in Qwen-Image's layout")
	} else if p.ferr == nil {
		p.ferr = ldm.ReadRopeAxes(src, &p.fc)
	}
	for _, r := range vaeRoots {
		if k.Has(r+"decoder.conv_in.weight") || k.Has(r+"decoder.conv1.weight") {
			p.vae = r
			break
		}
	}
	p.text = ldm.QwenRoot(k, textRoots)
	return p
}

// missing names the files a transformer-only model still needs, or "".
func (p parts) missing() string {
	return ldm.Missing("Qwen-Image", ldm.Need{What: "VAE", Flag: "--vae qwen_image_vae.safetensors", Have: p.vae != ""},
		ldm.Need{What: "Qwen2.5-VL text encoder", Flag: "--text-encoder qwen_2.5_vl_7b.safetensors", Have: p.text != ""})
}

// Load builds the Qwen-Image components.
func (Family) Load(ctx context.Context, src *family.Source, env family.Env) (*family.Components, error) {
	p := locate(src)
	if p.ferr != nil {
		return nil, p.ferr
	}
	if edit(src) {
		return nil, errors.New("this is Qwen-Image-Edit by its name: image editing (a reference image through Qwen2.5-VL's vision tower) is not supported yet; text-to-image Qwen-Image is")
	}
	if name, where := ldm.FoundUnder(src, []string{"cond_stage_model.", "text_encoders.clip_l.", "text_encoders.t5xxl."}); name != "" {
		return nil, fmt.Errorf("%s holds a CLIP or T5 text encoder (%q); Qwen-Image uses Qwen2.5-VL-7B only", where, name)
	}
	if f := ldm.StrayTextEncoder(src, p.text); f != "" {
		return nil, fmt.Errorf("--text-encoder %s: Qwen-Image uses the Qwen2.5-VL-7B text encoder, and this file is not it (or a second one)", f)
	}
	if msg := p.missing(); msg != "" {
		return nil, errors.New(msg)
	}
	fc := p.fc
	vc, err := wanvae.ConfigFromWeights(src, p.vae)
	if err != nil {
		return nil, err
	}
	if vc.ZChannels != 16 || fc.InChannels != 4*vc.ZChannels || fc.OutChannels != 4*vc.ZChannels {
		return nil, fmt.Errorf("the VAE has %d latent channels and the transformer takes %d values a token; Qwen-Image needs its 16-channel VAE (qwen_image_vae.safetensors) and 2×2 patches of 64 values", vc.ZChannels, fc.InChannels)
	}
	tc, tok, err := ldm.QwenEncoder(src, p.text, ldm.QwenSpec{Family: "Qwen-Image", Arch: qwenllm.Qwen25VL,
		Model: "Qwen2.5-VL-7B (qwen_2.5_vl_7b.safetensors)", Width: fc.JointDim, Vocab: tokenizer.Qwen25})
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dev := env.Device
	b := weights.NewBuilder(src, dev)
	codec := wanvae.Load(b.Sub(strings.TrimSuffix(p.vae, ".")), vc)
	llm := qwenllm.Load(b.Sub(strings.TrimSuffix(p.text, ".")), tc)
	if err := b.Err(); err != nil {
		return nil, err
	}
	net, err := flux.Load(b.Sub(strings.TrimSuffix(p.root, ".")), dev, fc)
	if err != nil {
		return nil, err
	}
	ldm.ClaimIgnored(b, src, p.text)
	if err := ldm.CheckUnused(b, "Qwen-Image", p.vae, p.text, p.root); err != nil {
		return nil, err
	}
	ms, err := family.NewQwenImageSampling(ComfyShift)
	if err != nil {
		return nil, err
	}
	if cfg, ok := src.JSON["scheduler/scheduler_config.json"]; ok {
		if err := ms.ReadDiffusersScheduler(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(src.Path, "scheduler", "scheduler_config.json"), err)
		}
	}
	f := LatentFormat()
	vaeOn := func(d backend.Device) (family.VAE, error) {
		b := weights.NewBuilder(src, d)
		m := wanvae.Load(b.Sub(strings.TrimSuffix(p.vae, ".")), vc)
		if err := b.Err(); err != nil {
			return nil, fmt.Errorf("vae: %w", err)
		}
		return family.NewVAE(m, f), nil
	}
	return &family.Components{
		Text:     &Conditioner{Tok: tok, Model: llm, Dev: dev, MaxLen: Defaults.MaxSequenceLength},
		Denoiser: &Denoiser{Net: net, Dev: dev},
		VAE:      family.NewVAE(codec, f),
		VAEOn:    vaeOn,
		Sampling: ms,
		Defaults: Defaults,
		Parts:    Family{}.Describe(src),
	}, nil
}

// edit tells Qwen-Image-Edit by its file or folder name or modelspec
// title: its transformer has Qwen-Image's tensors, but it is conditioned
// on a reference image the text-to-image pipeline does not give it.
func edit(src *family.Source) bool {
	name := strings.ToLower(filepath.Base(src.Path) + " " + src.Metadata["modelspec.title"])
	return strings.Contains(name, "edit")
}

// Describe infers the component configurations from shapes.
func (Family) Describe(src *family.Source) []family.Part {
	p := locate(src)
	out := []family.Part{ldm.Part("transformer (Qwen-Image MMDiT)", p.root, p.fc, p.ferr)}
	if p.vae != "" {
		c, err := wanvae.ConfigFromWeights(src, p.vae)
		out = append(out, ldm.Part("VAE (Wan-style)", p.vae, c, err))
	}
	if p.text != "" {
		c, err := qwenllm.ConfigFromWeights(src, p.text, src.JSON["text_encoder/config.json"])
		out = append(out, ldm.Part("text encoder (Qwen2.5-VL)", p.text, c, err))
	}
	return out
}

// Conditioner encodes prompts into Qwen2.5-VL's last hidden states over
// Qwen-Image's template, the template's leading tokens dropped, as
// diffusers' QwenImagePipeline.encode_prompt and ComfyUI's Qwen-Image
// text encoder do.
type Conditioner struct {
	Tok   *tokenizer.Qwen
	Model *qwenllm.Model
	Dev   backend.Device
	// MaxLen is diffusers' max_sequence_length default (512).
	MaxLen int
}

// IDs returns the token ids the encoder reads for text and how many
// leading states are dropped: under ComfyUI's convention the whole
// templated prompt (ComfyQwenImage) and ComfyUI's template end; under
// diffusers' the templated prompt truncated to 1024+34 tokens and the
// template's 34.
func (c *Conditioner) IDs(text string, opt family.PromptOptions) (ids []int, drop int) {
	if opt.Convention == family.ConventionComfy {
		ids = c.Tok.IDs(tokenizer.ComfyQwenImage(text))
		return ids, tokenizer.ComfyQwenImageDrop(ids)
	}
	ids, _ = c.Tok.EncodeTemplate(tokenizer.QwenImageTemplate, text)
	return ids, tokenizer.QwenImageTemplate.Drop
}

// Encode encodes text (prompt weights are not read: neither peer weighs
// an LLM's tokens). Under diffusers' convention at most
// max_sequence_length states are kept.
func (c *Conditioner) Encode(ctx context.Context, text string, opt family.PromptOptions) (*family.Cond, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ids, drop := c.IDs(text, opt)
	h, err := c.Model.HiddenState(c.Dev, [][]int{ids}, nil, -1)
	if err != nil {
		return nil, fmt.Errorf("encode prompt: %w", err)
	}
	from, to := min(drop, len(ids)), len(ids)
	if opt.Convention != family.ConventionComfy {
		n := opt.MaxSequenceLength
		if n == 0 {
			n = c.MaxLen
		}
		to = min(to, from+n)
	}
	if to <= from {
		c.Dev.Free(h)
		return nil, fmt.Errorf("encode prompt: the prompt leaves no text states after the template's %d tokens", drop)
	}
	kept := c.Dev.Alloc(1, to-from, h.Shape[2])
	c.Dev.Slice(kept, h, 1, from)
	c.Dev.Free(h)
	return &family.Cond{Prompt: text, Tokens: to - from, Chunks: 1, Context: kept}, nil
}

// Tokenize returns the ids of the templated prompt.
func (c *Conditioner) Tokenize(text string) []int {
	ids, _ := c.IDs(text, family.PromptOptions{Convention: family.ConventionDiffusers})
	return ids
}

// Check refuses a clip skip: Qwen-Image has no CLIP.
func (c *Conditioner) Check(opt family.PromptOptions) error {
	if opt.ClipSkip > 1 {
		return &family.FieldError{Field: "clip_skip", Value: opt.ClipSkip, Msg: "Qwen-Image reads its Qwen2.5-VL encoder's last layer and has no CLIP: clip skip has no effect"}
	}
	return nil
}

// Denoiser runs the Qwen-Image transformer on 2×2-packed latents.
type Denoiser struct {
	Net *flux.Model
	Dev backend.Device
}

// Prediction is a flow velocity.
func (d *Denoiser) Prediction() sampling.Prediction { return sampling.Velocity }

// Reset has nothing to drop.
func (d *Denoiser) Reset() {}

// RescalePatch is the packed token's size: diffusers' true CFG rescales
// each 2×2 patch (family.NormRescaler).
func (d *Denoiser) RescalePatch() int { return 2 }

// Bind stacks each run of rows whose text states have the same length
// (family.GroupByLength).
func (d *Denoiser) Bind(_ context.Context, rows []*family.Cond, in family.Inputs) (family.Step, error) {
	if in.Concat != nil || in.Control != nil {
		return nil, errors.New("this Qwen-Image transformer takes no concatenated latents or control residuals")
	}
	groups, err := family.GroupByLength(d.Dev, rows, "qwen-image")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
		return d.step(ctx, groups, len(rows), x, ts)
	}, nil
}

// step pads an odd-sized latent to whole 2×2 patches (circularly, as
// ComfyUI's pad_to_patch_size), packs it, runs each group with the MSRoPE
// positions of its text length and unpacks and crops the prediction.
func (d *Denoiser) step(ctx context.Context, groups []*family.RowGroup, rows int, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
	dev := d.Dev
	if len(x.Shape) != 4 || x.Shape[0] != rows || len(ts) != rows {
		return nil, fmt.Errorf("qwen-image: latent %v with %d timesteps for %d bound rows", x.Shape, len(ts), rows)
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
	all, err := family.RunGroups(dev, groups, tokens, func(g *family.RowGroup, img *backend.Tensor) (*backend.Tensor, error) {
		imgIDs, txtIDs := flux.QwenIDs(hp/2, wp/2, g.Context.Shape[1])
		return d.Net.Forward(ctx, dev, img, g.Context, nil, ts[g.From:g.To], nil, imgIDs, txtIDs)
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
