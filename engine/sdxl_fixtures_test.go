package engine

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
)

// sdxlCase is one entry of testdata/reference/sdxl_cases.json (made by
// tools/reference/gen_sdxl_fixtures.py with diffusers'
// StableDiffusionXLPipeline).
type sdxlCase struct {
	Name      string  `json:"name"`
	Model     string  `json:"model"`
	Prompt    string  `json:"prompt"`
	Negative  *string `json:"negative"`
	Seed      uint64  `json:"seed"`
	Steps     int     `json:"steps"`
	CFG       float64 `json:"cfg"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	Sampler   string  `json:"sampler"`
	Scheduler string  `json:"scheduler"`
	Pipeline  string  `json:"pipeline"`
	Call      struct {
		OriginalSize []int `json:"original_size"`
		Crops        []int `json:"crops_coords_top_left"`
		TargetSize   []int `json:"target_size"`
	} `json:"diffusers_call"`
}

// TestSDXLDiffusersCases runs the tiny SDXL base (Stability's single-file
// layout: CLIP-L in transformers layout, bigG in OpenCLIP layout with fused
// q/k/v) through the generic pipeline under diffusers' convention and
// compares with diffusers: both encoders' concatenated penultimate hidden
// states and the pooled bigG projection (1e-4), the final latent (1e-4)
// and the image (≥ 45 dB). Cases: Euler, DPM++ 2M Karras with explicit
// size and crop conditioning at 96×64, an unset negative prompt (zeros),
// and a prompt beyond 77 tokens.
func TestSDXLDiffusersCases(t *testing.T) {
	b, err := os.ReadFile(testref.Path("sdxl_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Cases []sdxlCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &manifest); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := Load(ctx, testref.Path("sdxl-tiny", "single.safetensors"), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The tiny model's 1000-token vocabulary (a single file carries none).
	useTinyTokenizer(t, m)
	fx := testref.Tensors(t, "sdxl_cases.safetensors")
	ran := 0
	for _, c := range manifest.Cases {
		if c.Model != "sdxl-tiny" || c.Pipeline != "StableDiffusionXLPipeline" {
			continue // the img2img cases have their own tests
		}
		ran++
		t.Run(c.Name, func(t *testing.T) {
			req := DefaultRequest()
			req.Model, req.Prompt, req.Seed, req.Steps, req.CFG = "sdxl-tiny", c.Prompt, c.Seed, c.Steps, c.CFG
			req.Width, req.Height, req.Sampler, req.Scheduler, req.Convention = c.Width, c.Height, c.Sampler, c.Scheduler, "diffusers"
			if c.Negative != nil {
				req.Negative = *c.Negative
			}
			if s := c.Call.OriginalSize; len(s) == 2 {
				req.OriginalHeight, req.OriginalWidth = s[0], s[1]
			}
			if s := c.Call.Crops; len(s) == 2 {
				req.CropTop, req.CropLeft = s[0], s[1]
			}
			if s := c.Call.TargetSize; len(s) == 2 {
				req.TargetHeight, req.TargetWidth = s[0], s[1]
			}
			conv, err := requestConvention(req)
			if err != nil {
				t.Fatal(err)
			}
			opt := family.PromptOptions{ClipSkip: req.ClipSkip, Convention: conv}
			for _, p := range []struct{ text, key string }{{req.Prompt, "prompt"}, {req.Negative, "negative_prompt"}} {
				cond, err := m.encodePrompt(ctx, p.text, opt)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := cond.Values(m.dev)
				check(t, p.key+"_embeds", got, fx[c.Name+"/"+p.key+"_embeds"], 1e-4)
				pooled, _ := m.dev.Download(cond.c.Pooled)
				check(t, p.key+" pooled", pooled, fx[c.Name+"/"+map[string]string{"prompt": "pooled_prompt_embeds", "negative_prompt": "negative_pooled_prompt_embeds"}[p.key]], 1e-4)
			}
			res, err := m.Generate(ctx, req, nil)
			if err != nil {
				t.Fatal(err)
			}
			check(t, "final_latent", res.Latents, fx[c.Name+"/final_latent"], 1e-4)
			pix, err := m.Decode(ctx, res.Latents, res.LatentShape)
			if err != nil {
				t.Fatal(err)
			}
			if p := testref.PSNR(chwToHWC(pix, c.Height, c.Width), fx[c.Name+"/image"]); p < 45 {
				t.Errorf("image PSNR %.1f dB < 45", p)
			} else {
				t.Logf("image PSNR %.1f dB", p)
			}
		})
	}
	if ran < 4 {
		t.Fatalf("%d SDXL base cases in the manifest, want at least 4", ran)
	}
}
