package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/lora"

	// Every model family registers itself.
	_ "github.com/darkroom-ai/darkroom/engine/families/all"
)

// Family-seam types the engine's API exposes, so that frontends need no
// other package.
type (
	// Detection is what the family probes found in a checkpoint.
	Detection = family.Detection
	// LatentFormat describes a family's latent space.
	LatentFormat = family.LatentFormat
	// Defaults are a family's generation defaults.
	Defaults = family.Defaults
	// Part describes one component of a loaded model.
	Part = family.Part
	// Convention selects whose numerical conventions a run reproduces.
	Convention = family.Convention
)

// Conventions (see family.Convention).
const (
	ConventionComfy            = family.ConventionComfy
	ConventionDiffusers        = family.ConventionDiffusers
	ConventionDiffusersRounded = family.ConventionDiffusersRounded
)

// ErrNotSupported is matched (errors.Is) by the load error of a model whose
// family darkroom recognises but cannot run yet.
var ErrNotSupported = family.ErrNotSupported

// Model is a loaded text-to-image model, resident on one device: the
// components its family built. It is safe for concurrent use: its
// generating methods (Generate, EncodePrompt, Sample, Decode, DecodeImages)
// run one at a time.
type Model struct {
	// Name is the file or folder name; Path the full path.
	Name, Path string
	// Family is the detected model family ("SD1.x").
	Family string
	// Detection is what decided the family.
	Detection Detection
	// Files are the weight files the model was read from.
	Files []string

	// mu serialises the methods that run the networks.
	mu  sync.Mutex
	dev backend.Device
	c   *family.Components
	// src stays open while the model lives (a mapping later layers may
	// stream weights from); Close releases it.
	src *weights.Model
	// cpuDev and cpuVAE decode again in float32 what the device's 16-bit
	// VAE overflowed on (built on first need); notices collects what the
	// running job should tell the user.
	cpuDev  backend.Device
	cpuVAE  family.VAE
	notices []string
	// loras are the LoRAs merged into the weights, in order.
	loras []LoRA
	// data is the checkpoint of a model loaded from memory (for Hash).
	data     []byte
	hashOnce sync.Once
	hash     string
	hashErr  error
}

// Device returns the device the model lives on.
func (m *Model) Device() backend.Device { return m.dev }

// Parts describes the loaded components (name, tensor prefix, configuration).
func (m *Model) Parts() []Part { return m.c.Parts }

// LatentFormat describes the model's latent space.
func (m *Model) LatentFormat() LatentFormat { return m.c.VAE.Format() }

// Defaults returns the family's generation defaults.
func (m *Model) Defaults() Defaults { return m.c.Defaults }

// Close releases the model's files (a model dropped without Close releases
// them when it is garbage collected). The device memory of its weights is
// returned when the model is garbage collected. Close waits for a running
// job; it must not be called from an onEvent callback.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.src == nil {
		return nil
	}
	err := m.src.Close()
	m.src = nil
	return err
}

// ModelFiles names the files of one model, as users keep them: a
// checkpoint (single .safetensors file or diffusers folder), or a
// diffusion-model file with separate VAE and text-encoder files (ComfyUI's
// split layout). VAE, when set, replaces the checkpoint's VAE.
//
// LoRAs are merged into the weights as they are built, in order.
type ModelFiles struct {
	Model        string
	VAE          string
	TextEncoders []string
	LoRAs        []LoRA
	// EmbeddingDirs are the folders "embedding:NAME" in prompts is looked
	// up in (textual inversion); none leaves the syntax as text.
	EmbeddingDirs []string
}

// describe names the files in messages: "model.safetensors (+ --vae
// x.safetensors, --text-encoder clip_l.safetensors)".
func (f ModelFiles) describe() string {
	var extra []string
	if f.VAE != "" {
		extra = append(extra, "--vae "+f.VAE)
	}
	for _, te := range f.TextEncoders {
		extra = append(extra, "--text-encoder "+te)
	}
	for _, l := range f.LoRAs {
		extra = append(extra, "--lora "+l.String())
	}
	if len(extra) == 0 {
		return f.Model
	}
	return f.Model + " (+ " + strings.Join(extra, ", ") + ")"
}

// Load opens a checkpoint (single .safetensors file or diffusers folder),
// detects its family and uploads its weights to dev.
func Load(ctx context.Context, path string, dev backend.Device) (*Model, error) {
	return LoadFiles(ctx, ModelFiles{Model: path}, dev)
}

// LoadFiles opens a model made of one or more files, detects its family
// and uploads its weights to dev.
func LoadFiles(ctx context.Context, files ModelFiles, dev backend.Device) (*Model, error) {
	src, err := weights.OpenFiles(files.Model, files.VAE, files.TextEncoders)
	if err != nil {
		return nil, err
	}
	var emb family.Embeddings
	if st := newEmbeddingStore(files.EmbeddingDirs); st != nil {
		emb = st
	}
	m, err := loadFrom(ctx, src, dev, files.LoRAs, emb)
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("%s: %w", files.describe(), err)
	}
	m.Path = files.Model
	m.Name = strings.TrimSuffix(filepath.Base(files.Model), ".safetensors")
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
	m, err := loadFrom(ctx, src, dev, nil, nil)
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	m.Name, m.Path, m.data = name, name, data
	return m, nil
}

// Detect opens a model's files and names its family, without loading it.
func Detect(files ModelFiles) (Detection, error) {
	src, err := weights.OpenFiles(files.Model, files.VAE, files.TextEncoders)
	if err != nil {
		return Detection{}, err
	}
	defer src.Close()
	_, d, err := family.Detect(family.NewKeys(src))
	if err != nil {
		return Detection{}, fmt.Errorf("%s: %w", files.Model, err)
	}
	return d, nil
}

// loadFrom detects the family of src, merges loras into its weights (the
// LoRA files stay open with src) and builds the components on dev.
func loadFrom(ctx context.Context, src *weights.Model, dev backend.Device, loras []LoRA, emb family.Embeddings) (*Model, error) {
	if src.KeyList != nil {
		return nil, fmt.Errorf("a key list (tensor names and shapes, no weights) can be inspected with darkroom info, not run")
	}
	s := family.NewSource(src)
	fam, det, err := family.Detect(s.Keys())
	if err != nil {
		return nil, err
	}
	if len(loras) > 0 {
		patched, err := lora.Apply(src.Source, det.Name(), loraSpecs(loras))
		if err != nil {
			return nil, err
		}
		src.Source = patched
	}
	c, err := fam.Load(ctx, s, family.Env{Device: dev, Detection: det, Embeddings: emb})
	if err != nil {
		if errors.Is(err, family.ErrNotSupported) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", det.Name(), err)
	}
	if c.Text == nil || c.Denoiser == nil || c.VAE == nil || c.Sampling == nil {
		return nil, fmt.Errorf("family %s built incomplete components", fam.Name())
	}
	m := &Model{Family: det.Name(), Detection: det, Files: filePaths(src.Files), dev: dev, c: c, src: src, loras: loras}
	// A model dropped without Close still releases its files.
	runtime.AddCleanup(m, func(src *weights.Model) { src.Close() }, src)
	return m, nil
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

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// DefaultRequest returns a request for this model with its defaults (the
// family's, or the built-in model's own): what scripts and recipes should
// start from instead of the package-level DefaultRequest, which knows no
// model.
func (m *Model) DefaultRequest() Request {
	r := DefaultRequest()
	r.Model = m.Path
	d := m.c.Defaults
	if d.Width > 0 && d.Height > 0 {
		r.Width, r.Height = d.Width, d.Height
	}
	if d.Steps > 0 {
		r.Steps = d.Steps
	}
	if d.CFG > 0 {
		r.CFG = d.CFG
	}
	if d.Sampler != "" {
		r.Sampler = d.Sampler
	}
	if d.Scheduler != "" {
		r.Scheduler = d.Scheduler
	}
	return r
}
