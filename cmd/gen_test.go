package cmd

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine"
)

var tinyModel = filepath.Join("..", "testdata", "reference", "sd1-tiny-a", "single.safetensors")

func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = Run(args, &o, &e)
	return o.String(), e.String(), code
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func psnr8(a, b image.Image) float64 {
	var mse float64
	n := 0
	r := a.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			for _, d := range []float64{float64(ar>>8) - float64(br>>8), float64(ag>>8) - float64(bg>>8), float64(ab>>8) - float64(bb>>8)} {
				mse += d * d
				n++
			}
		}
	}
	if mse == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/(mse/float64(n)))
}

// TestGenReproducesReference generates case a_euler_karras through the CLI
// and compares with diffusers' PNG.
func TestGenReproducesReference(t *testing.T) {
	out := filepath.Join(t.TempDir(), "a.png")
	_, stderr, code := runCmd(t, "gen", "-m", tinyModel, "-p", "a photograph of an astronaut riding a horse",
		"-n", "blurry, low quality", "-s", "1234", "--steps", "8", "--cfg", "7", "--sampler", "euler",
		"--scheduler", "karras", "-W", "64", "-H", "64", "-o", out)
	if code != 0 {
		t.Fatalf("gen failed: %s", stderr)
	}
	if !strings.Contains(stderr, "seed: 1234") {
		t.Errorf("seed not printed: %q", stderr)
	}
	got := readPNG(t, out)
	want := readPNG(t, filepath.Join("..", "testdata", "reference", "a_euler_karras.png"))
	if p := psnr8(got, want); p < 45 {
		t.Errorf("PSNR vs diffusers PNG %.1f dB < 45", p)
	} else {
		t.Logf("PSNR vs diffusers PNG %.1f dB", p)
	}
	// The second reference case, through the CLI as well.
	out2 := filepath.Join(t.TempDir(), "b.png")
	if _, stderr, code := runCmd(t, "gen", "-m", tinyModel, "-p", "A watercolor painting of a lighthouse at dusk",
		"-s", "42", "--steps", "10", "--cfg", "5.5", "--sampler", "dpmpp_2m", "--scheduler", "karras",
		"-W", "96", "-H", "64", "-o", out2); code != 0 {
		t.Fatalf("gen failed: %s", stderr)
	}
	if p := psnr8(readPNG(t, out2), readPNG(t, filepath.Join("..", "testdata", "reference", "a_dpmpp2m_karras.png"))); p < 45 {
		t.Errorf("a_dpmpp2m_karras: PSNR vs diffusers PNG %.1f dB < 45", p)
	} else {
		t.Logf("a_dpmpp2m_karras: PSNR vs diffusers PNG %.1f dB", p)
	}

	// The PNG carries A1111 parameters and the exact request.
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	text, err := engine.ReadPNGText(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	params := text[engine.ChunkParameters]
	for _, want := range []string{"a photograph of an astronaut riding a horse\nNegative prompt: blurry, low quality\n",
		"Steps: 8, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 64x64, Model hash: ", ", Model: single"} {
		if !strings.Contains(params, want) {
			t.Errorf("parameters chunk %q lacks %q", params, want)
		}
	}

	// --from reproduces the image bit for bit.
	again := filepath.Join(t.TempDir(), "again.png")
	if _, stderr, code := runCmd(t, "gen", "--from", out, "-o", again); code != 0 {
		t.Fatalf("gen --from failed: %s", stderr)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Error("gen --from did not reproduce the file bit for bit")
	}
}

func TestGenBatchNumbersOutputs(t *testing.T) {
	dir := t.TempDir()
	stdout, stderr, code := runCmd(t, "gen", "-m", tinyModel, "-p", "x", "-s", "7", "--steps", "2", "-W", "32", "-H", "32", "-b", "2", "-o", filepath.Join(dir, "img.png"))
	if code != 0 {
		t.Fatalf("gen failed: %s", stderr)
	}
	for _, name := range []string{"img-1.png", "img-2.png"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("missing %s (stdout %q)", name, stdout)
		}
	}
}

func TestGenBadInput(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("word ", 100)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"width not multiple of 8", []string{"-W", "100"}, "--width 100: must be a multiple of 8"},
		{"height too large", []string{"-H", "8192"}, "--height 8192"},
		{"steps zero", []string{"--steps", "0"}, "--steps 0: must be between 1"},
		{"negative cfg", []string{"--cfg", "-1"}, "--cfg -1: must be between 0 and 100"},
		{"infinite cfg", []string{"--cfg", "inf"}, "--cfg +Inf: must be between 0 and 100"},
		{"clip skip zero", []string{"--clip-skip", "0"}, "--clip-skip 0: must be ≥ 1 (1 = the last layer, 2 = the penultimate)"},
		{"view scale zero", []string{"--view-scale", "0"}, "--view-scale 0: must be between 1 and 64"},
		{"denoise zero", []string{"--denoise", "0"}, "--denoise 0: must be more than 0 and at most 1"},
		{"clip skip too deep", []string{"--clip-skip", "9"}, "--clip-skip 9: the text encoder has 3 layers"},
		{"output is a device", []string{"-o", "/dev/null"}, "--output /dev/null: exists and is not a regular file"},
		{"enlarged past the limit", []string{"-W", "512", "--view-scale", "64"}, "--view-scale 64: a 512x32 image would be enlarged past 16384 pixels"},
		{"unknown sampler", []string{"--sampler", "nope"}, `--sampler "nope": unknown; valid: ddim,`},
		{"unknown scheduler", []string{"--scheduler", "nope"}, `--scheduler "nope": unknown; valid: beta,`},
		{"bad seed", []string{"-s", "-3"}, `--seed "-3": want a whole number`},
		{"unwritable output", []string{"-o", filepath.Join(dir, "missing", "x.png")}, "directory " + filepath.Join(dir, "missing") + " does not exist"},
		{"missing model", []string{"-m", filepath.Join(dir, "nope.safetensors")}, "nope.safetensors: no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"gen", "-m", tinyModel, "-p", long, "--steps", "1", "-W", "32", "-H", "32", "-o", filepath.Join(dir, "ok.png")}, c.args...)
			_, stderr, code := runCmd(t, args...)
			if code != 1 {
				t.Fatalf("exit code %d, want 1 (stderr %q)", code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "darkroom: ") || !strings.Contains(last, c.want) {
				t.Errorf("stderr %q, want one line containing %q", stderr, c.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "ok.png")); err == nil {
				t.Error("an output file was written despite the error")
			}
		})
	}
}

// With no --model the built-in digits model draws the prompted digit at
// 32×32, enlarged 8× for viewing.
func TestGenBuiltinModel(t *testing.T) {
	out := filepath.Join(t.TempDir(), "seven.png")
	_, stderr, code := runCmd(t, "gen", "-p", "a handwritten digit 7", "-s", "3", "--device", "cpu", "-o", out)
	if code != 0 {
		t.Fatalf("gen failed: %s", stderr)
	}
	img := readPNG(t, out)
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Fatalf("image is %v, want 256×256 (32×32 enlarged 8×)", b)
	}
	f, _ := os.Open(out)
	text, err := engine.ReadPNGText(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if p := text[engine.ChunkParameters]; !strings.Contains(p, "Size: 32x32") || !strings.Contains(p, "Model: darkroom-digits") {
		t.Errorf("parameters %q", p)
	}
}

// Sizes that are multiples of 8 but not of the UNet's 2^(levels-1)·8 work,
// as in ComfyUI (the up path resizes to the skip connections).
func TestGenOddLatentSizes(t *testing.T) {
	for _, size := range [][2]string{{"40", "40"}, {"72", "24"}, {"8", "8"}} {
		out := filepath.Join(t.TempDir(), "odd.png")
		_, stderr, code := runCmd(t, "gen", "-m", tinyModel, "-p", "x", "-s", "1", "--steps", "3",
			"-W", size[0], "-H", size[1], "-o", out)
		if code != 0 {
			t.Fatalf("%sx%s: %s", size[0], size[1], stderr)
		}
		if b := readPNG(t, out).Bounds(); fmt.Sprint(b.Dx(), "x", b.Dy()) != size[0]+"x"+size[1] {
			t.Errorf("%sx%s: image %v", size[0], size[1], b)
		}
	}
}
