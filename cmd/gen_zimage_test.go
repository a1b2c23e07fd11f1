package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/weights/weightstest"
)

var zimageRef = filepath.Join("..", "testdata", "reference", "zimage")

// zimageTextEncoder writes the tiny Qwen3 encoder with its full token
// table (the fixture keeps only the rows its prompts use) to path.
func zimageTextEncoder(t *testing.T, path string) {
	t.Helper()
	err := weightstest.ExpandEmbedding(filepath.Join(zimageRef, "turbo", "text_encoder", "model.safetensors"), filepath.Join(zimageRef, "embed.safetensors"),
		"model.embed_tokens.weight", 151936, path)
	if err != nil {
		t.Fatal(err)
	}
}

// TestGenZImage generates the ZImagePipeline case "turbo" from the command
// line, from the diffusers folder and from ComfyUI's split files
// (z_image_turbo-style transformer, --vae ae.safetensors, --text-encoder
// qwen_3_4b-style file): both PNGs equal diffusers' image (≥ 45 dB over
// 8-bit quantisation) with Turbo's defaults (8 steps, CFG 1) taken from
// the model, and gen --from makes the same image again.
func TestGenZImage(t *testing.T) {
	if _, err := os.Stat(filepath.Join(zimageRef, "cases.safetensors")); err != nil {
		t.Skip("no zimage fixtures")
	}
	folder := filepath.Join(t.TempDir(), "z-image-turbo-tiny")
	linkTreeInto(t, filepath.Join(zimageRef, "turbo"), folder)
	if err := os.Remove(filepath.Join(folder, "text_encoder", "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	zimageTextEncoder(t, filepath.Join(folder, "text_encoder", "model.safetensors"))
	linkTreeInto(t, filepath.Join("..", "testdata", "reference", "flux-pipe", "dev", "vae"), filepath.Join(folder, "vae"))
	te := filepath.Join(t.TempDir(), "qwen_3_4b_tiny.safetensors")
	zimageTextEncoder(t, te)
	want := fixtureImage(t, filepath.Join(zimageRef, "cases.safetensors"), "turbo/image")
	prompt := `A red fox in the snow, 写着"冬天"的招牌, 35mm photo`
	for name, files := range map[string][]string{
		"diffusers folder": {"-m", folder},
		"split files": {"-m", filepath.Join(zimageRef, "comfy", "z_image_tiny.safetensors"),
			"--vae", filepath.Join("..", "testdata", "reference", "flux-pipe", "bfl", "ae.safetensors"), "--text-encoder", te},
	} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "z.png")
			args := append([]string{"gen", "-p", prompt, "-s", "42", "-W", "64", "-H", "64", "--sampler", "euler", "--scheduler", "simple",
				"--convention", "diffusers", "-o", out}, files...)
			_, stderr, code := runCmd(t, args...)
			if code != 0 {
				t.Fatalf("gen failed: %s", stderr)
			}
			got := readPNG(t, out)
			if p := psnrFloat(got, want); p < 45 {
				t.Errorf("PSNR %.1f dB against diffusers' image, want ≥ 45", p)
			}
			if p := pngParameters(t, out); !strings.Contains(p, "Steps: 8") || !strings.Contains(p, "CFG scale: 1") {
				t.Errorf("A1111 parameters lack Turbo's 8 steps at CFG 1: %q", p)
			}
			checkFromRepeats(t, out, files[1], got)
		})
	}
}
