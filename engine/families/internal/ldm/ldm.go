// Package ldm holds what the families built on the LDM UNet share (SD1.x,
// SD2.x, SDXL): the UNet as a family.Denoiser with ε or v prediction and an
// optional vector input, the CLIP tokenizer lookup, and the reading of the
// prediction type a checkpoint declares.
package ldm

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
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Denoiser runs an LDM UNet.
type Denoiser struct {
	Net  *unet.Model
	Dev  backend.Device
	Pred sampling.Prediction
	// Vector, when set, builds the UNet's vector input y [rows, adm] for the
	// bound rows (SDXL's pooled text embedding and size embeddings).
	Vector func(dev backend.Device, rows []*family.Cond, in family.Inputs) (*backend.Tensor, error)
	// Concat is the number of channels an inpainting UNet takes after the
	// latent's (the mask and the masked image's latents: 1 + Z), 0 for
	// others.
	Concat int
}

// Prediction is what the UNet predicts (ε or v).
func (d *Denoiser) Prediction() sampling.Prediction { return d.Pred }

// Bind stacks the rows' contexts (and vectors) once.
func (d *Denoiser) Bind(_ context.Context, rows []*family.Cond, in family.Inputs) (family.Step, error) {
	if in.Guidance != 0 || in.Control != nil {
		return nil, fmt.Errorf("this UNet takes no guidance embedding or control residuals")
	}
	concat, err := d.concatRows(len(rows), in.Concat)
	if err != nil {
		return nil, err
	}
	ctxT, err := family.BatchContexts(d.Dev, rows)
	if err != nil {
		return nil, err
	}
	var y *backend.Tensor
	if d.Vector != nil {
		if y, err = d.Vector(d.Dev, rows, in); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, x *backend.Tensor, ts []float32) (*backend.Tensor, error) {
		if concat != nil {
			if x.Shape[0] != concat.Shape[0] {
				return nil, fmt.Errorf("inpainting UNet: %d latent rows for %d bound rows", x.Shape[0], concat.Shape[0])
			}
			xc := nn.Concat(d.Dev, 1, x, concat)
			defer d.Dev.Free(xc)
			x = xc
		}
		return d.Net.Forward(ctx, d.Dev, x, ts, ctxT, y)
	}, nil
}

// concatRows stacks the per-image inpainting channels [B, Concat, h, w]
// for the bound rows (row i is image i mod B: the negative rows, then the
// prompt's); nil for a UNet without them.
func (d *Denoiser) concatRows(rows int, c *backend.Tensor) (*backend.Tensor, error) {
	switch {
	case d.Concat == 0 && c == nil:
		return nil, nil
	case d.Concat == 0:
		return nil, fmt.Errorf("this UNet takes no concatenated latents")
	case c == nil:
		return nil, fmt.Errorf("an inpainting UNet needs its mask and masked-image latents (%d channels)", d.Concat)
	case len(c.Shape) != 4 || c.Shape[1] != d.Concat || rows%c.Shape[0] != 0:
		return nil, fmt.Errorf("inpainting channels %v: want [images, %d, h, w] for %d rows", c.Shape, d.Concat, rows)
	}
	if rows == c.Shape[0] {
		return c, nil
	}
	parts := make([]*backend.Tensor, rows/c.Shape[0])
	for i := range parts {
		parts[i] = c
	}
	return nn.Concat(d.Dev, 0, parts...), nil
}

// Reset drops the UNet's recorded CUDA graphs.
func (d *Denoiser) Reset() { d.Net.ResetGraphs() }

// LoadTokenizer prefers a model folder's own vocabulary (dir holding
// vocab.json and merges.txt) and falls back to the bundled OpenAI CLIP
// vocabulary, which every CLIP-family tokenizer shares.
func LoadTokenizer(dir string) (*tokenizer.CLIP, error) {
	if dir != "" {
		vocab, merges := filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt")
		if fileExists(vocab) && fileExists(merges) {
			return tokenizer.LoadCLIP(vocab, merges)
		}
	}
	return tokenizer.NewCLIP()
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Declared is what a checkpoint says about its parameterization.
type Declared struct {
	// Pred is the declared prediction; Known is false when nothing says.
	Pred  sampling.Prediction
	Known bool
	// ZSNR is set when the file declares zero-terminal-SNR training.
	ZSNR bool
	// Evidence names where it was read ("key \"v_pred\"", a metadata
	// entry, a config file).
	Evidence string
}

// DeclaredPrediction reads the prediction type a model declares, where
// A1111, ComfyUI and diffusers read it: ComfyUI's "v_pred" / "ztsnr"
// marker tensors, the modelspec.prediction_type metadata of a single file,
// a diffusers scheduler config's prediction_type (and
// rescale_betas_zero_snr), and a neighbouring .yaml of the checkpoint with
// "parameterization: v" (the LDM config A1111 reads beside a file).
func DeclaredPrediction(src *family.Source) (Declared, error) {
	var d Declared
	if _, ok := src.Info("ztsnr"); ok {
		d.ZSNR = true
	}
	if _, ok := src.Info("v_pred"); ok {
		return Declared{Pred: sampling.V, Known: true, ZSNR: d.ZSNR, Evidence: `key "v_pred"`}, nil
	}
	if pt := src.Metadata["modelspec.prediction_type"]; pt != "" {
		p, err := parsePrediction(pt)
		if err != nil {
			return d, fmt.Errorf("metadata modelspec.prediction_type=%q: %w", pt, err)
		}
		return Declared{Pred: p, Known: true, ZSNR: d.ZSNR, Evidence: family.Meta("modelspec.prediction_type", pt)}, nil
	}
	if b, ok := src.JSON["scheduler/scheduler_config.json"]; ok {
		var cfg struct {
			PredictionType string `json:"prediction_type"`
			ZSNR           bool   `json:"rescale_betas_zero_snr"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return d, fmt.Errorf("scheduler/scheduler_config.json: %w", err)
		}
		if cfg.PredictionType != "" {
			p, err := parsePrediction(cfg.PredictionType)
			if err != nil {
				return d, fmt.Errorf("scheduler/scheduler_config.json prediction_type=%q: %w", cfg.PredictionType, err)
			}
			return Declared{Pred: p, Known: true, ZSNR: cfg.ZSNR || d.ZSNR, Evidence: fmt.Sprintf("scheduler/scheduler_config.json prediction_type=%q", cfg.PredictionType)}, nil
		}
	}
	if yaml := neighbourYAML(src.Path); yaml != "" {
		b, err := os.ReadFile(yaml)
		if err != nil {
			return d, err
		}
		if v, ok := yamlValue(string(b), "parameterization"); ok {
			p, err := parsePrediction(v)
			if err != nil {
				return d, fmt.Errorf("%s parameterization=%q: %w", yaml, v, err)
			}
			return Declared{Pred: p, Known: true, ZSNR: d.ZSNR, Evidence: fmt.Sprintf("%s parameterization: %s", filepath.Base(yaml), v)}, nil
		}
	}
	return d, nil
}

func parsePrediction(s string) (sampling.Prediction, error) {
	p, err := sampling.ParsePrediction(s)
	if err != nil {
		return 0, fmt.Errorf("unknown prediction type (want eps or v)")
	}
	return p, nil
}

// neighbourYAML returns the LDM config beside a single checkpoint file
// (model.safetensors → model.yaml), or "".
func neighbourYAML(path string) string {
	if path == "" || filepath.Ext(path) == "" {
		return ""
	}
	y := strings.TrimSuffix(path, filepath.Ext(path)) + ".yaml"
	if fileExists(y) {
		return y
	}
	return ""
}

// yamlValue finds "key: value" on a line of an LDM config (the only shape
// the parameterization setting has), unquoted.
func yamlValue(doc, key string) (string, bool) {
	for _, line := range strings.Split(doc, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && strings.TrimSpace(k) == key {
			v, _, _ = strings.Cut(v, "#")
			return strings.Trim(strings.TrimSpace(v), `"'`), true
		}
	}
	return "", false
}

// Sampling is the SD1/SD2/SDXL discrete schedule (scaled_linear betas
// 0.00085..0.012 over 1000 steps), rescaled to zero terminal SNR when the
// file declares it.
func Sampling(d Declared) (family.ModelSampling, error) {
	ms, err := family.NewDiscrete(0.00085, 0.012, 1000, "scaled_linear")
	if err != nil {
		return nil, err
	}
	if d.ZSNR {
		return ms.ZeroTerminalSNR()
	}
	return ms, nil
}

// CheckLatents checks that the UNet and the VAE agree on the latents and
// returns the channels an inpainting UNet takes beside them (the mask and
// the masked image's latents, 1 + Z; 0 for other UNets).
func CheckLatents(uc unet.Config, vc vae.Config) (int, error) {
	concat := 0
	if vc.ZChannels != uc.InChannels {
		if uc.InChannels != vc.ZChannels*2+1 {
			return 0, fmt.Errorf("vae has %d latent channels, the UNet takes %d", vc.ZChannels, uc.InChannels)
		}
		concat = vc.ZChannels + 1
	}
	if uc.OutChannels != vc.ZChannels {
		return 0, fmt.Errorf("the UNet predicts %d channels, the latents have %d", uc.OutChannels, vc.ZChannels)
	}
	if vc.InChannels != 3 {
		return 0, fmt.Errorf("the VAE decodes %d image channels; only RGB (3) is supported", vc.InChannels)
	}
	return concat, nil
}

// CheckUnused refuses a load that left tensors under the prefixes unread:
// a structure the models did not build (say, deeper transformers in the
// up path) would otherwise run as a different network.
func CheckUnused(b *weights.Builder, arch string, prefixes ...string) error {
	var unused []string
	for _, p := range prefixes {
		for _, n := range b.Unused(p) {
			if !strings.HasSuffix(n, "position_ids") {
				unused = append(unused, n)
			}
		}
	}
	if len(unused) > 0 {
		return fmt.Errorf("%d tensors this %s architecture does not use, e.g. %q: unsupported variant", len(unused), arch, unused[0])
	}
	return nil
}

// Part describes a component by its inferred configuration, or by why it
// could not be inferred.
func Part(name, prefix string, s fmt.Stringer, err error) family.Part {
	if err != nil {
		return family.Part{Name: name, Prefix: prefix, Config: "cannot infer: " + err.Error()}
	}
	return family.Part{Name: name, Prefix: prefix, Config: s.String()}
}

// SD1LatentFormat is the latent space of SD1 and SD2: 4 channels, factor
// 8, scale 0.18215, the widely used linear latent→RGB factors fitted for
// SD1 latents and the SD1 TAESD.
func SD1LatentFormat() family.LatentFormat {
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

// TextSpec is one CLIP text encoder to load: the root prefix its tensors
// live under and its configuration.
type TextSpec struct {
	Root   string
	Config clip.Config
}

// Nets are the networks of an LDM checkpoint, on the device.
type Nets struct {
	// Text holds the text encoders, in the order they were asked for.
	Text []*clip.TextModel
	UNet *unet.Model
	VAE  *vae.Model
}

// VAEOn returns a loader of the checkpoint's VAE alone on another device
// (family.Components.VAEOn).
func VAEOn(src weights.Source, vc vae.Config, f family.LatentFormat) func(backend.Device) (family.VAE, error) {
	return VAEOnAt(src, keymap.VAEPrefix, vc, f)
}

// VAEOnAt is VAEOn for an autoencoder under another prefix ("vae." in
// ComfyUI's all-in-one Flux files).
func VAEOnAt(src weights.Source, prefix string, vc vae.Config, f family.LatentFormat) func(backend.Device) (family.VAE, error) {
	return func(dev backend.Device) (family.VAE, error) {
		b := weights.NewBuilder(src, dev)
		m := vae.Load(b.Sub(strings.TrimSuffix(prefix, ".")), vc)
		if err := b.Err(); err != nil {
			return nil, fmt.Errorf("vae: %w", err)
		}
		return family.NewVAE(m, f), nil
	}
}

// LoadNets uploads the UNet (under keymap.UNetPrefix), the VAE (under
// keymap.VAEPrefix) and the text encoders, and refuses a checkpoint with
// missing or misshaped tensors or with tensors under those prefixes that
// nothing read (arch names the architecture in that message).
func LoadNets(src weights.Source, dev backend.Device, arch string, uc unet.Config, vc vae.Config, texts ...TextSpec) (*Nets, error) {
	b := weights.NewBuilder(src, dev)
	n := &Nets{}
	prefixes := []string{keymap.UNetPrefix, keymap.VAEPrefix}
	for _, t := range texts {
		n.Text = append(n.Text, clip.Load(b.Sub(strings.TrimSuffix(t.Root, ".")), t.Config))
		prefixes = append(prefixes, t.Root)
	}
	n.UNet = unet.Load(b.Sub(strings.TrimSuffix(keymap.UNetPrefix, ".")), uc)
	n.VAE = vae.Load(b.Sub(strings.TrimSuffix(keymap.VAEPrefix, ".")), vc)
	if err := b.Err(); err != nil {
		return nil, err
	}
	if err := CheckUnused(b, arch, prefixes...); err != nil {
		return nil, err
	}
	return n, nil
}
