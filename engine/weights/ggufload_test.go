package weights_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/weights"

	_ "github.com/darkroom-ai/darkroom/engine/families/all"
)

const ks = "../../testdata/keyshapes/"

// loadSplit opens a model's files as weights.OpenFiles does, detects its
// family and loads it on a device that records shapes only; a family
// refuses a missing, misshaped or unused tensor.
func loadSplit(t *testing.T, main, vae string, tes ...string) (string, error) {
	t.Helper()
	m, err := weights.OpenFiles(main, vae, tes)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := family.NewSource(m)
	f, d, err := family.Detect(s.Keys())
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Load(context.Background(), s, family.Env{Device: testref.ShapeDevice{}, Detection: d})
	return d.Name(), err
}

// sdxlVAE writes the SDXL base checkpoint's VAE as a key list of one
// file (as a separate sdxl_vae.safetensors holds it).
func sdxlVAE(t *testing.T) string { return vaeOf(t, "sdxl-base.single") }

// vaeOf writes the VAE of a single-file key list (first_stage_model.*) as
// a key list of one file, as a separate VAE file holds it.
func vaeOf(t *testing.T, list string) string {
	kl, err := weights.ReadKeyList(ks + list + ".json.gz")
	if err != nil {
		t.Fatal(err)
	}
	vae := weights.KeyListFile{Tensors: map[string][2]json.RawMessage{}}
	for _, f := range kl.Files {
		for n, v := range f.Tensors {
			if rest, ok := strings.CutPrefix(n, "first_stage_model."); ok {
				vae.Tensors[rest] = v
			}
		}
	}
	b, err := json.Marshal(weights.KeyList{Name: list + "-vae", Family: "component", Layout: "component", Files: map[string]weights.KeyListFile{list + "_vae.safetensors": vae}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), list+"_vae.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGGUFKeyListsLoad loads the real-size GGUF key lists as ComfyUI-GGUF
// users combine them, with no missing or unused tensor: city96's
// Flux.1-dev Q8_0 and Q4_K_S transformers with ae, clip_l and the T5-XXL
// Q8_0 encoder GGUF (or t5xxl_fp16.safetensors), and the SDXL base UNet
// GGUFs with the SDXL VAE, CLIP-L and bigG.
func TestGGUFKeyListsLoad(t *testing.T) {
	g := ks + "gguf/"
	ae, clipL, clipG := ks+"flux-ae.component.json.gz", ks+"clip_l.component.json.gz", ks+"clip_g.component.json.gz"
	t5GGUF, t5 := g+"t5xxl-encoder-Q8_0.component.json.gz", ks+"t5xxl.component.json.gz"
	vae := sdxlVAE(t)
	for _, c := range []struct {
		name, main, vae, want string
		tes                   []string
	}{
		{"flux Q8_0 + T5 Q8_0", g + "flux1-dev-Q8_0.component.json.gz", ae, "Flux.1 (dev)", []string{clipL, t5GGUF}},
		{"flux Q4_K_S + T5 Q8_0", g + "flux1-dev-Q4_K_S.component.json.gz", ae, "Flux.1 (dev)", []string{clipL, t5GGUF}},
		{"flux Q4_K_S + T5 fp16", g + "flux1-dev-Q4_K_S.component.json.gz", ae, "Flux.1 (dev)", []string{clipL, t5}},
		{"flux bf16 + T5 Q8_0", ks + "flux1-dev.single.json.gz", ae, "Flux.1 (dev)", []string{clipL, t5GGUF}},
		{"sdxl Q8_0", g + "sdxl-unet-Q8_0.component.json.gz", vae, "SDXL (base)", []string{clipL, clipG}},
		{"sdxl Q4_K_S", g + "sdxl-unet-Q4_K_S.component.json.gz", vae, "SDXL (base)", []string{clipL, clipG}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := loadSplit(t, c.main, c.vae, c.tes...)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if got != c.want {
				t.Errorf("detected %s, want %s", got, c.want)
			}
		})
	}
}

// TestGGUFSD35Load: city96's SD3.5 Large and Medium GGUFs (the MMDiT
// alone) load with the SD3.5 VAE, CLIP-L, CLIP-G and the T5-XXL Q8_0 GGUF
// with no missing or unused tensor.
func TestGGUFSD35Load(t *testing.T) {
	clipL, clipG, t5GGUF := ks+"clip_l.component.json.gz", ks+"clip_g.component.json.gz", ks+"gguf/t5xxl-encoder-Q8_0.component.json.gz"
	for size, want := range map[string]string{"large": "SD3 (3.5 Large)", "medium": "SD3 (3.5 Medium)"} {
		t.Run(size, func(t *testing.T) {
			got, err := loadSplit(t, ks+"gguf/sd35-"+size+"-Q8_0.component.json.gz", vaeOf(t, "sd35-"+size+".single"), clipL, clipG, t5GGUF)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if got != want {
				t.Errorf("detected %s, want %s", got, want)
			}
		})
	}
}
