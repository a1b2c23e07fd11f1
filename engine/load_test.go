package engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// A checkpoint of another family is refused with the key that gave it
// away, never run.
func TestLoadRefusesOtherFamilies(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		keys []string
		want string
	}{
		{"flux2", []string{"double_stream_modulation_img.lin.weight", "double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"}, "recognised as Flux.2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".safetensors")
			tensors := map[string]safetensors.Tensor{}
			for _, k := range c.keys {
				tensors[k] = safetensors.Tensor{DType: tensor.F16, Shape: []int{2}, Data: make([]byte, 4)}
			}
			err := safetensors.Write(path, tensors, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(context.Background(), path, cpu.New())
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "not supported yet") || !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error %v, want %q … not supported yet, prefixed by the path", err, c.want)
			}
		})
	}
}

// A checkpoint missing tensors names them all in one error.
func TestLoadReportsMissingTensors(t *testing.T) {
	path := copyWith(t, func(n string) bool {
		return strings.Contains(n, "middle_block.1.proj_out") || strings.Contains(n, "decoder.mid.attn_1.q.")
	}, nil)
	_, err := Load(context.Background(), path, cpu.New())
	if err == nil {
		t.Fatal("loaded a checkpoint with missing tensors")
	}
	for _, want := range []string{"4 tensor problems", `missing "model.diffusion_model.middle_block.1.proj_out.weight"`, `missing "first_stage_model.decoder.mid.attn_1.q.weight"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// copyWith writes the tiny checkpoint, less the tensors drop selects (drop
// may be nil), plus extra tensors to a temp file.
func copyWith(t *testing.T, drop func(name string) bool, extra map[string]safetensors.Tensor) string {
	t.Helper()
	f, err := safetensors.Open(layouts[0].path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tensors := map[string]safetensors.Tensor{}
	for _, n := range f.Names() {
		if drop != nil && drop(n) {
			continue
		}
		info, _ := f.Info(n)
		raw, _ := f.Raw(n)
		tensors[n] = safetensors.Tensor{DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), raw...)}
	}
	for k, v := range extra {
		tensors[k] = v
	}
	path := filepath.Join(t.TempDir(), "variant.safetensors")
	if err := safetensors.Write(path, tensors, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// Variants the SD1 models do not build are refused, not run as something
// else.
func TestLoadRefusesVariants(t *testing.T) {
	for _, c := range []struct {
		name  string
		extra map[string]safetensors.Tensor
		want  string
	}{
		{"deeper up-path transformer", map[string]safetensors.Tensor{
			"model.diffusion_model.output_blocks.3.1.transformer_blocks.1.norm1.weight": {DType: tensor.F16, Shape: []int{32}, Data: make([]byte, 64)},
		}, "tensors this SD1 architecture does not use"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(context.Background(), copyWith(t, nil, c.extra), cpu.New())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// ComfyUI's "v_pred" marker makes an SD1 checkpoint a v-prediction model
// (v fine-tunes), said where it was read.
func TestLoadVPredictionMarker(t *testing.T) {
	small := safetensors.Tensor{DType: tensor.F16, Shape: []int{2}, Data: make([]byte, 4)}
	m, err := Load(context.Background(), copyWith(t, nil, map[string]safetensors.Tensor{"v_pred": small}), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.c.Denoiser.Prediction(); got != sampling.V {
		t.Errorf("prediction %v, want v", got)
	}
	if m.c.PredictionEvidence != `key "v_pred"` {
		t.Errorf("evidence %q", m.c.PredictionEvidence)
	}
}

// The parts of the API report bad arguments as errors, never panics.
func TestSampleDecodeArguments(t *testing.T) {
	ctx := context.Background()
	m, err := Load(ctx, layouts[0].path, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	cond, err := m.EncodePrompt(ctx, "x", 1)
	if err != nil {
		t.Fatal(err)
	}
	shape := []int{1, 4, 8, 8}
	noise := make([]float32, 256)
	for _, c := range []struct {
		name string
		p    SampleParams
	}{
		{"no conditioning", SampleParams{CFG: 7, Sampler: "euler", Scheduler: "normal", Steps: 2, Noise: noise, Shape: shape}},
		{"no negative with cfg", SampleParams{Cond: cond, CFG: 7, Sampler: "euler", Scheduler: "normal", Steps: 2, Noise: noise, Shape: shape}},
		{"empty sigmas", SampleParams{Cond: cond, CFG: 1, Sampler: "euler", Sigmas: []float32{}, Noise: noise, Shape: shape}},
		{"zero batch", SampleParams{Cond: cond, CFG: 1, Sampler: "euler", Scheduler: "normal", Steps: 2, Shape: []int{0, 4, 8, 8}}},
		{"wrong channels", SampleParams{Cond: cond, CFG: 1, Sampler: "euler", Scheduler: "normal", Steps: 2, Noise: noise, Shape: []int{1, 3, 8, 8}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := m.Sample(ctx, c.p, nil); err == nil {
				t.Fatal("no error")
			}
		})
	}
	// cfg 1 needs no negative conditioning.
	if _, err := m.Sample(ctx, SampleParams{Cond: cond, CFG: 1, Sampler: "euler", Scheduler: "normal", Steps: 2, Noise: noise, Shape: shape}, nil); err != nil {
		t.Fatalf("cfg 1 without negative: %v", err)
	}
	if _, err := m.Decode(ctx, nil, []int{0, 4, 8, 8}); err == nil {
		t.Fatal("Decode accepted an empty batch")
	}
}

// TestLoadSplitFiles loads the tiny model as ComfyUI users keep models:
// the checkpoint with its VAE and text encoder replaced by separate files
// (here the diffusers folder's, the same weights). Generate gives the same
// latents and pixels as the checkpoint alone, and the files are listed.
func TestLoadSplitFiles(t *testing.T) {
	ctx := context.Background()
	dir := testref.Path("sd1-tiny-a", "diffusers")
	files := ModelFiles{
		Model:        testref.Path("sd1-tiny-a", "single.safetensors"),
		VAE:          filepath.Join(dir, "vae", "diffusion_pytorch_model.safetensors"),
		TextEncoders: []string{filepath.Join(dir, "text_encoder", "model.safetensors")},
	}
	split, err := LoadFiles(ctx, files, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer split.Close()
	whole, err := Load(ctx, files.Model, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Close()
	if len(split.Files) != 3 {
		t.Errorf("files %v, want the checkpoint, the VAE and the text encoder", split.Files)
	}
	req := DefaultRequest()
	req.Prompt, req.Negative, req.Width, req.Height, req.Steps, req.Seed = "a (cat:1.2)", "blurry", 64, 48, 4, 9
	a, err := split.Generate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := whole.Generate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Latents, b.Latents) || !bytes.Equal(a.Images[0].Pix, b.Images[0].Pix) {
		t.Error("separate files gave another image than the checkpoint")
	}
	// A file of the wrong kind is refused naming its flag.
	files.VAE = files.TextEncoders[0]
	if _, err := LoadFiles(ctx, files, cpu.New()); err == nil || !strings.HasPrefix(err.Error(), "--vae ") {
		t.Errorf("text encoder as --vae: %v", err)
	}
}

// TestLoadSplitFilesRefused: a diffusers folder without text_encoder/ loads
// with a separate --text-encoder file, and SD1 refuses a text encoder it
// cannot use (T5 names) naming the file, instead of ignoring it.
func TestLoadSplitFilesRefused(t *testing.T) {
	ctx := context.Background()
	src := testref.Path("sd1-tiny-a", "diffusers")
	dir := t.TempDir()
	for _, sub := range []string{"unet", "vae", "scheduler", "tokenizer", "model_index.json"} {
		if err := os.Symlink(filepath.Join(must(filepath.Abs(src)), sub), filepath.Join(dir, sub)); err != nil {
			t.Fatal(err)
		}
	}
	te := filepath.Join(src, "text_encoder", "model.safetensors")
	// (The tiny UNet's 64-wide context tells no family by itself; a real
	// SD1 UNet alone is claimed, see engine/families/all.)
	if _, err := LoadFiles(ctx, ModelFiles{Model: dir}, cpu.New()); err == nil || !strings.Contains(err.Error(), "unknown model family") {
		t.Errorf("folder without text_encoder/: %v", err)
	}
	m, err := LoadFiles(ctx, ModelFiles{Model: dir, TextEncoders: []string{te}}, cpu.New())
	if err != nil {
		t.Fatalf("folder + --text-encoder: %v", err)
	}
	m.Close()
	t5 := filepath.Join(t.TempDir(), "t5xxl.safetensors")
	one := safetensors.Tensor{DType: tensor.F16, Shape: []int{2}, Data: make([]byte, 4)}
	if err := safetensors.Write(t5, map[string]safetensors.Tensor{"encoder.block.0.layer.0.SelfAttention.q.weight": one}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFiles(ctx, ModelFiles{Model: testref.Path("sd1-tiny-a", "single.safetensors"), TextEncoders: []string{t5}}, cpu.New())
	if err == nil || !strings.Contains(err.Error(), "--text-encoder "+t5+": SD1.x uses one CLIP-L text encoder") || !strings.Contains(err.Error(), "(+ --text-encoder ") {
		t.Errorf("T5 beside SD1: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
