// Package sd2 is the Stable Diffusion 2.x family (512 ε-prediction and
// 768 v-prediction): the SD1 UNet layout with linear projections, head
// width 64 and a 1024-wide context from OpenCLIP ViT-H/14 read at its
// penultimate layer, the SD1 autoencoder and discrete schedule. It
// registers itself; import it for its side effect (engine/families/all
// does).
package sd2

import (
	"context"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/internal/ldm"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Name is the family's name.
const Name = "SD2.x"

// Canonical prefixes: the UNet and VAE as SD1's; the text encoder in
// OpenCLIP layout (single files) or transformers' (diffusers folders,
// separate files).
const (
	PrefixUNet     = keymap.UNetPrefix
	PrefixVAE      = keymap.VAEPrefix
	PrefixOpenCLIP = "cond_stage_model.model."
	PrefixHFCLIP   = "cond_stage_model.transformer."
)

func init() { family.Register(Family{}) }

// Family is the SD2.x family.
type Family struct{}

// Name returns "SD2.x".
func (Family) Name() string { return Name }

// Probe claims an LDM UNet (input blocks, no label_emb, no SDXL
// conditioner) with an OpenCLIP text model or a 1024-wide context, and
// names the prediction type where the file says it.
func (Family) Probe(k *family.Keys) (family.Detection, bool) {
	if !family.LDMUNet(k) {
		return family.Detection{}, false
	}
	d := family.Detection{Runnable: true}
	if key := k.First(PrefixOpenCLIP); key != "" {
		d.Evidence = []string{k.Key(key)}
	} else if w, key := family.LDMContextWidth(k); w == 1024 {
		d.Evidence = []string{k.Key(key) + " (context 1024)"}
	} else if linear, key := family.LDMLinearProjection(k); linear {
		d.Evidence = []string{k.Key(key) + " (linear projection)"}
	} else {
		return family.Detection{}, false
	}
	switch {
	case k.Has("v_pred"):
		d.Variant, d.Evidence = "v-prediction", append(d.Evidence, k.Key("v_pred"))
	case k.JSONString("scheduler/scheduler_config.json", "prediction_type") == "v_prediction":
		d.Variant = "v-prediction"
		d.Evidence = append(d.Evidence, `scheduler/scheduler_config.json prediction_type="v_prediction"`)
	case k.JSONString("scheduler/scheduler_config.json", "prediction_type") == "epsilon":
		d.Variant = "ε-prediction"
		d.Evidence = append(d.Evidence, `scheduler/scheduler_config.json prediction_type="epsilon"`)
	case k.Meta("modelspec.prediction_type") != "":
		pt := k.Meta("modelspec.prediction_type")
		d.Variant = pt + "-prediction"
		d.Evidence = append(d.Evidence, family.Meta("modelspec.prediction_type", pt))
	}
	return d, true
}

// textRoot is where the model's text encoder lives, or "".
func textRoot(src *family.Source) string {
	for _, p := range []string{PrefixOpenCLIP, PrefixHFCLIP} {
		if src.Keys().Has(p) {
			return p
		}
	}
	return ""
}

// vPredictionStd is ComfyUI's test for SD2 checkpoints that say nothing:
// the spread of one late transformer's norm bias, above 0.09 in v models.
const (
	vPredictionKey = PrefixUNet + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
	vPredictionStd = 0.09
)

// Load builds the SD2 components: the configuration from shapes, the
// prediction type from what the file declares (or, as ComfyUI guesses it
// for 2.x files that say nothing, from the weights), ViT-H at its
// penultimate layer.
func (Family) Load(ctx context.Context, src *family.Source, env family.Env) (*family.Components, error) {
	te := textRoot(src)
	if !src.Keys().Has(PrefixUNet) {
		return nil, fmt.Errorf("no UNet weights (nothing under %q)", PrefixUNet)
	}
	if !src.Keys().Has(PrefixVAE) {
		return nil, fmt.Errorf("no VAE weights (nothing under %q); give a separate file with --vae", PrefixVAE)
	}
	if te == "" {
		return nil, fmt.Errorf("no text encoder weights (OpenCLIP ViT-H under %q or %q); give a separate file with --text-encoder", PrefixOpenCLIP, PrefixHFCLIP)
	}
	if f := ldm.StrayTextEncoder(src, ""); f != "" {
		return nil, fmt.Errorf("--text-encoder %s: SD2.x uses one OpenCLIP ViT-H text encoder, and this file is not one", f)
	}
	uc, err := unet.ConfigFromWeights(src, PrefixUNet)
	if err != nil {
		return nil, err
	}
	vc, err := vae.ConfigFromWeights(src, PrefixVAE)
	if err != nil {
		return nil, err
	}
	cc, err := textConfig(src, te)
	if err != nil {
		return nil, err
	}
	if cc.Width != uc.ContextDim {
		return nil, fmt.Errorf("text encoder width %d does not match the UNet context %d (SD2 uses OpenCLIP ViT-H, 1024 wide)", cc.Width, uc.ContextDim)
	}
	concat, err := ldm.CheckLatents(uc, vc)
	if err != nil {
		return nil, err
	}
	decl, err := ldm.DeclaredPrediction(src)
	if err != nil {
		return nil, err
	}
	if !decl.Known {
		decl.Pred = guessPrediction(src)
	}
	tok, err := ldm.LoadTokenizer(src.TokenizerDir)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dev := env.Device
	nets, err := ldm.LoadNets(src, dev, "SD2", uc, vc, ldm.TextSpec{Root: te, Config: cc})
	if err != nil {
		return nil, err
	}
	ms, err := ldm.Sampling(decl)
	if err != nil {
		return nil, err
	}
	f := ldm.SD1LatentFormat()
	f.Channels, f.Factor, f.Scale = vc.ZChannels, vc.Factor(), vc.ScalingFactor
	def := family.Defaults{Width: 512, Height: 512, Steps: 20, CFG: 7, Sampler: "euler", Scheduler: "normal"}
	if decl.Pred == sampling.V {
		def.Width, def.Height = 768, 768
	}
	return &family.Components{
		Text: &ldm.CLIPText{
			// SD2's tokenizer pads with "!" (id 0), as ComfyUI's SD2 tokenizer does.
			Enc: clip.PromptEncoder{Tok: tok, Model: nets.Text[0], Pad: 0,
				Embeddings: family.EmbeddingsFor(env.Embeddings, "clip_h", nets.Text[0].Config.Width)},
			Dev:    dev,
			Layers: skipMap(cc),
		},
		Denoiser:           &ldm.Denoiser{Net: nets.UNet, Dev: dev, Pred: decl.Pred, Concat: concat},
		VAE:                family.NewVAE(nets.VAE, f),
		InpaintChannels:    concat,
		VAEOn:              ldm.VAEOn(src, vc, f),
		Sampling:           ms,
		Defaults:           def,
		Parts:              Family{}.Describe(src),
		PredictionEvidence: decl.Evidence,
	}, nil
}

// textConfig infers the ViT-H configuration; its MLP is GELU in either
// layout.
func textConfig(src *family.Source, root string) (clip.Config, error) {
	cc, err := clip.ConfigFromWeights(src, root)
	cc.Act = backend.GELU
	return cc, err
}

// skipMap reads ViT-H at its penultimate layer: OpenCLIP files hold all
// 24 layers; diffusers' text_encoder (transformers layout) holds all but
// the last, so its last is the penultimate. A transformers-layout file
// with all 24 layers is read like OpenCLIP's.
func skipMap(cc clip.Config) ldm.SkipMap {
	m := ldm.SkipMap{Default: 2}
	if cc.Layout == clip.HF && cc.Layers != 24 {
		m.Dropped = 1
	}
	return m
}

// guessPrediction is ComfyUI's heuristic for SD2 files that declare no
// prediction type: v when the spread of one late norm bias is large.
func guessPrediction(src *family.Source) sampling.Prediction {
	v, err := src.Float32(vPredictionKey)
	if err != nil || len(v) == 0 {
		return sampling.Eps
	}
	var mean, sq float64
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	for _, x := range v {
		sq += (float64(x) - mean) * (float64(x) - mean)
	}
	if math.Sqrt(sq/float64(len(v))) > vPredictionStd {
		return sampling.V
	}
	return sampling.Eps
}

// Describe infers the component configurations from shapes.
func (Family) Describe(src *family.Source) []family.Part {
	te := textRoot(src)
	cc, cerr := textConfig(src, te)
	uc, uerr := unet.ConfigFromWeights(src, PrefixUNet)
	vc, verr := vae.ConfigFromWeights(src, PrefixVAE)
	return []family.Part{
		ldm.Part("UNet", PrefixUNet, uc, uerr),
		ldm.Part("VAE", PrefixVAE, vc, verr),
		ldm.Part("text encoder (OpenCLIP ViT-H)", te, cc, cerr),
	}
}
