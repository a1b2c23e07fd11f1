package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var sd3Ref = filepath.Join("..", "testdata", "reference", "sd3")

// sd3Folder links the tiny StableDiffusion3Pipeline folder together (the
// fixture keeps the T5 weights in t5-tiny).
func sd3Folder(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sd3.5-tiny")
	linkTreeInto(t, filepath.Join(sd3Ref, "sd35"), dir)
	linkInto(t, filepath.Join("..", "testdata", "reference", "t5-tiny", "model.safetensors"), filepath.Join(dir, "text_encoder_3", "model.safetensors"))
	return dir
}

// TestGenSD3 generates the StableDiffusion3Pipeline case a_slg from the
// command line (a diffusers folder, --convention diffusers, Skip-Layer
// Guidance flags): the PNG equals diffusers' image (≥ 45 dB over 8-bit
// quantisation), its A1111 text records the SLG settings, and gen --from
// makes the same image again.
func TestGenSD3(t *testing.T) {
	if _, err := os.Stat(filepath.Join(sd3Ref, "cases.safetensors")); err != nil {
		t.Skip("no sd3 fixtures")
	}
	model := sd3Folder(t)
	out := filepath.Join(t.TempDir(), "sd3.png")
	_, stderr, code := runCmd(t, "gen", "-m", model, "-p", "An old lighthouse on a cliff at night, stormy sea", "-s", "5",
		"--steps", "5", "-W", "64", "-H", "48", "--cfg", "4", "--sampler", "euler", "--scheduler", "simple",
		"--convention", "diffusers", "--max-sequence-length", "256",
		"--slg-layers", "1", "--slg-scale", "2.8", "--slg-start", "0.01", "--slg-end", "0.8", "-o", out)
	if code != 0 {
		t.Fatalf("gen failed: %s", stderr)
	}
	got := readPNG(t, out)
	if p := psnrFloat(got, fixtureImage(t, filepath.Join(sd3Ref, "cases.safetensors"), "a_slg/image")); p < 45 {
		t.Errorf("PSNR %.1f dB against diffusers' image, want ≥ 45", p)
	}
	if p := pngParameters(t, out); !strings.Contains(p, "SLG layers: 1, SLG scale: 2.8, SLG start: 0.01, SLG end: 0.8") {
		t.Errorf("A1111 parameters lack the SLG settings: %q", p)
	}
	checkFromRepeats(t, out, model, got)
	// SLG on a model whose blocks cannot be skipped, and a block the model lacks.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-m", tinyModel, "--slg-layers", "7"}, `darkroom: --slg-layers "7": skip-layer guidance needs a transformer`},
		{[]string{"-m", model, "--slg-layers", "3"}, `darkroom: --slg-layers "3": block 3: the model has blocks 0–2`},
	} {
		args := append([]string{"gen", "-p", "x", "-W", "64", "-H", "64", "--steps", "2", "-o", filepath.Join(t.TempDir(), "x.png")}, c.args...)
		_, stderr, code := runCmd(t, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if last := lines[len(lines)-1]; code == 0 || !strings.HasPrefix(last, c.want) {
			t.Errorf("%v: code %d, stderr %q, want one line with %q", c.args, code, stderr, c.want)
		}
	}
}
