package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Canonical (single-file LDM) prefixes of the SD1 components.
const (
	prefixUNet = "model.diffusion_model."
	prefixVAE  = "first_stage_model."
	prefixCLIP = "cond_stage_model.transformer.text_model."
)

// Model is a loaded text-to-image model, resident on one device. It is safe
// for concurrent use: its generating methods (Generate, EncodePrompt,
// Sample, Decode, DecodeImages) run one at a time.
type Model struct {
	// Name is the file or folder name; Path the full path.
	Name, Path string
	// Family is the detected model family ("SD1.x").
	Family string
	// Files are the weight files the model was read from.
	Files []string

	// mu serialises the methods that run the networks.
	mu   sync.Mutex
	dev  backend.Device
	tok  *tokenizer.CLIP
	text *clip.TextModel
	unet *unet.Model
	vae  *vae.Model
	// schedule is the SD discrete schedule as ComfyUI builds it;
	// scheduleDiffusers as diffusers does (for ConventionDiffusers*).
	schedule          *sampling.Discrete
	scheduleDiffusers *sampling.Discrete
	// data is the checkpoint of a model loaded from memory (for Hash).
	data     []byte
	hashOnce sync.Once
	hash     string
	hashErr  error
}

// Device returns the device the model lives on.
func (m *Model) Device() backend.Device { return m.dev }

// TextConfig describes the loaded text encoder.
func (m *Model) TextConfig() clip.Config { return m.text.Config }

// UNetConfig describes the loaded UNet.
func (m *Model) UNetConfig() unet.Config { return m.unet.Config }

// VAEConfig describes the loaded autoencoder.
func (m *Model) VAEConfig() vae.Config { return m.vae.Config }

// LatentChannels is the number of latent channels (4 for SD1).
func (m *Model) LatentChannels() int { return m.vae.Config.ZChannels }

// LatentFactor is the pixel-to-latent downsampling factor (8 for SD1).
func (m *Model) LatentFactor() int { return m.vae.Config.Factor() }

// Load opens a checkpoint (single .safetensors file or diffusers folder),
// detects its family and uploads its weights to dev.
func Load(ctx context.Context, path string, dev backend.Device) (*Model, error) {
	src, err := weights.OpenModel(path)
	if err != nil {
		return nil, err
	}
	m, err := loadFrom(ctx, src, dev)
	// Weights were converted into device memory; the mapping is not needed.
	if cerr := src.Close(); err == nil && cerr != nil {
		return nil, fmt.Errorf("%s: %w", path, cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Path = path
	m.Name = strings.TrimSuffix(filepath.Base(path), ".safetensors")
	return m, nil
}

// LoadBytes loads a single-file checkpoint held in memory (the built-in
// model); name is used in messages and as the model's name. data must not
// change while the model is in use.
func LoadBytes(ctx context.Context, name string, data []byte, dev backend.Device) (*Model, error) {
	src, err := weights.OpenBytes(name, data)
	if err != nil {
		return nil, err
	}
	m, err := loadFrom(ctx, src, dev)
	if cerr := src.Close(); err == nil && cerr != nil {
		return nil, fmt.Errorf("%s: %w", name, cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	m.Name, m.Path, m.data = name, name, data
	return m, nil
}

func loadFrom(ctx context.Context, src *weights.Model, dev backend.Device) (*Model, error) {
	if src.Layout == weights.Diffusers {
		have := map[string]bool{}
		for _, f := range src.Files {
			have[f.Component] = true
		}
		for _, c := range []string{"unet", "vae", "text_encoder"} {
			if !have[c] {
				return nil, fmt.Errorf("diffusers folder has no %s/ weights", c)
			}
		}
	}
	fam := weights.DetectFamily(src)
	if err := fam.Supported(); err != nil {
		return nil, err
	}
	uc, err := unet.ConfigFromWeights(src, prefixUNet)
	if err != nil {
		return nil, err
	}
	vc, err := vae.ConfigFromWeights(src, prefixVAE)
	if err != nil {
		return nil, err
	}
	cc, err := clip.ConfigFromWeights(src, prefixCLIP)
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
	tok, err := loadTokenizer(src.TokenizerDir)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b := weights.NewBuilder(src, dev)
	m := &Model{
		Family:   string(fam.Family),
		Files:    filePaths(src.Files),
		dev:      dev,
		tok:      tok,
		text:     clip.Load(b.Sub(strings.TrimSuffix(prefixCLIP, ".")), cc),
		unet:     unet.Load(b.Sub(strings.TrimSuffix(prefixUNet, ".")), uc),
		vae:      vae.Load(b.Sub(strings.TrimSuffix(prefixVAE, ".")), vc),
		schedule: sampling.DefaultDiscrete(),
	}
	if err := b.Err(); err != nil {
		return nil, err
	}
	// A tensor nothing used means a structure the models did not build
	// (say, deeper transformers in the up path): refuse rather than run a
	// different network.
	var unused []string
	for _, p := range []string{prefixUNet, prefixVAE, prefixCLIP} {
		for _, n := range b.Unused(p) {
			if !strings.HasSuffix(n, "position_ids") {
				unused = append(unused, n)
			}
		}
	}
	if len(unused) > 0 {
		return nil, fmt.Errorf("%d tensors this SD1 architecture does not use, e.g. %q: unsupported variant", len(unused), unused[0])
	}
	m.scheduleDiffusers, err = sampling.NewDiscreteDiffusers(0.00085, 0.012, 1000, "scaled_linear")
	if err != nil {
		return nil, err
	}
	return m, nil
}

// loadTokenizer prefers a model folder's own vocabulary and falls back to the
// bundled OpenAI CLIP vocabulary.
func loadTokenizer(dir string) (*tokenizer.CLIP, error) {
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
	return err == nil && !st.IsDir()
}

// Hash returns the A1111-style model hash: the first 10 hex digits of the
// SHA-256 of the checkpoint file (of the UNet weights for a diffusers folder).
// It reads the whole file once and caches the result.
func (m *Model) Hash() (string, error) {
	m.hashOnce.Do(func() {
		if m.data != nil {
			sum := sha256.Sum256(m.data)
			m.hash = hex.EncodeToString(sum[:])[:10]
			return
		}
		if len(m.Files) == 0 {
			m.hashErr = fmt.Errorf("model %s: no weight files to hash", m.Name)
			return
		}
		file := m.Files[0]
		for _, f := range m.Files {
			if strings.Contains(filepath.ToSlash(f), "/unet/") {
				file = f
			}
		}
		fh, err := os.Open(file)
		if err != nil {
			m.hashErr = fmt.Errorf("hash model: %w", err)
			return
		}
		defer fh.Close()
		h := sha256.New()
		if _, err := io.Copy(h, fh); err != nil {
			m.hashErr = fmt.Errorf("hash model: %w", err)
			return
		}
		m.hash = hex.EncodeToString(h.Sum(nil))[:10]
	})
	return m.hash, m.hashErr
}

func filePaths(files []weights.FileInfo) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Path
	}
	return out
}

// checkEpsilonPrediction refuses models marked as v-prediction (SD1/SD2
// v-prediction and zero-terminal-SNR fine-tunes), which darkroom does not run
// yet: ComfyUI's "v_pred" marker tensor, the modelspec metadata of a single
// file, or a diffusers scheduler config.
func checkEpsilonPrediction(src *weights.Model) error {
	for _, marker := range []string{"v_pred", "ztsnr"} {
		if _, ok := src.Info(marker); ok {
			return fmt.Errorf("v-prediction model (found key %q); v-prediction is not supported yet", marker)
		}
	}
	if pt := src.Metadata["modelspec.prediction_type"]; pt != "" && pt != "epsilon" {
		return fmt.Errorf("%s model (metadata modelspec.prediction_type); only epsilon prediction is supported yet", pt)
	}
	if src.Layout == weights.Diffusers {
		data, err := os.ReadFile(filepath.Join(src.Path, "scheduler", "scheduler_config.json"))
		if err == nil {
			var cfg struct {
				PredictionType string `json:"prediction_type"`
			}
			if json.Unmarshal(data, &cfg) == nil && cfg.PredictionType != "" && cfg.PredictionType != "epsilon" {
				return fmt.Errorf("%s model (scheduler/scheduler_config.json); only epsilon prediction is supported yet", cfg.PredictionType)
			}
		}
	}
	return nil
}
