// Package sd1 is the Stable Diffusion 1.x family: the LDM UNet with
// cross-attention to OpenAI CLIP ViT-L/14 (768 wide), the 4-channel KL
// autoencoder (scale 0.18215) and the 1000-step scaled-linear DDPM
// schedule, ε-prediction (v-prediction fine-tunes where the file says
// so). It registers itself; import it for its side
// effect (engine/families/all does).
package sd1

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/families/internal/ldm"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Name is the family's name.
const Name = "SD1.x"

// Canonical (single-file LDM) prefixes of the SD1 components.
const (
	PrefixUNet = keymap.UNetPrefix
	PrefixVAE  = keymap.VAEPrefix
	PrefixCLIP = keymap.CLIPPrefix
)

func init() { family.Register(Family{}) }

// Family is the SD1.x family.
type Family struct{}

// Name returns "SD1.x".
func (Family) Name() string { return Name }

// Probe claims an LDM UNet (input blocks, no size embedding label_emb, no
// SDXL conditioner) with an OpenAI CLIP text model (HF layout) and a
// context that is not SD2's 1024 — or, for a UNet-only file (ComfyUI's
// diffusion_models/), SD1's 768-wide context.
func (Family) Probe(k *family.Keys) (family.Detection, bool) {
	if !family.LDMUNet(k) || k.Has("cond_stage_model.model.") {
		return family.Detection{}, false
	}
	w, wkey := family.LDMContextWidth(k)
	if linear, _ := family.LDMLinearProjection(k); w == 1024 || linear {
		return family.Detection{}, false // SD2's context or projections
	}
	key := k.First(PrefixCLIP + "embeddings.token_embedding.")
	if key == "" {
		key = k.First("cond_stage_model.transformer.")
	}
	switch {
	case key != "":
		return family.Detection{Evidence: []string{k.Key(key)}, Runnable: true}, true
	case w == 768:
		return family.Detection{Evidence: []string{k.Key(wkey) + " (context 768)"}, Runnable: true}, true
	}
	return family.Detection{}, false
}

// LatentFormat is SD1's (and SD2's) latent space: 4 channels, factor 8,
// scale 0.18215, the widely used linear latent→RGB factors fitted for SD1
// latents and the SD1 TAESD.
func LatentFormat() family.LatentFormat { return ldm.SD1LatentFormat() }

// Defaults are SD1's: 512², 20 steps, CFG 7, euler / normal.
var Defaults = family.Defaults{Width: 512, Height: 512, Steps: 20, CFG: 7, Sampler: "euler", Scheduler: "normal"}

// Load builds the SD1 components: it infers every size from shapes, reads
// the prediction type the file declares (ε unless it says v), refuses
// variants it would run wrongly (inpainting UNets, tensors it does not use)
// and uploads the weights to env.Device.
func (Family) Load(ctx context.Context, src *family.Source, env family.Env) (*family.Components, error) {
	k := src.Keys()
	for _, c := range []struct{ prefix, what, folder, flag string }{
		{PrefixUNet, "UNet", "unet/", "-m"},
		{PrefixVAE, "VAE", "vae/ (and no --vae file was given)", "--vae"},
		{PrefixCLIP, "text encoder", "text_encoder/ (and no --text-encoder file was given)", "--text-encoder"},
	} {
		if !k.Has(c.prefix) {
			if src.Layout == weights.Diffusers {
				return nil, fmt.Errorf("no %s weights: the diffusers folder has no %s", c.what, c.folder)
			}
			return nil, fmt.Errorf("no %s weights (nothing under %q); give a separate file with %s", c.what, c.prefix, c.flag)
		}
	}
	if f := ldm.StrayTextEncoder(src, ""); f != "" {
		return nil, fmt.Errorf("--text-encoder %s: SD1.x uses one CLIP-L text encoder, and this file is not one", f)
	}
	uc, err := unet.ConfigFromWeights(src, PrefixUNet)
	if err != nil {
		return nil, err
	}
	vc, err := vae.ConfigFromWeights(src, PrefixVAE)
	if err != nil {
		return nil, err
	}
	cc, err := clip.ConfigFromWeights(src, PrefixCLIP)
	if err != nil {
		return nil, err
	}
	if cc.Width != uc.ContextDim {
		return nil, fmt.Errorf("text encoder width %d does not match the UNet context %d", cc.Width, uc.ContextDim)
	}
	concat, err := ldm.CheckLatents(uc, vc)
	if err != nil {
		return nil, err
	}
	decl, err := ldm.DeclaredPrediction(src)
	if err != nil {
		return nil, err
	}
	tok, err := ldm.LoadTokenizer(src.TokenizerDir)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dev := env.Device
	nets, err := ldm.LoadNets(src, dev, "SD1", uc, vc, ldm.TextSpec{Root: PrefixCLIP, Config: cc})
	if err != nil {
		return nil, err
	}
	ms, err := ldm.Sampling(decl)
	if err != nil {
		return nil, err
	}
	f := LatentFormat()
	f.Channels, f.Factor, f.Scale = vc.ZChannels, vc.Factor(), vc.ScalingFactor
	return &family.Components{
		Text: &ldm.CLIPText{Enc: clip.PromptEncoder{Tok: tok, Model: nets.Text[0], Pad: tok.EOS(),
			Embeddings: family.EmbeddingsFor(env.Embeddings, "clip_l", nets.Text[0].Config.Width)}, Dev: dev},
		Denoiser:        &ldm.Denoiser{Net: nets.UNet, Dev: dev, Pred: decl.Pred, Concat: concat},
		VAE:             family.NewVAE(nets.VAE, f),
		InpaintChannels: concat,
		VAEOn:           ldm.VAEOn(src, vc, f),
		Sampling:        ms,
		Defaults:        Defaults,
		Parts:           Family{}.Describe(src),

		PredictionEvidence: decl.Evidence,
	}, nil
}

// Describe infers the component configurations from shapes; a component
// whose configuration cannot be inferred is described by the reason.
func (Family) Describe(src *family.Source) []family.Part {
	cc, cerr := clip.ConfigFromWeights(src, PrefixCLIP)
	uc, uerr := unet.ConfigFromWeights(src, PrefixUNet)
	vc, verr := vae.ConfigFromWeights(src, PrefixVAE)
	return []family.Part{
		ldm.Part("UNet", PrefixUNet, uc, uerr),
		ldm.Part("VAE", PrefixVAE, vc, verr),
		ldm.Part("text encoder", PrefixCLIP, cc, cerr),
	}
}
