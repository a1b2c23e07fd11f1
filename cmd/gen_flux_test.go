package cmd

import (
	"context"
	"encoding/binary"
	"image"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

var fluxPipe = filepath.Join("..", "testdata", "reference", "flux-pipe")

// fluxDevFolder links the tiny FLUX.1-dev pipeline folder together (the
// fixture keeps the T5 weights in t5-tiny).
func fluxDevFolder(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "FLUX.1-dev")
	linkTreeInto(t, filepath.Join(fluxPipe, "dev"), dir)
	linkInto(t, filepath.Join("..", "testdata", "reference", "t5-tiny", "model.safetensors"), filepath.Join(dir, "text_encoder_2", "model.safetensors"))
	return dir
}

// linkInto links dst to src (made absolute).
func linkInto(t *testing.T, src, dst string) {
	t.Helper()
	abs, err := filepath.Abs(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, dst); err != nil {
		t.Fatal(err)
	}
}

// linkTreeInto links every file under root into dir (same relative paths).
func linkTreeInto(t *testing.T, root, dir string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		linkInto(t, p, filepath.Join(dir, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGenFlux generates the FluxPipeline case dev_default from the command
// line (a diffusers folder, --convention diffusers, --guidance): the PNG
// equals diffusers' image (≥ 45 dB over 8-bit quantisation), its text
// records the distilled guidance as Forge does, and gen --from makes the
// same image again.
func TestGenFlux(t *testing.T) {
	model := fluxDevFolder(t)
	out := filepath.Join(t.TempDir(), "flux.png")
	prompt := `A cozy Café at dusk, neon sign reading "OPEN 24/7"!`
	_, stderr, code := runCmd(t, "gen", "-m", model, "-p", prompt, "-s", "42", "--steps", "4", "-W", "64", "-H", "48",
		"--convention", "diffusers", "--guidance", "3.5", "--max-sequence-length", "512", "-o", out)
	if code != 0 {
		t.Fatalf("gen failed: %s", stderr)
	}
	got := readPNG(t, out)
	if p := psnrFloat(got, fixtureImage(t, filepath.Join(fluxPipe, "cases.safetensors"), "dev_default/image")); p < 45 {
		t.Errorf("PSNR %.1f dB against diffusers' image, want ≥ 45", p)
	}
	pr, err := engine.ReadPNGRequest(out)
	if err != nil {
		t.Fatal(err)
	}
	meta := pr.Request
	if meta.Guidance != 3.5 || meta.MaxSequenceLength != 512 || meta.CFG != 1 {
		t.Errorf("stored request: guidance %g, max_sequence_length %d, cfg %g", meta.Guidance, meta.MaxSequenceLength, meta.CFG)
	}
	if p := pngParameters(t, out); !strings.Contains(p, "Distilled CFG Scale: 3.5") || !strings.Contains(p, "CFG scale: 1") {
		t.Errorf("A1111 parameters lack Forge's distilled guidance: %q", p)
	}
	checkFromRepeats(t, out, model, got)
}

// fixtureImage reads a float image [H, W, 3] from a fixture file.
func fixtureImage(t *testing.T, file, key string) []float32 {
	t.Helper()
	f, err := safetensors.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := f.Float32(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// pngParameters returns a PNG's A1111 "parameters" text.
func pngParameters(t *testing.T, path string) string {
	t.Helper()
	pf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	text, err := engine.ReadPNGText(pf)
	if err != nil {
		t.Fatal(err)
	}
	return text["parameters"]
}

// checkFromRepeats runs gen --from out with model and wants the image got
// again, bit for bit.
func checkFromRepeats(t *testing.T, out, model string, got image.Image) {
	t.Helper()
	again := filepath.Join(t.TempDir(), "again.png")
	if _, stderr, code := runCmd(t, "gen", "--from", out, "-m", model, "-o", again); code != 0 {
		t.Fatalf("gen --from failed: %s", stderr)
	}
	if p := psnr8(readPNG(t, again), got); !math.IsInf(p, 1) {
		t.Errorf("gen --from: PSNR %.1f dB, want the same image", p)
	}
}

// TestGenFluxNeedsFiles: BFL's transformer file alone names the files it
// still needs, in one line; --guidance on a model without embedded
// guidance is refused.
func TestGenFluxNeedsFiles(t *testing.T) {
	_, stderr, code := runCmd(t, "gen", "-m", filepath.Join(fluxPipe, "bfl", "flux1-dev.safetensors"), "-p", "x", "-o", filepath.Join(t.TempDir(), "x.png"))
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	if code == 0 || !strings.Contains(last, "also give --vae ae.safetensors --text-encoder clip_l.safetensors --text-encoder t5xxl_fp16.safetensors") {
		t.Errorf("code %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCmd(t, "gen", "-m", tinyModel, "-p", "x", "--guidance", "3.5", "-W", "64", "-H", "64", "-o", filepath.Join(t.TempDir(), "y.png"))
	if code == 0 || !strings.Contains(stderr, "--guidance 3.5: this model has no embedded guidance") {
		t.Errorf("guidance on SD1: code %d, stderr %q", code, stderr)
	}
}

// psnrFloat compares an 8-bit image with a float image [H, W, 3] in [0, 1].
func psnrFloat(img image.Image, want []float32) float64 {
	r := img.Bounds()
	var mse float64
	i := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			for _, c := range []uint32{cr, cg, cb} {
				d := float64(c>>8)/255 - float64(want[i])
				mse += d * d
				i++
			}
		}
	}
	if i != len(want) {
		return 0
	}
	return 10 * math.Log10(1/(mse/float64(i)))
}

// TestGenEmbedding: --embedding-dir finds embedding:NAME; an embedding made
// of a word's token vectors gives the word's image, and a missing one is
// one line.
func TestGenEmbedding(t *testing.T) {
	dir := t.TempDir()
	f, err := safetensors.Open(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	table, err := f.Float32("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
	info, _ := f.Info("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := eng.Load(context.Background(), tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	ids := m.Tokenize("horse")
	eng.Close()
	w := info.Shape[1]
	var vec []byte
	for _, id := range ids[1 : len(ids)-1] {
		for _, v := range table[id*w : (id+1)*w] {
			vec = binary.LittleEndian.AppendUint32(vec, math.Float32bits(v))
		}
	}
	err = safetensors.Write(filepath.Join(dir, "steed.safetensors"), map[string]safetensors.Tensor{
		"emb_params": {DType: tensor.F32, Shape: tensor.Shape{len(ids) - 2, w}, Data: vec},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	args := []string{"-m", tinyModel, "-s", "7", "--steps", "3", "-W", "64", "-H", "64"}
	if _, stderr, code := runCmd(t, append([]string{"gen", "-p", "an astronaut riding a horse", "-o", filepath.Join(out, "a.png")}, args...)...); code != 0 {
		t.Fatal(stderr)
	}
	if _, stderr, code := runCmd(t, append([]string{"gen", "-p", "an astronaut riding a embedding:steed", "--embedding-dir", dir, "-o", filepath.Join(out, "b.png")}, args...)...); code != 0 {
		t.Fatal(stderr)
	}
	if p := psnr8(readPNG(t, filepath.Join(out, "b.png")), readPNG(t, filepath.Join(out, "a.png"))); !math.IsInf(p, 1) {
		t.Errorf("embedding image differs from the word's: %.1f dB", p)
	}
	_, stderr, code := runCmd(t, append([]string{"gen", "-p", "a embedding:nope", "--embedding-dir", dir, "-o", filepath.Join(out, "c.png")}, args...)...)
	if code == 0 || !strings.Contains(stderr, `embedding "nope": none of that name`) {
		t.Errorf("missing embedding: code %d, %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "c.png")); err == nil {
		t.Error("a failed generation wrote its output")
	}
}
