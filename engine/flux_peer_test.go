package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/lora"
)

// fluxLoRAFixture is testdata/reference/flux-lora/cases.json (made by
// tools/reference/gen_flux_lora_fixtures.py with diffusers' own
// FluxPipeline.load_lora_weights + fuse_lora).
type fluxLoRAFixture struct {
	Seed, Width, Height, Steps int
	Guidance                   float64
	MaxSeqLen                  int `json:"max_sequence_length"`
	Prompt                     string
	Cases                      []struct {
		Name, File string
		Strength   float64
	}
}

// TestFluxLoRADiffusers loads the tiny Flux LoRAs that diffusers fused —
// a kohya file over BFL's blocks (fused qkv and linear1 cut by rows) and
// a peft / ai-toolkit file over diffusers' layers, at strength 0.8 — and a
// BFL/ComfyUI-named file of the same LoRA as the peft one (which diffusers
// does not read; it must fuse as the peft file does): every transformer
// tensor of darkroom's merged weights equals diffusers' fused one, and so
// does its change from the base (1e-4); the final latent of a 2-step run
// from the diffusers folder and from BFL's split files equals diffusers'
// (1e-4), as does the LoRA-free one.
func TestFluxLoRADiffusers(t *testing.T) {
	if !testref.Exists("flux-lora", "cases.json") {
		t.Skip("no flux-lora fixtures")
	}
	b, err := os.ReadFile(testref.Path("flux-lora", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fluxLoRAFixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	ref := testref.Tensors(t, filepath.Join("flux-lora", "fused.safetensors"))
	folder := fluxFolder(t, "dev")
	m, err := weights.OpenModel(folder)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	type run struct{ name, file, ref string }
	runs := []run{{"bfl", "bfl.safetensors", "peft"}}
	for _, c := range fx.Cases {
		if c.Strength != 0.8 {
			t.Fatalf("case %s: strength %g, the test assumes 0.8", c.Name, c.Strength)
		}
		runs = append(runs, run{c.Name, c.File, c.Name})
	}
	latent := func(t *testing.T, model *Model, loras []LoRA) []float32 {
		req := DefaultRequest()
		req.Model, req.Prompt, req.Seed, req.Steps = "flux-tiny", fx.Prompt, uint64(fx.Seed), fx.Steps
		req.Width, req.Height, req.Convention = fx.Width, fx.Height, "diffusers"
		req.Sampler, req.Scheduler, req.CFG, req.Guidance, req.MaxSequenceLength = "euler", "simple", 1, fx.Guidance, fx.MaxSeqLen
		for _, l := range loras {
			req.LoRAs = append(req.LoRAs, l.String())
		}
		res, err := model.Generate(context.Background(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Latents
	}
	t.Run("none", func(t *testing.T) {
		for layout, model := range fluxLayouts(t, "dev") {
			check(t, layout+" final latent", latent(t, model, nil), ref["none/final_latents"], 1e-4)
		}
	})
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			path := testref.Path("flux-lora", r.file)
			src, err := lora.Apply(m.Source, "Flux.1 (dev)", []lora.Spec{{Path: path, Strength: 0.8, ClipStrength: 0.8}})
			if err != nil {
				t.Fatal(err)
			}
			pre := r.ref + "/transformer/"
			n := 0
			for key, want := range ref {
				name, ok := strings.CutPrefix(key, pre)
				if !ok {
					continue
				}
				n++
				got, err := src.Float32("transformer." + name)
				if err != nil {
					t.Fatal(err)
				}
				base, err := m.Source.Float32("transformer." + name)
				if err != nil {
					t.Fatal(err)
				}
				check(t, name, got, want, 1e-4)
				if d := sub(want, base); testref.RelErr(d, make([]float32, len(d))) > 0 {
					check(t, name+" change", sub(got, base), d, 1e-4)
				} else if e := testref.RelErr(got, base); e != 0 {
					t.Errorf("%s: diffusers leaves it, darkroom changes it by %.3g", name, e)
				}
			}
			if n == 0 {
				t.Fatalf("no fused tensors under %q", pre)
			}
			loras := []LoRA{{Path: path, Strength: 0.8, ClipStrength: 0.8}}
			for layout, model := range fluxLayoutsWith(t, "dev", loras) {
				check(t, layout+" final latent", latent(t, model, loras), ref[r.ref+"/final_latents"], 1e-4)
			}
		})
	}
}

// TestFluxImg2ImgDiffusers runs diffusers' FluxImg2ImgPipeline cases
// (tools/reference/gen_flux_img2img_fixtures.py: the tiny FLUX.1-dev
// pipeline from a fixed 64×48 image at strength 0.55 and 0.8) through the
// generic pipeline under diffusers' convention: the steps run (diffusers'
// rule), every step's latent and the final latent (1e-4), the image
// (≥ 45 dB).
func TestFluxImg2ImgDiffusers(t *testing.T) {
	if !testref.Exists("flux-img2img", "cases.json") {
		t.Skip("no flux-img2img fixtures")
	}
	b, err := os.ReadFile(testref.Path("flux-img2img", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []struct {
			Name, Prompt       string
			Strength, Guidance float64
			Steps, Seed        int
			MaxSeqLen          int `json:"max_sequence_length"`
			Width, Height      int
			StepsRun           int `json:"steps_run"`
		}
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	fx := testref.Tensors(t, filepath.Join("flux-img2img", "cases.safetensors"))
	m := fluxLayouts(t, "dev")["diffusers"]
	for _, c := range doc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			req := DefaultRequest()
			req.Model, req.Prompt, req.Seed, req.Steps = "flux-tiny", c.Prompt, uint64(c.Seed), c.Steps
			req.Width, req.Height, req.Convention = c.Width, c.Height, "diffusers"
			req.Sampler, req.Scheduler, req.CFG, req.Guidance, req.MaxSequenceLength = "euler", "simple", 1, c.Guidance, c.MaxSeqLen
			req.InitImage, req.Denoise = testref.Path("flux-img2img", "init.png"), c.Strength
			var steps [][]float32
			res, err := m.Generate(context.Background(), req, func(ev Event) {
				if ev.Phase == PhaseSample {
					steps = append(steps, ev.Latent)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) != c.StepsRun {
				t.Fatalf("%d steps run, diffusers ran %d", len(steps), c.StepsRun)
			}
			for i, s := range steps {
				check(t, fmt.Sprintf("latents_step%d", i), s, fx[fmt.Sprintf("%s/latents_step%d", c.Name, i)], 1e-4)
			}
			check(t, "final_latents", res.Latents, fx[c.Name+"/final_latents"], 1e-4)
			pix, err := m.Decode(context.Background(), res.Latents, res.LatentShape)
			if err != nil {
				t.Fatal(err)
			}
			if p := testref.PSNR(batchToHWC(pix, 1, c.Height, c.Width), fx[c.Name+"/image"]); p < 45 {
				t.Errorf("image PSNR %.1f dB < 45", p)
			} else {
				t.Logf("image PSNR %.1f dB", p)
			}
		})
	}
}
