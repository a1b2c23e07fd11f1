// Package zimage is the Z-Image family (Turbo, Base): the single-stream
// S3-DiT (engine/models/nextdit) conditioned by the second-to-last hidden
// state of Qwen3-4B (engine/models/qwenllm) over Qwen3's chat template,
// with the 16-channel Flux autoencoder (scale 0.3611, shift 0.1159) and
// flow matching with shift 3 (multiplier 1). It registers itself; import
// it for its side effect (engine/families/all does).
//
// Files are read as users have them: ComfyUI's split files
// (z_image_turbo_bf16.safetensors with --text-encoder qwen_3_4b.safetensors
// and --vae ae.safetensors), the same transformer under
// model.diffusion_model. as ComfyUI saves it, and the diffusers
// ZImagePipeline folder.
package zimage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/internal/ldm"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/nextdit"
	"github.com/darkroom-ai/darkroom/engine/models/qwenllm"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Name is the family's name.
const Name = "Z-Image"

func init() { family.Register(Family{}) }

// Family is the Z-Image family.
type Family struct{}

// Name returns "Z-Image".
func (Family) Name() string { return Name }

// Probe claims Z-Image transformers (see Probe) and marks them runnable.
func (Family) Probe(k *family.Keys) (family.Detection, bool) {
	d, ok := Probe(k)
	d.Runnable = ok
	return d, ok
}

// Probe claims noise and context refiners beside a caption embedder and
// the learned image pad token of Z-Image's S3-DiT, in ComfyUI's (NextDiT)
// or diffusers' names; Lumina 2.0, ComfyUI's NextDiT without Z-Image's
// modulation, has no pad tokens.
func Probe(k *family.Keys) (family.Detection, bool) {
	roots := append(append([]string{}, family.NativeRoots...), family.DiffusersRoots...)
	root, key, ok := k.FindUnder(roots, "noise_refiner.", "context_refiner.", "cap_embedder.")
	if !ok || !k.Has(root+"x_pad_token") {
		return family.Detection{}, false
	}
	d := family.Detection{Evidence: []string{k.Key(key), fmt.Sprintf("caption width %d", k.Dim(root+"cap_embedder.0.weight", 0))}}
	return d, true
}

// Where each component's tensors live in the layouts users have.
var (
	transformerRoots = []string{"", "model.diffusion_model.", "transformer."}
	vaeRoots         = []string{keymap.VAEPrefix, "vae."}
	textRoots        = []string{"text_encoder.", "text_encoders.qwen3_4b.transformer.", "text_encoders.qwen3_4b."}
)

// Defaults: Turbo as ComfyUI's Z-Image Turbo template (8 steps, CFG 1,
// shift 3; res_multistep there, euler here) and the model card (8 DiT
// forwards, no guidance); Base as its model card (28–50 steps, CFG 3–5,
// a negative prompt). diffusers' 512 text tokens.
var (
	TurboDefaults = family.Defaults{Width: 1024, Height: 1024, Steps: 8, CFG: 1, Sampler: "euler", Scheduler: "simple", MaxSequenceLength: 512}
	BaseDefaults  = family.Defaults{Width: 1024, Height: 1024, Steps: 30, CFG: 4, Sampler: "euler", Scheduler: "simple", MaxSequenceLength: 512}
)

// HiddenLayer is the Qwen3 hidden state the pipelines read (diffusers'
// hidden_states[-2], ComfyUI's layer_idx -2).
const HiddenLayer = -2

// parts locates the components of a source.
type parts struct {
	root, vae, text string
	nc              nextdit.Config
	nerr            error
}

func locate(src *family.Source) parts {
	k := src.Keys()
	var p parts
	p.root = "-"
	for _, r := range transformerRoots {
		if nextdit.Has(src, r) {
			p.root = r
			break
		}
	}
	if p.root == "-" {
		p.root, p.nerr = "", errors.New("no Z-Image transformer weights")
	} else {
		p.nc, p.nerr = nextdit.ConfigFromWeights(src, p.root, src.JSON["transformer/config.json"])
	}
	p.vae = ldm.FirstRoot(k, vaeRoots, "decoder.conv_in.weight")
	p.text = ldm.QwenRoot(k, textRoots)
	return p
}

// missing names the files a transformer-only model still needs, or "".
func (p parts) missing() string {
	return ldm.Missing("Z-Image", ldm.Need{What: "VAE", Flag: "--vae ae.safetensors", Have: p.vae != ""},
		ldm.Need{What: "Qwen3 text encoder", Flag: "--text-encoder qwen_3_4b.safetensors", Have: p.text != ""})
}

// Load builds the Z-Image components.
func (Family) Load(ctx context.Context, src *family.Source, env family.Env) (*family.Components, error) {
	p := locate(src)
	if p.nerr != nil {
		return nil, p.nerr
	}
	if err := strayTextEncoder(src, p); err != nil {
		return nil, err
	}
	if msg := p.missing(); msg != "" {
		return nil, errors.New(msg)
	}
	nc := p.nc
	vc, err := vae.ConfigFromWeights(src, p.vae)
	if err != nil {
		return nil, err
	}
	f := ldm.FluxLatentFormat()
	if vc.ZChannels != f.Channels {
		return nil, fmt.Errorf("the VAE has %d latent channels; Z-Image needs the 16-channel Flux autoencoder (ae.safetensors, --vae)", vc.ZChannels)
	}
	if nc.InChannels != vc.ZChannels {
		return nil, fmt.Errorf("the Z-Image transformer takes %d latent channels, the VAE's latents have %d", nc.InChannels, vc.ZChannels)
	}
	if vc.InChannels != 3 {
		return nil, fmt.Errorf("the VAE decodes %d image channels; only RGB (3) is supported", vc.InChannels)
	}
	tc, tok, err := ldm.QwenEncoder(src, p.text, ldm.QwenSpec{Family: "Z-Image", Arch: qwenllm.Qwen3,
		Model: "Qwen3-4B (qwen_3_4b.safetensors)", Width: nc.CapDim, Vocab: tokenizer.Qwen3})
	if err != nil {
		return nil, err
	}
	if tc.Layers < 2 {
		return nil, fmt.Errorf("the Qwen3 text encoder has %d layer; Z-Image reads its second-to-last hidden state", tc.Layers)
	}
	comfyTok, err := tokenizer.NewQwen25()
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
	llm := qwenllm.Load(b.Sub(strings.TrimSuffix(p.text, ".")), tc)
	if err := b.Err(); err != nil {
		return nil, err
	}
	net, err := nextdit.Load(b.Sub(strings.TrimSuffix(p.root, ".")), dev, nc)
	if err != nil {
		return nil, err
	}
	ldm.ClaimIgnored(b, src, p.text)
	if err := ldm.CheckUnused(b, "Z-Image", p.vae, p.text, p.root); err != nil {
		return nil, err
	}
	ms, err := family.NewShiftedFlow(family.ZImageShift, 1, true)
	if err != nil {
		return nil, err
	}
	if cfg, ok := src.JSON["scheduler/scheduler_config.json"]; ok {
		if err := ms.ReadDiffusersScheduler(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(src.Path, "scheduler", "scheduler_config.json"), err)
		}
	}
	defaults := TurboDefaults
	if base(src) {
		defaults = BaseDefaults
	}
	return &family.Components{
		Text:     &Conditioner{Tok: tok, ComfyTok: comfyTok, Model: llm, Dev: dev, MaxLen: defaults.MaxSequenceLength},
		Denoiser: &Denoiser{Net: net, Dev: dev},
		VAE:      family.NewVAE(autoencoder, f),
		VAEOn:    ldm.VAEOnAt(src, p.vae, vc, f),
		Sampling: ms,
		Defaults: defaults,
		Parts:    Family{}.Describe(src),
	}, nil
}

// base tells Z-Image Base (CFG with a negative prompt, many steps) from
// Turbo (distilled: 8 steps, no CFG) by its file or folder name or its
// modelspec title: their tensors are alike. A name that says neither is
// taken for Turbo, the model most users have.
func base(src *family.Source) bool {
	name := strings.ToLower(filepath.Base(src.Path) + " " + src.Metadata["modelspec.title"])
	return !strings.Contains(name, "turbo") && (strings.Contains(name, "base") || strings.Contains(name, "de-turbo") || strings.Contains(name, "omni"))
}

// strayTextEncoder refuses a separate text-encoder file Z-Image has no use
// for (a CLIP, a T5, a second LLM).
func strayTextEncoder(src *family.Source, p parts) error {
	clips := []string{keymap.CLIPGPrefix, keymap.OpenCLIPGPrefix, keymap.OpenCLIPHPrefix, "cond_stage_model.transformer.", "text_encoders.clip_l."}
	if name, where := ldm.FoundUnder(src, clips); name != "" {
		return fmt.Errorf("%s holds a CLIP text encoder (%q); Z-Image uses Qwen3-4B only", where, name)
	}
	if f := ldm.StrayTextEncoder(src, p.text); f != "" {
		return fmt.Errorf("--text-encoder %s: Z-Image uses the Qwen3-4B text encoder, and this file is not it (or a second one)", f)
	}
	return nil
}

// Describe infers the component configurations from shapes.
func (Family) Describe(src *family.Source) []family.Part {
	p := locate(src)
	out := []family.Part{ldm.Part("transformer (Z-Image S3-DiT)", p.root, p.nc, p.nerr)}
	if p.vae != "" {
		out = append(out, ldm.VAEPart(src, p.vae, ldm.FluxLatentFormat()))
	}
	if p.text != "" {
		c, err := qwenllm.ConfigFromWeights(src, p.text, src.JSON["text_encoder/config.json"])
		out = append(out, ldm.Part("text encoder (Qwen3)", p.text, c, err))
	}
	return out
}

// Conditioner encodes prompts into Qwen3's second-to-last hidden states
// over the chat template, as diffusers' ZImagePipeline.encode_prompt and
// ComfyUI's Z-Image text encoder do.
type Conditioner struct {
	Tok *tokenizer.Qwen
	// ComfyTok is the tokenizer under ComfyUI's convention: ComfyUI's
	// Z-Image text encoder loads its qwen25_tokenizer folder, where
	// <think>, </think>, <tool_response> and </tool_response> are plain
	// text rather than Qwen3's added tokens (NewQwen25).
	ComfyTok *tokenizer.Qwen
	Model    *qwenllm.Model
	Dev      backend.Device
	// MaxLen is diffusers' max_sequence_length default (512).
	MaxLen int
}

// IDs returns the token ids the text encoder reads for text: under
// ComfyUI's convention the whole templated prompt; under diffusers' the
// templated prompt truncated to max_sequence_length (the pipeline pads it
// there, but keeps only the valid tokens' states, which a causal encoder
// computes the same without the padding).
func (c *Conditioner) IDs(text string, opt family.PromptOptions) []int {
	if opt.Convention == family.ConventionComfy {
		return c.ComfyTok.IDs(tokenizer.ComfyZImage(text))
	}
	n := opt.MaxSequenceLength
	if n == 0 {
		n = c.MaxLen
	}
	ids, _ := c.Tok.Encode(tokenizer.Qwen3Chat(text, true), n, false)
	return ids
}

// Encode encodes text (prompt weights are not read: neither peer weighs
// an LLM's tokens).
func (c *Conditioner) Encode(ctx context.Context, text string, opt family.PromptOptions) (*family.Cond, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ids := c.IDs(text, opt)
	h, err := c.Model.HiddenState(c.Dev, [][]int{ids}, nil, HiddenLayer)
	if err != nil {
		return nil, fmt.Errorf("encode prompt: %w", err)
	}
	return &family.Cond{Prompt: text, Tokens: len(ids), Chunks: 1, Context: h}, nil
}

// Tokenize returns the ids of the templated prompt.
func (c *Conditioner) Tokenize(text string) []int { return c.Tok.IDs(tokenizer.Qwen3Chat(text, true)) }

// Check refuses a clip skip: Z-Image has no CLIP, and reads one fixed
// hidden state of its language model.
func (c *Conditioner) Check(opt family.PromptOptions) error {
	if opt.ClipSkip > 1 {
		return &family.FieldError{Field: "clip_skip", Value: opt.ClipSkip, Msg: "Z-Image reads its Qwen3 encoder's second-to-last layer and has no CLIP: clip skip has no effect"}
	}
	return nil
}

// Denoiser runs the Z-Image transformer.
type Denoiser struct {
	Net *nextdit.Model
	Dev backend.Device
}

// Prediction is a flow velocity (the negated model output).
func (d *Denoiser) Prediction() sampling.Prediction { return sampling.Velocity }

// Reset has nothing to drop.
func (d *Denoiser) Reset() {}

// Bind stacks each run of rows whose text states have the same length (a
// prompt and a negative prompt of different lengths run as two batches,
// family.GroupByLength).
func (d *Denoiser) Bind(_ context.Context, rows []*family.Cond, in family.Inputs) (family.Step, error) {
	if in.Concat != nil || in.Control != nil {
		return nil, errors.New("this Z-Image transformer takes no concatenated latents or control residuals")
	}
	groups, err := family.GroupByLength(d.Dev, rows, "z-image")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
		return d.step(ctx, groups, len(rows), x, ts)
	}, nil
}

// step pads a latent to whole patches (circularly, as ComfyUI's
// pad_to_patch_size), runs each group with the model's timestep 1 − σ
// (ts are σ: the multiplier is 1), negates the output into the velocity
// and crops it back.
func (d *Denoiser) step(ctx context.Context, groups []*family.RowGroup, rows int, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
	dev := d.Dev
	if len(x.Shape) != 4 || x.Shape[0] != rows || len(ts) != rows {
		return nil, fmt.Errorf("z-image: latent %v with %d timesteps for %d bound rows", x.Shape, len(ts), rows)
	}
	t := make([]float32, len(ts))
	for i, s := range ts {
		t[i] = 1 - s
	}
	h, w := x.Shape[2], x.Shape[3]
	xp := nn.PadCircular(dev, x, d.Net.Config.Patch)
	defer func() {
		if xp != x {
			dev.Free(xp)
		}
	}()
	out, err := family.RunGroups(dev, groups, xp, func(g *family.RowGroup, img *backend.Tensor) (*backend.Tensor, error) {
		return d.Net.Forward(ctx, dev, img, g.Context, t[g.From:g.To])
	})
	if err != nil {
		return nil, err
	}
	dev.Unary(backend.Neg, out, out)
	return nn.CropTo(dev, out, h, w), nil
}
