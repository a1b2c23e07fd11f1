package cmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/weights/weightstest"
)

// TestGenQwenImage generates the QwenImagePipeline case "msl" from the
// command line (the diffusers folder, --convention diffusers: true CFG
// with its norm rescale against a " " negative, a 40-token
// --max-sequence-length): the PNG equals diffusers' image (≥ 45 dB over
// 8-bit quantisation), and gen --from makes it again.
func TestGenQwenImage(t *testing.T) {
	ref := filepath.Join("..", "testdata", "reference", "qwenimage")
	if _, err := os.Stat(filepath.Join(ref, "cases.safetensors")); err != nil {
		t.Skip("no qwenimage fixtures")
	}
	folder := filepath.Join(t.TempDir(), "qwen-image-tiny")
	linkTreeInto(t, filepath.Join(ref, "pipe"), folder)
	te := filepath.Join(folder, "text_encoder", "model.safetensors")
	if err := os.Remove(te); err != nil {
		t.Fatal(err)
	}
	if err := weightstest.ExpandEmbedding(filepath.Join(ref, "pipe", "text_encoder", "model.safetensors"), filepath.Join(ref, "embed.safetensors"),
		"model.embed_tokens.weight", 152064, te); err != nil {
		t.Fatal(err)
	}
	linkInto(t, filepath.Join("..", "testdata", "reference", "qwenimage-vae", "vae.safetensors"), filepath.Join(folder, "vae", "diffusion_pytorch_model.safetensors"))
	b, err := os.ReadFile(filepath.Join(ref, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []struct{ Name, Prompt string }
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	prompt := ""
	for _, c := range doc.Cases {
		if c.Name == "msl" {
			prompt = c.Prompt
		}
	}
	out := filepath.Join(t.TempDir(), "q.png")
	_, stderr, code := runCmd(t, "gen", "-m", folder, "-p", prompt, "-n", " ", "-s", "3", "--steps", "4", "-W", "64", "-H", "64",
		"--cfg", "3", "--sampler", "euler", "--scheduler", "simple", "--convention", "diffusers", "--max-sequence-length", "40", "-o", out)
	if code != 0 {
		t.Fatalf("gen failed: %s", stderr)
	}
	got := readPNG(t, out)
	if p := psnrFloat(got, fixtureImage(t, filepath.Join(ref, "cases.safetensors"), "msl/image")); p < 45 {
		t.Errorf("PSNR %.1f dB against diffusers' image, want ≥ 45", p)
	}
	checkFromRepeats(t, out, folder, got)
}
