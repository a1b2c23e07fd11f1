package engine

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/families/zimage"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/weightstest"
)

// zimageCase is one entry of testdata/reference/zimage/cases.json (made by
// tools/reference/gen_zimage_fixtures.py with diffusers' ZImagePipeline).
type zimageCase struct {
	Name     string  `json:"name"`
	Prompt   string  `json:"prompt"`
	Negative *string `json:"negative_prompt"`
	Width    int     `json:"width"`
	Height   int     `json:"height"`
	Steps    int     `json:"steps"`
	Guidance float64 `json:"cfg"` // diffusers' guidance_scale
	Seed     uint64  `json:"seed"`
	N        int     `json:"n"`
	MSL      int     `json:"msl"`
	Sigmas   []float64
	TokenIDs struct {
		Prompt   []int `json:"prompt"`
		Negative []int `json:"negative_prompt"`
	} `json:"token_ids"`
}

func zimageCases(t *testing.T) []zimageCase { return fixtureCases[zimageCase](t, "zimage") }

// zimageTextEncoder writes the tiny Qwen3 text encoder with its full
// 151936-row token table into dir (model.safetensors): the fixture keeps
// only the rows its prompts use (embed.safetensors); the rest are zeros,
// as they were when diffusers ran.
func zimageTextEncoder(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "model.safetensors")
	err := weightstest.ExpandEmbedding(testref.Path("zimage", "turbo", "text_encoder", "model.safetensors"), testref.Path("zimage", "embed.safetensors"),
		"model.embed_tokens.weight", 151936, path)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// zimageFolder assembles the tiny ZImagePipeline folder: turbo/ with the
// text encoder's full token table (zimageTextEncoder) and the tiny Flux
// VAE of flux-pipe; the tokenizer is the bundled Qwen3 one.
func zimageFolder(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "z-image-turbo-tiny")
	linkTree(t, testref.Path("zimage", "turbo"), dir)
	if err := os.Remove(filepath.Join(dir, "text_encoder", "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	zimageTextEncoder(t, filepath.Join(dir, "text_encoder"))
	linkTree(t, testref.Path("flux-pipe", "dev", "vae"), filepath.Join(dir, "vae"))
	return dir
}

// zimageSplit loads ComfyUI's split files: the transformer in ComfyUI's
// names, ae.safetensors and the Qwen3 file, with loras applied.
func zimageSplit(t *testing.T, loras ...LoRA) *Model {
	t.Helper()
	te := zimageTextEncoder(t, t.TempDir())
	src, err := weights.OpenFiles(testref.Path("zimage", "comfy", "z_image_tiny.safetensors"), testref.Path("flux-pipe", "bfl", "ae.safetensors"), []string{te})
	if err != nil {
		t.Fatal(err)
	}
	m, err := loadFrom(context.Background(), src, cpu.New(), loras, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestZImageDiffusersCases runs the tiny Z-Image Turbo pipeline through
// the generic pipeline under diffusers' convention and compares with
// diffusers' ZImagePipeline: the Qwen3 token ids (exact), the text states
// of prompt and negative prompt (1e-4), the sigmas (1e-6), the latent after
// every step (1e-4) and the image (≥ 45 dB), from the diffusers folder and
// from ComfyUI's split files. diffusers' guidance_scale g is CFG g+1 (its
// pos + g·(pos − neg)); g = 0 runs no negative pass, as CFG 1.
func TestZImageDiffusersCases(t *testing.T) {
	cases := zimageCases(t)
	fx := testref.Tensors(t, filepath.Join("zimage", "cases.safetensors"))
	ctx := context.Background()
	folder, err := LoadFiles(ctx, ModelFiles{Model: zimageFolder(t)}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer folder.Close()
	layouts := map[string]*Model{"diffusers": folder, "comfy": zimageSplit(t)}
	for _, c := range cases {
		for layout, m := range layouts {
			t.Run(c.Name+"/"+layout, func(t *testing.T) {
				psnr := runZImageCase(t, m, c, fx, 1e-4)
				if psnr < 45 {
					t.Errorf("image PSNR %.1f dB < 45", psnr)
				} else {
					t.Logf("image PSNR %.1f dB", psnr)
				}
			})
		}
	}
}

// runZImageCase runs one ZImagePipeline case on m under diffusers'
// convention, checking the token ids, the text states, the sigmas and the
// latent after every step (relative error ≤ tol), and returns the image's
// PSNR against diffusers'.
func runZImageCase(t *testing.T, m *Model, c zimageCase, fx map[string][]float32, tol float64) float64 {
	t.Helper()
	ctx := context.Background()
	req := DefaultRequest()
	req.Model, req.Prompt, req.Seed, req.Steps = "z-image-tiny", c.Prompt, c.Seed, c.Steps
	req.Width, req.Height, req.Batch, req.Convention = c.Width, c.Height, c.N, "diffusers"
	req.Sampler, req.Scheduler, req.CFG = "euler", "simple", c.Guidance+1
	req.MaxSequenceLength = c.MSL
	if c.Negative != nil {
		req.Negative = *c.Negative
	}
	text := m.c.Text.(*zimage.Conditioner)
	opt := family.PromptOptions{Convention: ConventionDiffusers, MaxSequenceLength: c.MSL}
	type encoded struct {
		text, key string
		ids       []int
	}
	prompts := []encoded{{req.Prompt, "prompt_embeds", c.TokenIDs.Prompt}}
	if c.Guidance > 0 {
		prompts = append(prompts, encoded{req.Negative, "negative_prompt_embeds", c.TokenIDs.Negative})
	}
	for _, p := range prompts {
		if len(p.ids) == 0 {
			t.Fatalf("%s: no token ids in the fixture", p.key)
		}
		opt.Negative = p.key != "prompt_embeds"
		if got := text.IDs(p.text, opt); fmt.Sprint(got) != fmt.Sprint(p.ids) {
			t.Errorf("%s ids %v, want %v", p.key, got, p.ids)
		}
		cond, err := m.encodePrompt(ctx, p.text, opt)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := cond.Values(m.dev)
		check(t, p.key, got, fx[fmt.Sprintf("%s/%s_0", c.Name, p.key)], tol)
	}
	checkSamplerSigmas(t, m, SampleParams{Width: c.Width, Height: c.Height, Convention: ConventionDiffusers, Scheduler: "simple"}, req, c.Sigmas)
	return checkStepsAndImage(t, m, req, fx, func(i int) string { return fmt.Sprintf("%s/latents_%d", c.Name, i) }, c.Name+"/image", tol)
}

// TestGPUZImageCases runs the ZImagePipeline cases from the diffusers
// folder on the GPU: in float32 (TF32 off) with the CPU's tolerances, and
// in bf16 and fp16 (darkroom's default, with ComfyUI's clamps) with the
// image ≥ 30 dB from diffusers' float32 one.
func TestGPUZImageCases(t *testing.T) {
	cases := zimageCases(t)
	fx := testref.Tensors(t, filepath.Join("zimage", "cases.safetensors"))
	for _, prec := range []struct {
		dt       tensor.DType
		tol, min float64
	}{{tensor.F32, 1e-4, 45}, {tensor.BF16, 1, 30}, {tensor.F16, 1, 30}} {
		t.Run(prec.dt.String(), func(t *testing.T) {
			m, err := Load(context.Background(), zimageFolder(t), openGPUIn(t, prec.dt))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for _, c := range cases {
				t.Run(c.Name, func(t *testing.T) {
					p := runZImageCase(t, m, c, fx, prec.tol)
					t.Logf("%v image PSNR %.1f dB", prec.dt, p)
					if p < prec.min {
						t.Errorf("%v image PSNR %.1f dB < %.0f", prec.dt, p, prec.min)
					}
				})
			}
		})
	}
}

// TestZImageImg2ImgInpaint runs the tiny Z-Image through the generic
// img2img and inpaint paths (checkImg2ImgPaths): the final latent moves
// away from the encoded init image as the denoise grows, and an inpaint
// leaves every unmasked pixel as it was.
func TestZImageImg2ImgInpaint(t *testing.T) {
	if !testref.Exists("zimage", "cases.json") {
		t.Skip("no zimage fixtures")
	}
	m, err := Load(context.Background(), zimageFolder(t), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := DefaultRequest()
	base.Model, base.Prompt, base.Seed, base.Steps, base.Width, base.Height = "z-image-tiny", "a red fox", 3, 4, 64, 64
	base.CFG, base.Sampler, base.Scheduler = 1, "euler", "simple"
	inside := func(x, y int) bool { return x >= 16 && x < 48 && y >= 16 && y < 48 }
	mask := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			if inside(x, y) {
				mask.Pix[y*64+x] = 255
			}
		}
	}
	checkImg2ImgPaths(t, m, base, mask, 0.9, 5, func(x, y int) bool { return !inside(x, y) })
}

// zimageLoRAs are two random rank-4 LoRAs for the tiny Z-Image (width 64,
// feed-forward 170, caption 32): "diffusers" names diffusers' modules as
// ai-toolkit saves them (diffusion_model.…, peft lora_A/lora_B: separate
// to_q/to_k/to_v, to_out.0, all_x_embedder.2-1), "comfyui" ComfyUI's
// (kohya lora_unet_…: the fused attention.qkv, attention.out, x_embedder,
// final_layer).
var zimageLoRAs = map[string][]fluxLoRAModule{
	"diffusers": {
		{"diffusion_model.layers.0.attention.to_q", 64, 64},
		{"diffusion_model.layers.1.attention.to_v", 64, 64},
		{"diffusion_model.layers.0.attention.to_out.0", 64, 64},
		{"diffusion_model.noise_refiner.1.feed_forward.w1", 170, 64},
		{"diffusion_model.context_refiner.0.attention.to_k", 64, 64},
		{"diffusion_model.layers.1.adaLN_modulation.0", 256, 64},
		{"diffusion_model.all_x_embedder.2-1", 64, 64},
		{"diffusion_model.all_final_layer.2-1.linear", 64, 64},
	},
	"comfyui": {
		{"lora_unet_layers_0_attention_qkv", 192, 64},
		{"lora_unet_noise_refiner_0_attention_out", 64, 64},
		{"lora_unet_layers_1_feed_forward_w2", 64, 170},
		{"lora_unet_x_embedder", 64, 64},
		{"lora_unet_final_layer_adaLN_modulation_1", 64, 64},
		{"lora_unet_cap_embedder_1", 64, 32},
	},
}

// TestZImageLoRALayouts applies each tiny LoRA (diffusers-named and
// ComfyUI-named, each reaching the other layout's fused or separate
// attention projections) to the tiny Z-Image from the diffusers folder and
// from ComfyUI's split files: the two final latents agree (relative 1e-5)
// and differ from the LoRA-free one. (No peer fixture yet: this proves the
// name and row mapping, the merge arithmetic is the one the SD and Flux
// fixtures prove.)
func TestZImageLoRALayouts(t *testing.T) {
	if testing.Short() || !testref.Exists("zimage", "cases.json") {
		t.Skip("no zimage fixtures, or -short")
	}
	latent := func(m *Model) []float32 {
		req := DefaultRequest()
		req.Model, req.Prompt, req.Seed, req.Steps = "z-image-tiny", "a red fox in the snow", 7, 2
		req.Width, req.Height, req.Convention = 32, 32, "diffusers"
		req.Sampler, req.Scheduler, req.CFG = "euler", "simple", 1
		for _, l := range m.LoRAs() {
			req.LoRAs = append(req.LoRAs, l.String())
		}
		res, err := m.Generate(context.Background(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Latents
	}
	load := func(loras []LoRA) map[string]*Model {
		m, err := LoadFiles(context.Background(), ModelFiles{Model: zimageFolder(t), LoRAs: loras}, cpu.New())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return map[string]*Model{"diffusers": m, "comfy": zimageSplit(t, loras...)}
	}
	plain := load(nil)
	base := latent(plain["diffusers"])
	check(t, "no LoRA: comfy against diffusers", latent(plain["comfy"]), base, 1e-5)
	for name, mods := range zimageLoRAs {
		path := writeFluxLoRA(t, name, mods)
		t.Run(name, func(t *testing.T) {
			ms := load([]LoRA{{Path: path, Strength: 0.8}})
			d, c := latent(ms["diffusers"]), latent(ms["comfy"])
			check(t, "comfy against diffusers", c, d, 1e-5)
			if e := testref.RelErr(d, base); e < 1e-3 {
				t.Errorf("the LoRA moves the latent by only %.3g", e)
			} else {
				t.Logf("the LoRA moves the latent by %.3g (relative)", e)
			}
		})
	}
}

// TestZImageComfyTokens: under ComfyUI's convention the prompt is tokenized
// as ComfyUI's Z-Image text encoder does, with its qwen25_tokenizer (where
// <think> is plain text) and without truncation; under diffusers' with
// Qwen3's tokenizer (<think> one added token) truncated at
// max_sequence_length.
func TestZImageComfyTokens(t *testing.T) {
	if !testref.Exists("zimage", "cases.json") {
		t.Skip("no zimage fixtures")
	}
	m, err := Load(context.Background(), zimageFolder(t), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.c.Text.(*zimage.Conditioner)
	const prompt = `a <think> cat \(tabby\)`
	comfy := c.IDs(prompt, family.PromptOptions{Convention: ConventionComfy})
	q25, err := tokenizer.NewQwen25()
	if err != nil {
		t.Fatal(err)
	}
	if want := q25.IDs("<|im_start|>user\na <think> cat (tabby)<|im_end|>\n<|im_start|>assistant\n"); fmt.Sprint(comfy) != fmt.Sprint(want) {
		t.Errorf("ComfyUI ids %v, want %v", comfy, want)
	}
	diff := c.IDs(prompt, family.PromptOptions{Convention: ConventionDiffusers})
	if len(diff) >= len(comfy) {
		t.Errorf("diffusers' ids (%d) should hold <think> as one token, fewer than ComfyUI's %d", len(diff), len(comfy))
	}
	long := strings.Repeat("word ", 600)
	if n := len(c.IDs(long, family.PromptOptions{Convention: ConventionDiffusers})); n != 512 {
		t.Errorf("diffusers: %d ids, want truncation at 512", n)
	}
	if n := len(c.IDs(long, family.PromptOptions{Convention: ConventionComfy})); n <= 600 {
		t.Errorf("ComfyUI: %d ids, want the whole prompt", n)
	}
}
