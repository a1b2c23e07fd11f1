package engine

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/families/qwenimage"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/weightstest"
)

// qwenImageCase is one entry of testdata/reference/qwenimage/cases.json
// (made by tools/reference/gen_qwenimage_fixtures.py with diffusers'
// QwenImagePipeline).
type qwenImageCase struct {
	Name     string  `json:"name"`
	Prompt   string  `json:"prompt"`
	Negative *string `json:"negative_prompt"`
	Width    int     `json:"width"`
	Height   int     `json:"height"`
	Steps    int     `json:"steps"`
	TrueCFG  float64 `json:"true_cfg_scale"`
	CFGRan   bool    `json:"cfg_ran"`
	Seed     uint64  `json:"seed"`
	N        int     `json:"n"`
	MSL      int     `json:"msl"`
	Sigmas   []float64
	TokenIDs struct {
		Prompt   []int `json:"prompt"`
		Negative []int `json:"negative_prompt"`
	} `json:"token_ids"`
}

func qwenImageCases(t *testing.T) []qwenImageCase { return fixtureCases[qwenImageCase](t, "qwenimage") }

// qwenImageFolder assembles the tiny QwenImagePipeline folder: pipe/ with
// the text encoder's full 152064-row token table (the fixture keeps the
// rows its prompts use) and the tiny VAE of qwenimage-vae; the tokenizer
// is the bundled Qwen2.5 one.
func qwenImageFolder(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "qwen-image-tiny")
	linkTree(t, testref.Path("qwenimage", "pipe"), dir)
	te := filepath.Join(dir, "text_encoder", "model.safetensors")
	if err := os.Remove(te); err != nil {
		t.Fatal(err)
	}
	err := weightstest.ExpandEmbedding(testref.Path("qwenimage", "pipe", "text_encoder", "model.safetensors"), testref.Path("qwenimage", "embed.safetensors"),
		"model.embed_tokens.weight", 152064, te)
	if err != nil {
		t.Fatal(err)
	}
	if err := linkFile(testref.Path("qwenimage-vae", "vae.safetensors"), filepath.Join(dir, "vae", "diffusion_pytorch_model.safetensors")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestQwenImageDiffusersCases runs the tiny Qwen-Image pipeline through the
// generic pipeline under diffusers' convention and compares with diffusers'
// QwenImagePipeline: the templated token ids (exact), the text states after
// the template's 34 tokens (1e-4), the sigmas of the resolution-dependent
// shift with shift_terminal (1e-6), the latent after every step — with
// true CFG and its norm rescale where the case has a negative prompt — (1e-4)
// and the image (≥ 45 dB).
func TestQwenImageDiffusersCases(t *testing.T) {
	cases := qwenImageCases(t)
	fx := testref.Tensors(t, filepath.Join("qwenimage", "cases.safetensors"))
	folder := qwenImageFolder(t)
	m, err := LoadFiles(context.Background(), ModelFiles{Model: folder}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	layouts := map[string]*Model{"diffusers": m, "split": qwenImageSplit(t, folder)}
	for _, c := range cases {
		for layout, m := range layouts {
			t.Run(c.Name+"/"+layout, func(t *testing.T) {
				psnr := runQwenImageCase(t, m, c, fx, 1e-4)
				if psnr < 45 {
					t.Errorf("image PSNR %.1f dB < 45", psnr)
				} else {
					t.Logf("image PSNR %.1f dB", psnr)
				}
			})
		}
	}
}

// qwenImageSplit loads the tiny model as ComfyUI's split files: the
// transformer file (ComfyUI keeps diffusers' names), the VAE file given
// with --vae and the text encoder with --text-encoder; the tiny models'
// rope axes and head width come from the folder's configs (split files
// carry none, and only the released models' are known).
func qwenImageSplit(t *testing.T, folder string, loras ...LoRA) *Model {
	t.Helper()
	src, err := weights.OpenFiles(filepath.Join(folder, "transformer", "diffusion_pytorch_model.safetensors"),
		filepath.Join(folder, "vae", "diffusion_pytorch_model.safetensors"), []string{filepath.Join(folder, "text_encoder", "model.safetensors")})
	if err != nil {
		t.Fatal(err)
	}
	src.JSON = map[string][]byte{}
	for _, f := range []string{"transformer/config.json", "text_encoder/config.json"} {
		b, err := os.ReadFile(filepath.Join(folder, f))
		if err != nil {
			t.Fatal(err)
		}
		src.JSON[f] = b
	}
	m, err := loadFrom(context.Background(), src, cpu.New(), loras, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestGPUQwenImageCases runs the diffusers cases on the GPU: float32 with
// the CPU's tolerances, bf16 and fp16 by image PSNR (≥ 30 dB).
func TestGPUQwenImageCases(t *testing.T) {
	cases := qwenImageCases(t)
	fx := testref.Tensors(t, filepath.Join("qwenimage", "cases.safetensors"))
	for _, prec := range []struct {
		dt       tensor.DType
		tol, min float64
	}{{tensor.F32, 1e-4, 45}, {tensor.BF16, 1, 30}, {tensor.F16, 1, 30}} {
		t.Run(prec.dt.String(), func(t *testing.T) {
			m, err := Load(context.Background(), qwenImageFolder(t), openGPUIn(t, prec.dt))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for _, c := range cases {
				t.Run(c.Name, func(t *testing.T) {
					p := runQwenImageCase(t, m, c, fx, prec.tol)
					t.Logf("%v image PSNR %.1f dB", prec.dt, p)
					if p < prec.min {
						t.Errorf("%v image PSNR %.1f dB < %.0f", prec.dt, p, prec.min)
					}
				})
			}
		})
	}
}

// runQwenImageCase runs one QwenImagePipeline case on m under diffusers'
// convention (relative error ≤ tol) and returns the image's PSNR.
func runQwenImageCase(t *testing.T, m *Model, c qwenImageCase, fx map[string][]float32, tol float64) float64 {
	t.Helper()
	ctx := context.Background()
	req := DefaultRequest()
	req.Model, req.Prompt, req.Seed, req.Steps = "qwen-image-tiny", c.Prompt, c.Seed, c.Steps
	req.Width, req.Height, req.Batch, req.Convention = c.Width, c.Height, c.N, "diffusers"
	req.Sampler, req.Scheduler, req.CFG = "euler", "simple", 1
	req.MaxSequenceLength = c.MSL
	if c.CFGRan {
		req.CFG, req.Negative = c.TrueCFG, *c.Negative
	}
	text := m.c.Text.(*qwenimage.Conditioner)
	opt := family.PromptOptions{Convention: ConventionDiffusers, MaxSequenceLength: c.MSL}
	type encoded struct {
		text, key string
		ids       []int
	}
	prompts := []encoded{{req.Prompt, "prompt_embeds", c.TokenIDs.Prompt}}
	if c.CFGRan {
		prompts = append(prompts, encoded{req.Negative, "negative_prompt_embeds", c.TokenIDs.Negative})
	}
	for _, p := range prompts {
		if ids, _ := text.IDs(p.text, opt); fmt.Sprint(ids) != fmt.Sprint(p.ids) {
			t.Errorf("%s ids %v, want %v", p.key, ids, p.ids)
		}
		opt.Negative = p.key != "prompt_embeds"
		cond, err := m.encodePrompt(ctx, p.text, opt)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := cond.Values(m.dev)
		want := fx[c.Name+"/"+p.key]
		if len(want) > len(got) {
			want = want[:len(got)] // the pipeline repeats the states for each image
		}
		check(t, p.key, got, want, tol)
	}
	checkSamplerSigmas(t, m, SampleParams{Width: c.Width, Height: c.Height, Convention: ConventionDiffusers, Scheduler: "simple"}, req, c.Sigmas)
	return checkStepsAndImage(t, m, req, fx, func(i int) string { return fmt.Sprintf("%s/latents_unpacked_%d", c.Name, i) }, c.Name+"/image", tol)
}

// TestQwenImageImg2ImgInpaint runs the tiny Qwen-Image through the generic
// img2img and inpaint paths (checkImg2ImgPaths) with its Wan-style VAE's
// encoder: the final latent moves away from the encoded init image as the
// denoise grows, and an inpaint leaves every unmasked pixel as it was.
func TestQwenImageImg2ImgInpaint(t *testing.T) {
	if !testref.Exists("qwenimage", "cases.json") {
		t.Skip("no qwenimage fixtures")
	}
	m, err := Load(context.Background(), qwenImageFolder(t), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := DefaultRequest()
	base.Model, base.Prompt, base.Seed, base.Steps, base.Width, base.Height = "qwen-image-tiny", "a lighthouse", 3, 4, 64, 64
	base.CFG, base.Sampler, base.Scheduler = 1, "euler", "simple"
	mask := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := 32; x < 64; x++ {
			mask.Pix[y*64+x] = 255
		}
	}
	checkImg2ImgPaths(t, m, base, mask, 0.9, 5, func(x, _ int) bool { return x < 32 })
}

// TestQwenImageLoRALayouts applies random rank-4 LoRAs to the tiny
// Qwen-Image from the folder and as split files — one in ComfyUI's /
// lightx2v's diffusion_model.… names with kohya's down/up, one in diffusers'
// transformer.… peft names — and checks the two layouts' latents agree
// (1e-5) and move away from the LoRA-free one. (No peer fixture yet.)
func TestQwenImageLoRALayouts(t *testing.T) {
	if testing.Short() || !testref.Exists("qwenimage", "cases.json") {
		t.Skip("no qwenimage fixtures, or -short")
	}
	folder := qwenImageFolder(t)
	latent := func(m *Model) []float32 {
		req := DefaultRequest()
		req.Model, req.Prompt, req.Seed, req.Steps = "qwen-image-tiny", "a lighthouse", 7, 2
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
		m, err := LoadFiles(context.Background(), ModelFiles{Model: folder, LoRAs: loras}, cpu.New())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return map[string]*Model{"diffusers": m, "split": qwenImageSplit(t, folder, loras...)}
	}
	base := latent(load(nil)["diffusers"])
	for name, mods := range map[string][]fluxLoRAModule{
		"comfyui": {{"lora_unet_transformer_blocks_0_attn_to_q", 32, 32}, {"lora_unet_transformer_blocks_1_img_mlp_net_0_proj", 128, 32},
			{"lora_unet_transformer_blocks_0_txt_mod_1", 192, 32}, {"lora_unet_img_in", 32, 64}},
		"diffusers": {{"transformer.transformer_blocks.1.attn.add_k_proj", 32, 32}, {"transformer.transformer_blocks.0.attn.to_out.0", 32, 32},
			{"transformer.txt_in", 32, 32}, {"transformer.proj_out", 64, 32}},
	} {
		path := writeFluxLoRA(t, "qwen-"+name, mods)
		t.Run(name, func(t *testing.T) {
			ms := load([]LoRA{{Path: path, Strength: 0.8}})
			d, s := latent(ms["diffusers"]), latent(ms["split"])
			check(t, "split against diffusers", s, d, 1e-5)
			if e := testref.RelErr(d, base); e < 1e-3 {
				t.Errorf("the LoRA moves the latent by only %.3g", e)
			} else {
				t.Logf("the LoRA moves the latent by %.3g (relative)", e)
			}
		})
	}
}
