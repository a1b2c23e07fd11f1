package cmd

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// writeCompact writes a tiny random SRVGGNetCompact ×2 (8 features, one
// body convolution) into dir/upscale_models/name.safetensors.
func writeCompact(t *testing.T, dir, name string) string {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	ts := map[string]safetensors.Tensor{}
	add := func(n string, shape ...int) {
		v := make([]byte, 4*tensor.Shape(shape).NumElements())
		for i := 0; i < len(v); i += 4 {
			x := 0.05 * r.NormFloat64()
			if len(shape) == 1 && strings.HasSuffix(n, "weight") { // PReLU slopes
				x = 0.2
			}
			binary.LittleEndian.PutUint32(v[i:], math.Float32bits(float32(x)))
		}
		ts[n] = safetensors.Tensor{DType: tensor.F32, Shape: shape, Data: v}
	}
	add("body.0.weight", 8, 3, 3, 3)
	add("body.0.bias", 8)
	add("body.1.weight", 8)
	add("body.2.weight", 8, 8, 3, 3)
	add("body.2.bias", 8)
	add("body.3.weight", 8)
	add("body.4.weight", 12, 8, 3, 3)
	add("body.4.bias", 12)
	p := filepath.Join(dir, "upscale_models", name+".safetensors")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeTestPNG(t *testing.T, path string, w, h int) {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	if err := engine.WritePNG(path, img, map[string]string{engine.ChunkParameters: "a cat\nSteps: 20"}); err != nil {
		t.Fatal(err)
	}
}

// TestUpscaleEndToEnd resolves a model by name in upscale_models, tiles
// a 70×50 image and writes NAME-2x.png beside it, keeping its text.
func TestUpscaleEndToEnd(t *testing.T) {
	dir := t.TempDir()
	writeCompact(t, dir, "2x-Tiny")
	in := filepath.Join(dir, "photo.png")
	writeTestPNG(t, in, 70, 50)
	stdout, stderr, code := run(t, "upscale", in, "-m", "2x-Tiny", "--models", dir, "--device", "cpu", "--tile", "32", "--overlap", "8")
	want := filepath.Join(dir, "photo-2x.png")
	if code != 0 || strings.TrimSpace(stdout) != want {
		t.Fatalf("code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, s := range []string{"2x-Tiny: SRVGGNetCompact 2× (8 features, 1 convolutions)", "tile 6/6", "70x50 → 140x100"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr %q lacks %q", stderr, s)
		}
	}
	f, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 140 || b.Dy() != 100 {
		t.Errorf("size %v", b)
	}
	// Near the input: the net adds a small residual to the nearest upsample.
	c := color.NRGBAModel.Convert(img.At(100, 60)).(color.NRGBA)
	if d := int(c.R) - 50*255/70; d < -40 || d > 40 {
		t.Errorf("pixel (100, 60) R %d, want about %d", c.R, 50*255/70)
	}
	f.Seek(0, 0)
	text, err := engine.ReadPNGText(f)
	if err != nil || text[engine.ChunkParameters] != "a cat\nSteps: 20" || text["postprocessing"] != "Postprocess upscale by: 2, Postprocess upscaler: 2x-Tiny" {
		t.Errorf("text %v, %v", text, err)
	}
	// Again, without -o: the first free name.
	stdout, _, code = run(t, "upscale", in, "-m", filepath.Join(dir, "upscale_models", "2x-Tiny.safetensors"), "--device", "cpu", "--tile", "0")
	if want := filepath.Join(dir, "photo-2x-1.png"); code != 0 || strings.TrimSpace(stdout) != want {
		t.Errorf("second run: code %d, stdout %q, want %s", code, stdout, want)
	}
}

// evilPth writes torch's zip layout around a pickle calling os.system
// through INST.
func evilPth(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	z := zip.NewWriter(f)
	w, _ := z.CreateHeader(&zip.FileHeader{Name: "evil/data.pkl", Method: zip.Store})
	w.Write([]byte("(Vecho pwned\nios\nsystem\n."))
	z.Close()
	f.Close()
}

// TestUpscaleBadInput checks that every refusal is one line and writes
// nothing.
func TestUpscaleBadInput(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.png")
	writeTestPNG(t, in, 8, 8)
	model := writeCompact(t, dir, "m")
	evil := filepath.Join(dir, "evil.pth")
	evilPth(t, evil)
	trunc := filepath.Join(dir, "trunc.safetensors")
	b, _ := os.ReadFile(model)
	os.WriteFile(trunc, b[:len(b)/2], 0o644)
	notModel := filepath.Join(dir, "other.safetensors")
	safetensors.Write(notModel, map[string]safetensors.Tensor{"x.weight": {DType: tensor.F32, Shape: []int{1}, Data: make([]byte, 4)}}, nil)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{in}, "-m/--model is required"},
		{[]string{in, "-m", evil}, evil + ": refuses to load: the pickle calls os.system through the INST opcode (a checkpoint that could run code); convert it to .safetensors"},
		{[]string{in, "-m", trunc}, trunc + ":"},
		{[]string{in, "-m", notModel}, "not an upscaler darkroom knows"},
		{[]string{in, "-m", "nope", "--models", dir}, "nope: no such file, and no upscaler of that name in the upscale_models folders of " + dir},
		{[]string{filepath.Join(dir, "missing.png"), "-m", model}, "missing.png: no such image"},
		{[]string{model, "-m", model}, "not a PNG, JPEG or GIF image"},
		{[]string{in, "-m", model, "--tile", "8"}, "--tile 8: want 0 (the whole image at once) or at least 32"},
		{[]string{in, "-m", model, "--overlap", "-1"}, "--overlap -1"},
		{[]string{in, "-m", model, "--device", "tpu"}, `--device "tpu": want auto, cpu or cuda`},
		{[]string{in, "-m", model, "-o", filepath.Join(dir, "no", "out.png")}, "directory " + filepath.Join(dir, "no") + " does not exist"},
		{[]string{in, "-m", model, "--tile"}, "flag needs an argument"},
	}
	for _, c := range cases {
		args := append([]string{"upscale", "--device", "cpu"}, c.args...)
		if c.args[len(c.args)-1] == "--tile" {
			args = append([]string{"upscale"}, c.args...)
		}
		stdout, stderr, code := run(t, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		if code == 0 || stdout != "" || !strings.HasPrefix(last, "darkroom: ") || !strings.Contains(last, c.want) {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want one line with %q", c.args, code, stdout, stderr, c.want)
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := fmt.Sprint(names); got != "[evil.pth in.png other.safetensors trunc.safetensors upscale_models]" {
		t.Errorf("files written: %s", got)
	}
}

// TestUpscaleFixtures runs the command on the Real-ESRGAN-layout fixture
// as .pth (torch.save of {"params_ema": ...}) and as .safetensors: both
// write the same pixels; the torch-written malicious file is refused.
func TestUpscaleFixtures(t *testing.T) {
	ref := filepath.Join("..", "testdata", "reference", "upscale")
	if _, err := os.Stat(filepath.Join(ref, "rrdb_x4.pth")); err != nil {
		t.Skip("no fixtures in testdata/reference/upscale")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.png")
	writeTestPNG(t, in, 40, 24)
	var imgs []image.Image
	for _, m := range []string{"rrdb_x4.pth", "rrdb_x4.safetensors"} {
		out := filepath.Join(dir, m+".png")
		if _, stderr, code := run(t, "upscale", in, "-m", filepath.Join(ref, m), "-o", out, "--device", "cpu", "--tile", "32", "--overlap", "8"); code != 0 {
			t.Fatalf("%s: %s", m, stderr)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != 160 || b.Dy() != 96 {
			t.Fatalf("%s: size %v", m, b)
		}
		imgs = append(imgs, img)
	}
	for y := range 96 {
		for x := range 160 {
			if imgs[0].At(x, y) != imgs[1].At(x, y) {
				t.Fatalf("pixel (%d, %d): the .pth gives %v, the .safetensors %v", x, y, imgs[0].At(x, y), imgs[1].At(x, y))
			}
		}
	}
	evil := filepath.Join(ref, "pth", "evil_system.pth")
	out := filepath.Join(dir, "evil.png")
	_, stderr, code := run(t, "upscale", in, "-m", evil, "-o", out, "--device", "cpu")
	if want := "darkroom: " + evil + ": refuses to load: the pickle calls posix.system (a checkpoint that could run code); convert it to .safetensors\n"; code == 0 || stderr != want {
		t.Errorf("evil: code %d, stderr %q, want %q", code, stderr, want)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused model wrote a file")
	}
}
