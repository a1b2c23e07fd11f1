package engine

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/families/sd3"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// sd3Case is one entry of testdata/reference/sd3/cases.json (made by
// tools/reference/gen_sd3_fixtures.py with diffusers'
// StableDiffusion3Pipeline).
type sd3Case struct {
	Name     string  `json:"name"`
	Model    string  `json:"model"`
	Prompt   string  `json:"prompt"`
	Negative *string `json:"negative_prompt"`
	Width    int     `json:"width"`
	Height   int     `json:"height"`
	Steps    int     `json:"steps"`
	CFG      float64 `json:"cfg"`
	Seed     uint64  `json:"seed"`
	N        int     `json:"n"`
	MSL      int     `json:"msl"`
	ClipSkip int     `json:"clip_skip"`
	NoT5     bool    `json:"no_t5"`
	SLG      *struct {
		Layers            []int
		Scale, Start, End float64
		Stop              float64 `json:"stop"`
	} `json:"slg"`
	Sigmas   []float64        `json:"sigmas"`
	TokenIDs map[string][]int `json:"token_ids"`
}

func sd3Cases(t *testing.T) []sd3Case { return fixtureCases[sd3Case](t, "sd3") }

// sd3Folder assembles a tiny StableDiffusion3Pipeline folder: sd35/ whole
// but for the T5 weights (the tiny T5 of t5-tiny; none with noT5) and its
// tokenizer (the bundled one); model "b" swaps in sd3/transformer.
func sd3Folder(t *testing.T, model string, noT5 bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sd3-tiny-"+model)
	if model == "b" {
		linkTree(t, testref.Path("sd3", "sd3"), dir)
	}
	linkTree(t, testref.Path("sd3", "sd35"), dir)
	if noT5 {
		if err := os.RemoveAll(filepath.Join(dir, "text_encoder_3")); err != nil {
			t.Fatal(err)
		}
	} else if err := linkFile(testref.Path("t5-tiny", "model.safetensors"), filepath.Join(dir, "text_encoder_3", "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sd3Single loads Stability's single file of model "a" (transformer, VAE,
// CLIP-L and CLIP-G inside) with the T5 file given separately; the tiny
// CLIP vocabulary and head counts are set from the folder, as a single
// file carries neither.
func sd3Single(t *testing.T, noT5 bool) *Model {
	t.Helper()
	var tes []string
	if !noT5 {
		tes = []string{testref.Path("t5-tiny", "model.safetensors")}
	}
	src, err := weights.OpenFiles(testref.Path("sd3", "single", "sd35_tiny_incl_clips.safetensors"), "", tes)
	if err != nil {
		t.Fatal(err)
	}
	src.JSON = map[string][]byte{}
	for _, f := range []string{"text_encoder/config.json", "text_encoder_2/config.json"} {
		b, err := os.ReadFile(testref.Path("sd3", "sd35", f))
		if err != nil {
			t.Fatal(err)
		}
		src.JSON[f] = b
	}
	m, err := loadFrom(context.Background(), src, cpu.New(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	text := m.c.Text.(*sd3.Conditioner)
	for _, e := range []struct {
		p   *int
		tok **tokenizer.CLIP
		sub string
		pad func(*tokenizer.CLIP) int
	}{{&text.L.Pad, &text.L.Tok, "tokenizer", (*tokenizer.CLIP).EOS}, {&text.G.Pad, &text.G.Tok, "tokenizer_2", func(*tokenizer.CLIP) int { return 0 }}} {
		dir := testref.Path("sd3", "sd35", e.sub)
		tok, err := tokenizer.LoadCLIP(filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt"))
		if err != nil {
			t.Fatal(err)
		}
		*e.tok, *e.p = tok, e.pad(tok)
	}
	return m
}

// TestSD3DiffusersCases runs the tiny SD3.5-style ("a": RMS query/key
// norms, MMDiT-X blocks) and SD3-style ("b") pipelines through the generic
// pipeline under diffusers' convention and compares with diffusers'
// StableDiffusion3Pipeline: CLIP token ids (exact), the text states and
// pooled vectors of prompt and negative prompt (1e-4), the sigmas (1e-6),
// the latent after every step (1e-4) and the image (≥ 45 dB). Model "a"
// runs from the diffusers folder and from Stability's single file. Cases:
// CFG 4.5 with 256 T5 tokens; a long prompt truncated by both CLIPs and by
// 64 T5 tokens, a negative prompt, clip skip 1 and two images at 80×48;
// Skip-Layer Guidance on block 1; no T5 (zeros); CFG 1; model "b".
func TestSD3DiffusersCases(t *testing.T) {
	cases := sd3Cases(t)
	fx := testref.Tensors(t, filepath.Join("sd3", "cases.safetensors"))
	ctx := context.Background()
	models := map[string]*Model{}
	get := func(key string, load func() *Model) *Model {
		if models[key] == nil {
			models[key] = load()
		}
		return models[key]
	}
	for _, c := range cases {
		layouts := map[string]func() *Model{
			"diffusers": func() *Model {
				m, err := LoadFiles(ctx, ModelFiles{Model: sd3Folder(t, c.Model, c.NoT5)}, cpu.New())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				return m
			},
		}
		if c.Model == "a" {
			layouts["single"] = func() *Model { return sd3Single(t, c.NoT5) }
		}
		for layout, load := range layouts {
			t.Run(c.Name+"/"+layout, func(t *testing.T) {
				m := get(fmt.Sprint(c.Model, layout, c.NoT5), load)
				psnr := runSD3Case(t, m, c, fx, 1e-4)
				if psnr < 45 {
					t.Errorf("image PSNR %.1f dB < 45", psnr)
				} else {
					t.Logf("image PSNR %.1f dB", psnr)
				}
			})
		}
	}
}

// runSD3Case runs one StableDiffusion3Pipeline case on m under diffusers'
// convention, checking the token ids, the text states, the pooled
// vectors, the sigmas and the latent after every step (relative error ≤
// tol), and returns the image's PSNR against diffusers'.
func runSD3Case(t *testing.T, m *Model, c sd3Case, fx map[string][]float32, tol float64) float64 {
	t.Helper()
	req := DefaultRequest()
	req.Model, req.Prompt, req.Seed, req.Steps = "sd3-tiny", c.Prompt, c.Seed, c.Steps
	req.Width, req.Height, req.Batch, req.Convention = c.Width, c.Height, c.N, "diffusers"
	req.Sampler, req.Scheduler, req.CFG = "euler", "simple", c.CFG
	req.MaxSequenceLength = c.MSL
	if c.Negative != nil {
		req.Negative = *c.Negative
	}
	if c.ClipSkip > 0 {
		req.ClipSkip = c.ClipSkip + 2 // diffusers' clip_skip counts from the penultimate layer
	}
	if c.SLG != nil {
		req.SLGScale, req.SLGStart, req.SLGEnd = c.SLG.Scale, c.SLG.Start, c.SLG.Stop
		for i, l := range c.SLG.Layers {
			if i > 0 {
				req.SLGLayers += ","
			}
			req.SLGLayers += strconv.Itoa(l)
		}
	}
	text := m.c.Text.(*sd3.Conditioner)
	for sub, p := range map[string]*struct {
		tok *tokenizer.CLIP
		pad int
	}{"tokenizer": {text.L.Tok, text.L.Pad}, "tokenizer_2": {text.G.Tok, text.G.Pad}} {
		if got := p.tok.Pad(bodyOf(p.tok.Encode(c.Prompt)), tokenizer.ContextLength, p.pad); fmt.Sprint(got) != fmt.Sprint(c.TokenIDs[sub]) {
			t.Errorf("%s ids %v, want %v", sub, got, c.TokenIDs[sub])
		}
	}
	if want, ok := c.TokenIDs["tokenizer_3"]; ok {
		if got, _ := text.T5.Tok.Encode(c.Prompt, c.MSL, true); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("T5 ids %v, want %v", got, want)
		}
	}
	opt := family.PromptOptions{Convention: ConventionDiffusers, MaxSequenceLength: c.MSL, ClipSkip: req.ClipSkip}
	checkConds(t, m, opt, req, fx, c.Name+"/", "prompt_embeds", "pooled_prompt_embeds", tol)
	checkSamplerSigmas(t, m, SampleParams{Width: c.Width, Height: c.Height, Convention: ConventionDiffusers, Scheduler: "simple"}, req, c.Sigmas)
	return checkStepsAndImage(t, m, req, fx, func(i int) string { return fmt.Sprintf("%s/latents_%d", c.Name, i) }, c.Name+"/image", tol)
}

// TestGPUSD3Cases runs the StableDiffusion3Pipeline cases from the
// diffusers folder on the GPU: in float32 (TF32 off) with the CPU's
// tolerances, and in bf16 with the image ≥ 30 dB from diffusers' float32
// one.
func TestGPUSD3Cases(t *testing.T) {
	cases := sd3Cases(t)
	fx := testref.Tensors(t, filepath.Join("sd3", "cases.safetensors"))
	for _, prec := range []struct {
		dt       tensor.DType
		tol, min float64
	}{{tensor.F32, 1e-4, 45}, {tensor.BF16, 1, 30}} {
		t.Run(prec.dt.String(), func(t *testing.T) {
			dev := openGPUIn(t, prec.dt)
			models := map[string]*Model{}
			for _, c := range cases {
				key := fmt.Sprint(c.Model, c.NoT5)
				if models[key] == nil {
					m, err := Load(context.Background(), sd3Folder(t, c.Model, c.NoT5), dev)
					if err != nil {
						t.Fatal(err)
					}
					defer m.Close()
					models[key] = m
				}
				t.Run(c.Name, func(t *testing.T) {
					p := runSD3Case(t, models[key], c, fx, prec.tol)
					t.Logf("%v image PSNR %.1f dB", prec.dt, p)
					if p < prec.min {
						t.Errorf("%v image PSNR %.1f dB < %.0f", prec.dt, p, prec.min)
					}
				})
			}
		})
	}
}

// TestSD3Img2ImgInpaint runs the tiny SD3.5-style model through the
// generic img2img and inpaint paths (checkImg2ImgPaths; no peer fixture:
// the pipeline is the one the other families' peer tests prove): the final
// latent moves away from the encoded init image as the denoise grows, and
// an inpaint with a mask leaves every unmasked pixel as it was while
// changing the masked ones.
func TestSD3Img2ImgInpaint(t *testing.T) {
	if !testref.Exists("sd3", "cases.json") {
		t.Skip("no sd3 fixtures")
	}
	m, err := Load(context.Background(), sd3Folder(t, "a", false), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := DefaultRequest()
	base.Model, base.Prompt, base.Seed, base.Steps, base.Width, base.Height = "sd3-tiny", "a red fox", 3, 4, 64, 64
	base.CFG, base.Sampler, base.Scheduler = 3, "euler", "simple"
	inside := func(x, y int) bool { return x >= 16 && x < 48 && y >= 16 && y < 48 }
	mask := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			if inside(x, y) {
				mask.Pix[y*64+x] = 255
			}
		}
	}
	init, out := checkImg2ImgPaths(t, m, base, mask, 0.9, 5, func(x, y int) bool { return !inside(x, y) })
	changed := 0
	for y := range 64 {
		for x := range 64 {
			if inside(x, y) && out.NRGBAAt(x, y) != init.NRGBAAt(x, y) {
				changed++
			}
		}
	}
	if changed < 32*32/2 {
		t.Errorf("only %d of %d masked pixels changed", changed, 32*32)
	}
}
