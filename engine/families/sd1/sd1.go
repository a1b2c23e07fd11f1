// Package sd1 is the Stable Diffusion 1.x family: the LDM UNet with
// cross-attention to OpenAI CLIP ViT-L/14 (768 wide), the 4-channel KL
// autoencoder (scale 0.18215) and the 1000-step scaled-linear DDPM
// schedule, ε-prediction. It registers itself; import it for its side
// effect (engine/families/all does).
package sd1

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
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
	if w == 1024 {
		return family.Detection{}, false
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
func LatentFormat() family.LatentFormat {
	return family.LatentFormat{
		Channels: 4, Factor: 8, Scale: vae.SD1ScalingFactor,
		RGB: [][3]float32{
			{0.3512, 0.2297, 0.3227},
			{0.3250, 0.4974, 0.2350},
			{-0.2829, 0.1762, 0.2721},
			{-0.2120, -0.2616, -0.7177},
		},
		TAESD: "taesd_decoder.safetensors",
	}
}

// Defaults are SD1's: 512², 20 steps, CFG 7, euler / normal.
var Defaults = family.Defaults{Width: 512, Height: 512, Steps: 20, CFG: 7, Sampler: "euler", Scheduler: "normal"}

// Load builds the SD1 components: it infers every size from shapes, refuses
// variants it would run wrongly (inpainting UNets, v-prediction, tensors it
// does not use) and uploads the weights to env.Device.
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
	if name := k.First(weights.ExtraTextEncoderPrefix); name != "" {
		info, _ := src.Info(name)
		return nil, fmt.Errorf("--text-encoder %s: SD1.x uses one CLIP-L text encoder, and this file is not one", info.File)
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
	if vc.ZChannels != uc.InChannels {
		if uc.InChannels == vc.ZChannels*2+1 {
			return nil, fmt.Errorf("looks like an inpainting model (the UNet takes %d channels); inpainting is not supported yet", uc.InChannels)
		}
		return nil, fmt.Errorf("vae has %d latent channels, the UNet takes %d", vc.ZChannels, uc.InChannels)
	}
	if uc.OutChannels != vc.ZChannels {
		return nil, fmt.Errorf("the UNet predicts %d channels, the latents have %d", uc.OutChannels, vc.ZChannels)
	}
	if vc.InChannels != 3 {
		return nil, fmt.Errorf("the VAE decodes %d image channels; only RGB (3) is supported", vc.InChannels)
	}
	if err := checkEpsilonPrediction(src); err != nil {
		return nil, err
	}
	tok, err := LoadTokenizer(src.TokenizerDir)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dev := env.Device
	b := weights.NewBuilder(src, dev)
	text := clip.Load(b.Sub(strings.TrimSuffix(PrefixCLIP, ".")), cc)
	net := unet.Load(b.Sub(strings.TrimSuffix(PrefixUNet, ".")), uc)
	codec := vae.Load(b.Sub(strings.TrimSuffix(PrefixVAE, ".")), vc)
	if err := b.Err(); err != nil {
		return nil, err
	}
	// A tensor nothing used means a structure the models did not build
	// (say, deeper transformers in the up path): refuse rather than run a
	// different network.
	var unused []string
	for _, p := range []string{PrefixUNet, PrefixVAE, PrefixCLIP} {
		for _, n := range b.Unused(p) {
			if !strings.HasSuffix(n, "position_ids") {
				unused = append(unused, n)
			}
		}
	}
	if len(unused) > 0 {
		return nil, fmt.Errorf("%d tensors this SD1 architecture does not use, e.g. %q: unsupported variant", len(unused), unused[0])
	}
	ms, err := family.NewDiscrete(0.00085, 0.012, 1000, "scaled_linear")
	if err != nil {
		return nil, err
	}
	f := LatentFormat()
	f.Channels, f.Factor, f.Scale = vc.ZChannels, vc.Factor(), vc.ScalingFactor
	return &family.Components{
		Text:     &Conditioner{Enc: clip.PromptEncoder{Tok: tok, Model: text, Pad: tok.EOS()}, Dev: dev},
		Denoiser: &UNetDenoiser{Net: net, Dev: dev},
		VAE:      family.NewVAE(codec, f),
		Sampling: ms,
		Defaults: Defaults,
		Parts:    Family{}.Describe(src),
	}, nil
}

// Describe infers the component configurations from shapes; a component
// whose configuration cannot be inferred is described by the reason.
func (Family) Describe(src *family.Source) []family.Part {
	part := func(name, prefix string, s fmt.Stringer, err error) family.Part {
		if err != nil {
			return family.Part{Name: name, Prefix: prefix, Config: "cannot infer: " + err.Error()}
		}
		return family.Part{Name: name, Prefix: prefix, Config: s.String()}
	}
	cc, cerr := clip.ConfigFromWeights(src, PrefixCLIP)
	uc, uerr := unet.ConfigFromWeights(src, PrefixUNet)
	vc, verr := vae.ConfigFromWeights(src, PrefixVAE)
	return []family.Part{
		part("UNet", PrefixUNet, uc, uerr),
		part("VAE", PrefixVAE, vc, verr),
		part("text encoder", PrefixCLIP, cc, cerr),
	}
}

// LoadTokenizer prefers a model folder's own vocabulary and falls back to
// the bundled OpenAI CLIP vocabulary.
func LoadTokenizer(dir string) (*tokenizer.CLIP, error) {
	if dir != "" {
		vocab, merges := filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt")
		if fileExists(vocab) && fileExists(merges) {
			return tokenizer.LoadCLIP(vocab, merges)
		}
	}
	return tokenizer.NewCLIP()
}

// Conditioner encodes prompts with SD1's one CLIP-L.
type Conditioner struct {
	Enc clip.PromptEncoder
	Dev backend.Device
}

// Encode encodes a prompt into the UNet's context [1, 77·k, 768]: under
// ComfyUI's convention with its weighting syntax and 75-token windows;
// under diffusers' literally, truncated to one 77-token window, as a
// diffusers pipeline encodes it.
func (c *Conditioner) Encode(ctx context.Context, text string, opt family.PromptOptions) (*family.Cond, error) {
	encode := c.Enc.Encode
	if opt.Convention != family.ConventionComfy {
		encode = c.Enc.EncodeLiteral
	}
	e, err := encode(ctx, c.Dev, text, opt.ClipSkip)
	if err != nil {
		return nil, err
	}
	return &family.Cond{Prompt: text, Tokens: e.Tokens, Chunks: e.Chunks, Context: e.Hidden}, nil
}

// Tokenize returns the CLIP ids with start and end tokens, untruncated.
func (c *Conditioner) Tokenize(text string) []int { return c.Enc.Tok.Encode(text) }

// Check refuses a clip skip deeper than the encoder.
func (c *Conditioner) Check(opt family.PromptOptions) error {
	if n := c.Enc.Model.Config.Layers; opt.ClipSkip > n {
		return &family.FieldError{Field: "clip_skip", Value: opt.ClipSkip, Msg: fmt.Sprintf("the text encoder has %d layers", n)}
	}
	return nil
}

// UNetDenoiser runs the LDM UNet as an ε-prediction denoiser.
type UNetDenoiser struct {
	Net *unet.Model
	Dev backend.Device
}

// Prediction is ε.
func (d *UNetDenoiser) Prediction() sampling.Prediction { return sampling.Eps }

// Bind stacks the rows' contexts once; SD1's UNet takes no extra inputs.
func (d *UNetDenoiser) Bind(_ context.Context, rows []*family.Cond, in family.Inputs) (family.Step, error) {
	if in.Guidance != 0 || in.Concat != nil || in.Control != nil {
		return nil, fmt.Errorf("the SD1 UNet takes no guidance embedding, concatenated latents or control residuals")
	}
	ctxT, err := family.BatchContexts(d.Dev, rows)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
		return d.Net.Forward(ctx, d.Dev, x, ts, ctxT)
	}, nil
}

// Reset drops the UNet's recorded CUDA graphs.
func (d *UNetDenoiser) Reset() { d.Net.ResetGraphs() }

// checkEpsilonPrediction refuses models marked as v-prediction (SD1
// v-prediction and zero-terminal-SNR fine-tunes), which darkroom does not
// run yet: ComfyUI's "v_pred" marker tensor, the modelspec metadata of a
// single file, or a diffusers scheduler config.
func checkEpsilonPrediction(src *family.Source) error {
	for _, marker := range []string{"v_pred", "ztsnr"} {
		if _, ok := src.Info(marker); ok {
			return fmt.Errorf("v-prediction model (found key %q); v-prediction is not supported yet", marker)
		}
	}
	if pt := src.Metadata["modelspec.prediction_type"]; pt != "" && pt != "epsilon" {
		return fmt.Errorf("%s model (metadata modelspec.prediction_type); only epsilon prediction is supported yet", pt)
	}
	if b, ok := src.JSON["scheduler/scheduler_config.json"]; ok {
		var cfg struct {
			PredictionType string `json:"prediction_type"`
		}
		if json.Unmarshal(b, &cfg) == nil && cfg.PredictionType != "" && cfg.PredictionType != "epsilon" {
			return fmt.Errorf("%s model (scheduler/scheduler_config.json); only epsilon prediction is supported yet", cfg.PredictionType)
		}
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
