package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// writeUpscaler writes an SRVGGNetCompact ×scale with 4 features and one
// body convolution to root/upscale_models/name.safetensors: with zero
// weights it is exactly a nearest-neighbour enlargement (the network adds
// nothing to the nearest-upsampled input); otherwise its weights are a
// small deterministic pattern.
func writeUpscaler(t *testing.T, root, name string, scale int, zero bool) string {
	t.Helper()
	ts := map[string]safetensors.Tensor{}
	k := 0
	add := func(n string, shape ...int) {
		b := make([]byte, 4*tensor.Shape(shape).NumElements())
		for i := 0; i < len(b); i += 4 {
			v := 0.0
			if !zero {
				k++
				v = 0.03 * float64(k%7-3)
			}
			if len(shape) == 1 && strings.HasSuffix(n, "weight") {
				v = 0.25 // PReLU slopes
			}
			binary.LittleEndian.PutUint32(b[i:], math.Float32bits(float32(v)))
		}
		ts[n] = safetensors.Tensor{DType: tensor.F32, Shape: shape, Data: b}
	}
	add("body.0.weight", 4, 3, 3, 3)
	add("body.0.bias", 4)
	add("body.1.weight", 4)
	add("body.2.weight", 4, 4, 3, 3)
	add("body.2.bias", 4)
	add("body.3.weight", 4)
	add("body.4.weight", 3*scale*scale, 4, 3, 3)
	add("body.4.bias", 3*scale*scale)
	p := filepath.Join(root, "upscale_models", name+".safetensors")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func gradient(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 7), uint8(y * 5), uint8((x * y) % 256), 200})
		}
	}
	return img
}

// TestUpscaleNearestModel checks the image conversions and the tiling
// with a model that is exactly a nearest-neighbour enlargement: the
// result must be the input's pixels repeated, whole or in tiles.
func TestUpscaleNearestModel(t *testing.T) {
	root := t.TempDir()
	writeUpscaler(t, root, "4x-Nearest", 4, true)
	eng, err := Open(Options{Device: "cpu", ModelDirs: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	in := gradient(37, 23)
	for _, opts := range []UpscaleOptions{{Tile: -1}, {Tile: 16, Overlap: 4}, {}} {
		out, err := eng.Upscale(context.Background(), "4x-Nearest", in, opts)
		if err != nil {
			t.Fatal(err)
		}
		if b := out.Bounds(); b.Dx() != 148 || b.Dy() != 92 {
			t.Fatalf("%+v: size %v", opts, b)
		}
		for y := range 92 {
			for x := range 148 {
				want := in.NRGBAAt(x/4, y/4)
				want.A = 255 // the alpha is dropped
				if got := out.NRGBAAt(x, y); got != want {
					t.Fatalf("%+v: pixel (%d, %d) %v, want %v", opts, x, y, got, want)
				}
			}
		}
	}
	u, err := eng.LoadUpscaler(context.Background(), "4x-Nearest.safetensors")
	if err != nil || u.Name != "4x-Nearest" || u.Scale() != 4 {
		t.Errorf("LoadUpscaler: %v, %+v", err, u)
	}
	if _, err := eng.LoadUpscaler(context.Background(), "nope"); err == nil || !strings.Contains(err.Error(), "nope: no such file, and no upscaler of that name in the upscale_models folders of "+root) {
		t.Errorf("missing model: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := u.Upscale(ctx, in, UpscaleOptions{Tile: 16, Overlap: 4}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// TestHiresFixWithModel runs a hires fix whose upscaler is a model found
// by name: the result has the hires size, and the PNG text names the
// model as A1111 does.
func TestHiresFixWithModel(t *testing.T) {
	if _, err := os.Stat(layouts[0].path); err != nil {
		t.Skip(err)
	}
	root := t.TempDir()
	path := writeUpscaler(t, root, "2x-Tiny", 2, false)
	eng, err := Open(Options{Device: "cpu", ModelDirs: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	req := Request{Model: layouts[0].path, Prompt: "a red cube", Seed: 4, Steps: 3, CFG: 5, Sampler: "euler", Scheduler: "normal", Width: 64, Height: 48,
		Batch: 1, ClipSkip: 1, Hires: 1.5, HiresUpscaler: "2x-Tiny", HiresSteps: 2}
	res, err := eng.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := res.Images[0].Bounds(); b.Dx() != 96 || b.Dy() != 72 {
		t.Errorf("%v, want 96x72", b)
	}
	text := A1111Parameters(req, "", "")
	if !strings.Contains(text, "Hires upscaler: 2x-Tiny") {
		t.Errorf("A1111 text %q lacks the upscaler", text)
	}
	back, _, err := ParseA1111Parameters(text)
	if err != nil || back.HiresUpscaler != "2x-Tiny" {
		t.Errorf("read back %q, %v", back.HiresUpscaler, err)
	}
	// Model.Generate has no model folders: a name is refused, a path runs.
	m, err := eng.Load(context.Background(), layouts[0].path)
	if err != nil {
		t.Fatal(err)
	}
	req.Model = ""
	var fe *FieldError
	if _, err := m.Generate(context.Background(), req, nil); !errors.As(err, &fe) || fe.Field != "hires_upscaler" {
		t.Errorf("a name without an engine: %v", err)
	}
	req.HiresUpscaler = path
	if _, err := m.Generate(context.Background(), req, nil); err != nil {
		t.Errorf("a path: %v", err)
	}
	if got := A1111Parameters(req, "", ""); !strings.Contains(got, "Hires upscaler: 2x-Tiny,") && !strings.HasSuffix(got, "Hires upscaler: 2x-Tiny") {
		t.Errorf("a path is written as %q", got)
	}
	req.HiresUpscaler = "missing-model"
	if _, err := eng.Generate(context.Background(), req, nil); !errors.As(err, &fe) || fe.Field != "hires_upscaler" || !strings.Contains(err.Error(), "no upscaler of that name") {
		t.Errorf("a missing model: %v", err)
	}
}

// TestA1111UpscalerNames maps A1111's hires upscaler names.
func TestA1111UpscalerNames(t *testing.T) {
	for in, want := range map[string]string{
		"R-ESRGAN 4x+":           "RealESRGAN_x4plus",
		"R-ESRGAN 4x+ Anime6B":   "RealESRGAN_x4plus_anime_6B",
		"4x-UltraSharp":          "4x-UltraSharp",
		"Latent (antialiased)":   UpscaleLatentBilinear,
		"Latent (nearest-exact)": UpscaleLatentNearest,
		"Lanczos":                UpscaleLanczos,
		"SwinIR 4x":              "",
		"LDSR":                   "",
		"None":                   "",
	} {
		r, _, err := ParseA1111Parameters("p\nSteps: 20, Size: 512x512, Hires upscale: 2, Hires upscaler: " + in)
		if err != nil || r.HiresUpscaler != want {
			t.Errorf("%q: %q, %v; want %q", in, r.HiresUpscaler, err, want)
		}
	}
	r := DefaultRequest()
	r.Hires, r.HiresUpscaler = 2, "/models/RealESRGAN_x4plus.pth"
	if got := A1111Parameters(r, "", ""); !strings.Contains(got, "Hires upscaler: R-ESRGAN 4x+") {
		t.Errorf("written as %q", got)
	}
}

// TestLoadUpscalerRefusesCode checks that a .pth that could run code is
// refused with the one line naming the call, and a bad model is one line.
func TestLoadUpscalerRefusesCode(t *testing.T) {
	for _, name := range []string{"evil_system.pth", "evil_eval.pth", "evil_popen.pth", "evil_inst.pth"} {
		p := filepath.Join("..", "testdata", "reference", "upscale", "pth", name)
		if _, err := os.Stat(p); err != nil {
			t.Skip("no torch-written fixtures")
		}
		_, err := LoadUpscaler(context.Background(), p, cpu.New())
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), p+": refuses to load: the pickle calls ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
