package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/backend/cuda"
	"github.com/darkroom-ai/darkroom/engine/demo"
	"github.com/darkroom-ai/darkroom/engine/families/sd1"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

var colorBlack = color.NRGBA{A: 255}

var words = [10]string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}

// classifier is the logistic-regression digit classifier of
// testdata/digits/classifier.json, fitted offline on scikit-learn's 8×8
// digits (ink 0..16, row-major).
type classifier struct {
	Weights [][]float64 `json:"weights"`
	Bias    []float64   `json:"bias"`
}

func loadClassifier(t *testing.T) *classifier {
	t.Helper()
	data, err := os.ReadFile("../../testdata/digits/classifier.json")
	if err != nil {
		t.Fatal(err)
	}
	var c classifier
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("classifier.json: %v", err)
	}
	if len(c.Weights) != 10 || len(c.Bias) != 10 {
		t.Fatalf("classifier.json: %d weight rows, %d biases, want 10", len(c.Weights), len(c.Bias))
	}
	for k, row := range c.Weights {
		if len(row) != 64 {
			t.Fatalf("classifier.json: row %d has %d weights, want 64", k, len(row))
		}
	}
	return &c
}

// classify returns the digit with the largest logit.
func (c *classifier) classify(x [64]float64) int {
	best, bestLogit := 0, 0.0
	for k, row := range c.Weights {
		logit := c.Bias[k]
		for i, w := range row {
			logit += w * x[i]
		}
		if k == 0 || logit > bestLogit {
			best, bestLogit = k, logit
		}
	}
	return best
}

// inkFeatures downsamples img to 8×8 by area averaging and returns the ink
// (1 − grey) of each cell scaled to 0..16, as the scikit-learn digits store it.
func inkFeatures(img image.Image) ([64]float64, error) {
	var x [64]float64
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w%8 != 0 || h%8 != 0 {
		return x, fmt.Errorf("image %d×%d is not a multiple of 8×8", w, h)
	}
	cw, ch := w/8, h/8
	for y := range h {
		for xx := range w {
			r, g, bl, _ := img.At(b.Min.X+xx, b.Min.Y+y).RGBA()
			grey := (float64(r) + float64(g) + float64(bl)) / (3 * 0xffff)
			x[(y/ch)*8+xx/cw] += 1 - grey
		}
	}
	for i := range x {
		x[i] *= 16 / float64(cw*ch)
	}
	return x, nil
}

func TestInkFeatures(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 32, 32))
	for i := range img.Pix {
		img.Pix[i] = 255 // white paper
	}
	// One fully black 4×4 cell at (row 2, col 5) and a half-black cell at (0, 0).
	for y := 8; y < 12; y++ {
		for x := 20; x < 24; x++ {
			img.SetNRGBA(x, y, colorBlack)
		}
	}
	for y := range 2 {
		for x := range 4 {
			img.SetNRGBA(x, y, colorBlack)
		}
	}
	got, err := inkFeatures(img)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		want := 0.0
		switch i {
		case 2*8 + 5:
			want = 16
		case 0:
			want = 8
		}
		if v < want-1e-12 || v > want+1e-12 {
			t.Errorf("cell %d: ink %v, want %v", i, v, want)
		}
	}
	if _, err := inkFeatures(image.NewNRGBA(image.Rect(0, 0, 30, 32))); err == nil {
		t.Error("30×32 image: no error")
	}
}

func TestEmbeddedCheckpoint(t *testing.T) {
	f, err := demo.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Metadata()["modelspec.title"]; got != demo.Name {
		t.Errorf("metadata title %q, want %q", got, demo.Name)
	}
	wm, err := weights.OpenBytes(demo.Name, demo.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	if _, d, err := family.Detect(family.NewKeys(wm)); err != nil || d.Family != sd1.Name || !d.Runnable {
		t.Errorf("family %v (%v), want a runnable SD1.x", d, err)
	}
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		if info.DType.String() != "F16" {
			t.Errorf("%s is %v, want F16", name, info.DType)
		}
		if !strings.HasPrefix(name, "model.diffusion_model.") && !strings.HasPrefix(name, "first_stage_model.") &&
			!strings.HasPrefix(name, "cond_stage_model.transformer.text_model.") {
			t.Errorf("%s: not an LDM single-file name", name)
		}
	}
	// "A few MB": the binary carries the compressed checkpoint.
	if demo.Size() != len(demo.Bytes()) || demo.CompressedSize() > 4<<20 {
		t.Errorf("size %d (bytes %d), compressed %d: want equal sizes and at most 4 MiB compressed",
			demo.Size(), len(demo.Bytes()), demo.CompressedSize())
	}
	t.Logf("checkpoint %.2f MiB, embedded compressed %.2f MiB", float64(demo.Size())/(1<<20), float64(demo.CompressedSize())/(1<<20))
	b := demo.Bytes()
	b[0] ^= 0xff
	if bytes.Equal(b, demo.Bytes()) {
		t.Error("Bytes shares memory between calls")
	}
}

// checkpointFile writes the checkpoint into dir and returns its path: the
// embedded one, or in nodemo builds (test binaries carried to a GPU
// machine) the compressed file beside this test.
func checkpointFile(dir string) (string, error) {
	path := filepath.Join(dir, demo.FileName)
	if demo.CompressedSize() > 0 {
		return path, demo.WriteFile(path)
	}
	return path, demo.DecompressFile(demo.GzFileName, path)
}

var (
	modelOnce sync.Once
	model     *engine.Model
	modelErr  error
)

// loadModel writes the embedded checkpoint to a temporary file and loads it
// on the CPU backend, once per test binary.
func loadModel(t *testing.T) *engine.Model {
	t.Helper()
	modelOnce.Do(func() {
		dir, err := os.MkdirTemp("", "darkroom-demo-test-")
		if err != nil {
			modelErr = err
			return
		}
		defer os.RemoveAll(dir)
		path, err := checkpointFile(dir)
		if err != nil {
			modelErr = err
			return
		}
		model, modelErr = engine.Load(context.Background(), path, cpu.New())
	})
	if modelErr != nil {
		t.Fatal(modelErr)
	}
	return model
}

func TestModelShape(t *testing.T) {
	m := loadModel(t)
	if m.Family != sd1.Name {
		t.Errorf("family %q, want %q", m.Family, sd1.Name)
	}
	if got := m.LatentFormat().Factor; got != 4 {
		t.Errorf("latent factor %d, want 4 (3-level VAE)", got)
	}
	if got := m.LatentFormat().Channels; got != 4 {
		t.Errorf("latent channels %d, want 4", got)
	}
	parts := m.Parts()
	if len(parts) != 3 || !strings.Contains(parts[2].Config, "width 64,") || !strings.Contains(parts[2].Config, "vocab 49408, 77 positions") {
		t.Errorf("text encoder %v, want width 64, vocab 49408, 77 positions", parts)
	}
	for _, p := range parts {
		t.Logf("%s: %s", p.Name, p.Config)
	}
}

// promptForms are the prompt styles of the semantic test; each form runs
// with its own seed.
var promptForms = []struct {
	name   string
	prompt func(d int) string
	seed   uint64
}{
	{"words", func(d int) string { return "a handwritten digit " + words[d] }, 1},
	{"numerals", func(d int) string { return fmt.Sprintf("the number %d", d) }, 2},
}

// TestDigitsSemantic generates every digit 0–9 from its prompt on the CPU
// backend and checks with an independent classifier that the image shows
// that digit.
func TestDigitsSemantic(t *testing.T) {
	runSemantic(t, loadModel(t))
}

// TestGPUDigitsSemantic is the same test on the CUDA backend, in the fp16
// default and the fp32 parity mode; it skips without an NVIDIA GPU.
func TestGPUDigitsSemantic(t *testing.T) {
	for _, prec := range []tensor.DType{tensor.F16, tensor.F32} {
		t.Run(prec.String(), func(t *testing.T) {
			dev, err := cuda.Open(cuda.Options{Precision: prec})
			if errors.Is(err, cuda.ErrNoDevice) {
				t.Skipf("skipping: no NVIDIA GPU/driver on this machine (%v)", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			path, err := checkpointFile(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			m, err := engine.Load(context.Background(), path, dev)
			if err != nil {
				t.Fatal(err)
			}
			runSemantic(t, m)
		})
	}
}

func runSemantic(t *testing.T, m *engine.Model) {
	clf := loadClassifier(t)
	for _, form := range promptForms[:semanticForms] {
		t.Run(form.name, func(t *testing.T) {
			correct, total := 0, 0
			var elapsed time.Duration
			for d := range 10 {
				req := engine.DefaultRequest()
				req.Prompt = form.prompt(d)
				req.Width, req.Height = demo.Width, demo.Height
				req.Steps, req.CFG = semanticSteps, demo.CFG
				req.Sampler, req.Scheduler = demo.Sampler, demo.Scheduler
				req.Seed, req.Batch = form.seed, semanticBatch
				start := time.Now()
				res, err := m.Generate(context.Background(), req, nil)
				if err != nil {
					t.Fatalf("digit %d: %v", d, err)
				}
				elapsed += time.Since(start)
				if len(res.Images) != semanticBatch {
					t.Fatalf("digit %d: %d images, want %d", d, len(res.Images), semanticBatch)
				}
				var got []int
				ok := 0
				for _, img := range res.Images {
					if b := img.Bounds(); b.Dx() != demo.Width || b.Dy() != demo.Height {
						t.Fatalf("digit %d: image %v, want %d×%d", d, b, demo.Width, demo.Height)
					}
					x, err := inkFeatures(img)
					if err != nil {
						t.Fatal(err)
					}
					p := clf.classify(x)
					got = append(got, p)
					if p == d {
						ok++
					}
				}
				correct += ok
				total += semanticBatch
				t.Logf("digit %d (%q): classified as %v, %d/%d", d, req.Prompt, got, ok, semanticBatch)
			}
			acc := float64(correct) / float64(total)
			t.Logf("accuracy %d/%d = %.3f; %.0f ms of generation per image (%d steps, cfg %g, batch %d)",
				correct, total, acc, float64(elapsed.Milliseconds())/float64(total), semanticSteps, demo.CFG, semanticBatch)
			if acc < 0.9 {
				t.Errorf("accuracy %.3f, want ≥ 0.9", acc)
			}
		})
	}
}

// TestDefaultModelFormat: the format frontends draw the built-in model's
// previews with is the loaded model's.
func TestDefaultModelFormat(t *testing.T) {
	m := loadModel(t)
	got, want := engine.DefaultModelFormat(), m.LatentFormat()
	if got.Channels != want.Channels || got.Factor != want.Factor || got.Scale != want.Scale || got.TAESD != want.TAESD || len(got.RGB) != len(want.RGB) {
		t.Errorf("DefaultModelFormat %+v, loaded model %+v", got, want)
	}
}

// TestBuiltinDefaultRequest: a request started from the built-in model (as
// scripts and recipes start) takes its own 32×32 defaults, not SD1's 512².
func TestBuiltinDefaultRequest(t *testing.T) {
	eng, err := engine.Open(engine.Options{Device: "cpu", ModelDirs: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	m, err := eng.Load(context.Background(), "")
	if err != nil {
		t.Skipf("built-in model not embedded in this build: %v", err)
	}
	r := m.DefaultRequest()
	if r.Model != demo.Name || r.Width != demo.Width || r.Height != demo.Height || r.CFG != demo.CFG || r.Steps != demo.Steps {
		t.Errorf("request %+v, want the built-in model's defaults", r)
	}
	// An SD1 checkpoint gets the family's defaults.
	sd, err := engine.Load(context.Background(), "../../testdata/reference/sd1-tiny-a/single.safetensors", cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	if r := sd.DefaultRequest(); r.Width != 512 || r.Height != 512 || r.CFG != 7 || r.Model == "" {
		t.Errorf("SD1 request %+v, want 512², cfg 7 and the model's path", r)
	}
}
