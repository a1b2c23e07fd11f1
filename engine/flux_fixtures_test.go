package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/families/flux1"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// fluxCase is one entry of testdata/reference/flux-pipe/cases.json (made by
// tools/reference/gen_flux_pipeline_fixtures.py with diffusers'
// FluxPipeline).
type fluxCase struct {
	Name      string  `json:"name"`
	Variant   string  `json:"variant"`
	Prompt    string  `json:"prompt"`
	Negative  *string `json:"negative_prompt"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	Steps     int     `json:"steps"`
	Guidance  float64 `json:"guidance"`
	TrueCFG   float64 `json:"true_cfg_scale"`
	CFGUsed   bool    `json:"true_cfg_used"`
	MaxSeqLen int     `json:"max_sequence_length"`
	Seed      uint64  `json:"seed"`
	Batch     int     `json:"batch"`
	T5IDs     []int   `json:"t5_ids"`
	CLIPIDs   []int   `json:"clip_ids"`
	Sigmas    []float64
}

func fluxCases(t *testing.T) []fluxCase {
	t.Helper()
	if !testref.Exists("flux-pipe", "cases.json") {
		t.Skip("no flux-pipe fixtures")
	}
	b, err := os.ReadFile(testref.Path("flux-pipe", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []fluxCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) == 0 {
		t.Fatal("no cases in flux-pipe/cases.json")
	}
	return doc.Cases
}

// linkTree links every file under src into dst (same relative paths).
func linkTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		return linkFile(p, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func linkFile(src, dst string) error {
	abs, err := filepath.Abs(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return nil // the variant's own file wins
	}
	return os.Symlink(abs, dst)
}

// fluxFolder assembles the tiny FluxPipeline folder of a variant: the
// fixture holds dev/ whole but for the T5 weights (the tiny T5 of t5-tiny)
// and its tokenizer (the bundled one), and schnell/ only where it differs.
func fluxFolder(t *testing.T, variant string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "FLUX.1-"+variant)
	linkTree(t, testref.Path("flux-pipe", variant), dir)
	if variant != "dev" {
		linkTree(t, testref.Path("flux-pipe", "dev"), dir)
	}
	if err := linkFile(testref.Path("t5-tiny", "model.safetensors"), filepath.Join(dir, "text_encoder_2", "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fluxLayouts loads a variant both ways users have it: the diffusers
// folder, and BFL's transformer file with ae.safetensors, the CLIP-L file
// and the T5 file given separately (the tiny CLIP vocabulary set by hand:
// a single file carries none).
func fluxLayouts(t *testing.T, variant string) map[string]*Model {
	t.Helper()
	return fluxLayoutsWith(t, variant, nil)
}

// fluxLayoutsWith is fluxLayouts with loras merged into both.
func fluxLayoutsWith(t *testing.T, variant string, loras []LoRA) map[string]*Model {
	t.Helper()
	ctx := context.Background()
	folder := fluxFolder(t, variant)
	fm, err := LoadFiles(ctx, ModelFiles{Model: folder, LoRAs: loras}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fm.Close() })
	bm := fluxBFL(t, folder, testref.Path("flux-pipe", "bfl", "flux1-"+variant+".safetensors"), loras)
	return map[string]*Model{"diffusers": fm, "bfl": bm}
}

// fluxBFL loads a BFL-named tiny transformer file with the tiny ae, the
// CLIP-L of folder (a fluxFolder) and the tiny T5 given separately.
func fluxBFL(t *testing.T, folder, transformer string, loras []LoRA) *Model {
	t.Helper()
	ctx := context.Background()
	src, err := weights.OpenFiles(transformer, testref.Path("flux-pipe", "bfl", "ae.safetensors"),
		[]string{filepath.Join(folder, "text_encoder", "model.safetensors"), testref.Path("t5-tiny", "model.safetensors")})
	if err != nil {
		t.Fatal(err)
	}
	// The tiny transformer's RoPE axes (4, 6, 6): a single file cannot say
	// them, and the released models' head dim 128 is the only one known.
	// So is the tiny CLIP's head count (ConfigFromWeights assumes 64-wide
	// heads); both come from the folder's configs.
	src.JSON = map[string][]byte{}
	for _, f := range []string{"transformer/config.json", "text_encoder/config.json"} {
		b, err := os.ReadFile(filepath.Join(folder, f))
		if err != nil {
			t.Fatal(err)
		}
		src.JSON[f] = b
	}
	bm, err := loadFrom(ctx, src, cpu.New(), loras, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bm.Close() })
	tok, err := tokenizer.LoadCLIP(filepath.Join(folder, "tokenizer", "vocab.json"), filepath.Join(folder, "tokenizer", "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	bm.c.Text.(*flux1.Conditioner).L.Tok = tok
	bm.c.Text.(*flux1.Conditioner).L.Pad = tok.EOS()
	return bm
}

// TestFluxDiffusersCases runs the tiny FLUX.1-dev and -schnell pipelines,
// from the diffusers folder and from BFL's split files, through the generic
// pipeline under diffusers' convention and compares with diffusers'
// FluxPipeline: the T5 and CLIP token ids (exact), the T5 states and the
// pooled CLIP-L vector (1e-4), the sigmas (1e-6), the latent after every
// step and the final latent (1e-4), the image (≥ 45 dB). Cases: dev at
// 64×48 with 512 T5 tokens, dev with max_sequence_length 64 truncating a
// long prompt and two images, dev with true CFG 3 and a negative prompt,
// schnell with 256 tokens and no guidance.
func TestFluxDiffusersCases(t *testing.T) {
	cases := fluxCases(t)
	fx := testref.Tensors(t, filepath.Join("flux-pipe", "cases.safetensors"))
	models := map[string]map[string]*Model{}
	for _, c := range cases {
		if models[c.Variant] == nil {
			models[c.Variant] = fluxLayouts(t, c.Variant)
		}
		for layout, m := range models[c.Variant] {
			t.Run(c.Name+"/"+layout, func(t *testing.T) {
				psnr := runFluxCase(t, m, c, fx, 1e-4)
				if psnr < 45 {
					t.Errorf("image PSNR %.1f dB < 45", psnr)
				} else {
					t.Logf("image PSNR %.1f dB", psnr)
				}
			})
		}
	}
}

// fluxRequest is the request of a FluxPipeline case under diffusers'
// convention.
func fluxRequest(c fluxCase) Request {
	req := DefaultRequest()
	req.Model, req.Prompt, req.Seed, req.Steps = "flux-tiny", c.Prompt, c.Seed, c.Steps
	req.Width, req.Height, req.Batch, req.Convention = c.Width, c.Height, c.Batch, "diffusers"
	req.Sampler, req.Scheduler, req.CFG = "euler", "simple", 1
	req.MaxSequenceLength = c.MaxSeqLen
	if c.Variant == "dev" {
		req.Guidance = c.Guidance
	}
	if c.CFGUsed {
		req.CFG, req.Negative = c.TrueCFG, *c.Negative
	}
	return req
}

// runFluxCase runs one FluxPipeline case on m under diffusers' convention,
// checking the token ids, the T5 states, the pooled vector, the sigmas, the
// latent after every step and the final latent (relative error ≤ tol), and
// returns the image's PSNR against diffusers'.
func runFluxCase(t *testing.T, m *Model, c fluxCase, fx map[string][]float32, tol float64) float64 {
	t.Helper()
	ctx := context.Background()
	req := fluxRequest(c)
	text := m.c.Text.(*flux1.Conditioner)
	if got, _ := text.T5.Tok.Encode(c.Prompt, c.MaxSeqLen, true); fmt.Sprint(got) != fmt.Sprint(c.T5IDs) {
		t.Errorf("T5 ids %v, want %v", got, c.T5IDs)
	}
	if got := text.L.Tok.Pad(bodyOf(text.L.Tok.Encode(c.Prompt)), tokenizer.ContextLength, text.L.Pad); fmt.Sprint(got) != fmt.Sprint(c.CLIPIDs) {
		t.Errorf("CLIP ids %v, want %v", got, c.CLIPIDs)
	}
	opt := family.PromptOptions{Convention: ConventionDiffusers, MaxSequenceLength: c.MaxSeqLen}
	prompts := map[string]string{"": c.Prompt}
	if c.CFGUsed {
		prompts["negative_"] = *c.Negative
	}
	for pre, p := range prompts {
		cond, err := m.encodePrompt(ctx, p, opt)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := cond.Values(m.dev)
		want := fx[c.Name+"/"+pre+"prompt_embeds"]
		check(t, pre+"prompt_embeds", got, want[:len(want)/c.Batch], tol)
		pooled, _ := m.dev.Download(cond.c.Pooled)
		want = fx[c.Name+"/"+pre+"pooled_prompt_embeds"]
		check(t, pre+"pooled_prompt_embeds", pooled, want[:len(want)/c.Batch], tol)
	}
	ms, _, err := m.parameterization(SampleParams{Width: c.Width, Height: c.Height, Convention: ConventionDiffusers, Scheduler: "simple"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sampling.SamplerSigmas("euler", "simple", ms.Schedule(ConventionDiffusers), c.Steps)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, len(c.Sigmas))
	for i, v := range c.Sigmas {
		want[i] = float32(v)
	}
	check(t, "sigmas", sig, want, 1e-6)
	var steps [][]float32
	res, err := m.Generate(ctx, req, func(ev Event) {
		if ev.Phase == PhaseSample {
			steps = append(steps, ev.Latent)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != c.Steps {
		t.Fatalf("%d steps, want %d", len(steps), c.Steps)
	}
	for i, s := range steps {
		check(t, fmt.Sprintf("latents_step%d", i), s, fx[fmt.Sprintf("%s/latents_step%d", c.Name, i)], tol)
	}
	check(t, "final_latents", res.Latents, fx[c.Name+"/final_latents"], tol)
	pix, err := m.Decode(ctx, res.Latents, res.LatentShape)
	if err != nil {
		t.Fatal(err)
	}
	return testref.PSNR(batchToHWC(pix, c.Batch, c.Height, c.Width), fx[c.Name+"/image"])
}

// batchToHWC lays out a batch of CHW images [B, 3, h, w] as [B, h, w, 3].
func batchToHWC(pix []float32, batch, h, w int) []float32 {
	per := 3 * h * w
	var out []float32
	for i := range batch {
		out = append(out, chwToHWC(pix[i*per:(i+1)*per], h, w)...)
	}
	return out
}

// bodyOf drops a CLIP sequence's start and end tokens.
func bodyOf(ids []int) []int { return ids[1 : len(ids)-1] }

// TestGPUFluxCases runs the FluxPipeline cases from the diffusers folder on
// the GPU: in float32 (TF32 off) with the CPU's tolerances, and in bf16
// (Flux's precision) with the image ≥ 30 dB from diffusers' float32 one.
func TestGPUFluxCases(t *testing.T) {
	cases := fluxCases(t)
	fx := testref.Tensors(t, filepath.Join("flux-pipe", "cases.safetensors"))
	for _, prec := range []struct {
		dt       tensor.DType
		tol, min float64
	}{{tensor.F32, 1e-4, 45}, {tensor.BF16, 1, 30}} {
		t.Run(prec.dt.String(), func(t *testing.T) {
			dev := openGPUIn(t, prec.dt)
			models := map[string]*Model{}
			for _, c := range cases {
				if models[c.Variant] == nil {
					m, err := Load(context.Background(), fluxFolder(t, c.Variant), dev)
					if err != nil {
						t.Fatal(err)
					}
					defer m.Close()
					models[c.Variant] = m
				}
				t.Run(c.Name, func(t *testing.T) {
					p := runFluxCase(t, models[c.Variant], c, fx, prec.tol)
					t.Logf("%v image PSNR %.1f dB", prec.dt, p)
					if p < prec.min {
						t.Errorf("%v image PSNR %.1f dB < %.0f", prec.dt, p, prec.min)
					}
				})
			}
		})
	}
}

// fluxComfyCase is one entry of testdata/reference/flux-comfy/cases.json
// (tools/reference/gen_comfy_flux_fixtures.py: ComfyUI's own tokenizers,
// encoders, prompt weighting, model sampling, KSampler and samplers, with
// the tiny diffusers transformer and VAE).
type fluxComfyCase struct {
	Name    string `json:"name"`
	Request struct {
		comfyCaseRequest
		Variant  string   `json:"variant"`
		Guidance *float64 `json:"guidance"`
		Shift    *float64 `json:"shift_override"`
	} `json:"request"`
	Sigmas []float64 `json:"sigmas"`
}

// comfyCaseRequest is the request of a ComfyUI fixture case (cases.json's
// "request"), as darkroom is asked for it.
type comfyCaseRequest struct {
	Prompt    string  `json:"prompt"`
	Negative  string  `json:"negative"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	Steps     int     `json:"steps"`
	Sampler   string  `json:"sampler"`
	Scheduler string  `json:"scheduler"`
	CFG       float64 `json:"cfg"`
	Seed      uint64  `json:"seed"`
	Batch     int     `json:"batch"`
}

// request is r as a darkroom request for model (ComfyUI's convention, the
// default).
func (r comfyCaseRequest) request(model string) Request {
	req := DefaultRequest()
	req.Model, req.Prompt, req.Negative, req.Seed, req.Steps = model, r.Prompt, r.Negative, r.Seed, r.Steps
	req.Width, req.Height, req.Batch, req.CFG = r.Width, r.Height, r.Batch, r.CFG
	req.Sampler, req.Scheduler = r.Sampler, r.Scheduler
	return req
}

// TestFluxComfyCases runs the tiny Flux models under darkroom's default
// (ComfyUI) convention and compares with ComfyUI's own code: the T5 states
// of ComfyUI's tokenization (weights, padded to at least 256 tokens,
// untruncated beyond) and CLIP-L's pooled output (1e-4), the sigmas of
// ModelSamplingFlux at the image's size, of a --shift override and of
// schnell's FLOW sampling (1e-6), every step's latent and the final one
// (1e-4), the image (≥ 45 dB). Cases: euler/simple, the same without the
// ModelSamplingFlux node (shift 1.15), a weighted prompt, a prompt beyond
// 77 CLIP and 256 T5 tokens with CFG 2.5 against a short negative (T5
// lengths differ: two batches) with dpmpp_2m and two images, schnell, and
// heun/beta on an odd latent (72×56 px).
func TestFluxComfyCases(t *testing.T) {
	if !testref.Exists("flux-comfy", "cases.json") || !testref.Exists("flux-pipe", "cases.json") {
		t.Skip("no flux-comfy fixtures")
	}
	b, err := os.ReadFile(testref.Path("flux-comfy", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []fluxComfyCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	fx := testref.Tensors(t, filepath.Join("flux-comfy", "cases.safetensors"))
	ctx := context.Background()
	models := map[string]*Model{}
	for _, c := range doc.Cases {
		r := c.Request
		if models[r.Variant] == nil {
			m, err := Load(ctx, fluxFolder(t, r.Variant), cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			models[r.Variant] = m
		}
		m := models[r.Variant]
		t.Run(c.Name, func(t *testing.T) {
			req := r.request("flux-tiny")
			if r.Guidance != nil && r.Variant == "dev" {
				req.Guidance = *r.Guidance
			}
			if r.Shift != nil {
				req.Shift = *r.Shift
			}
			runComfyCase(t, m, c.Name, req, c.Sigmas, fx)
		})
	}
}

// checkConds encodes req's prompt and, with CFG, its negative prompt
// (fixture keys pre+cond / pre+pooled, and pre+"negative_"+cond, …) and
// compares the text states and the pooled vector (relative error ≤ tol).
func checkConds(t *testing.T, m *Model, opt family.PromptOptions, req Request, fx map[string][]float32, pre, cond, pooled string, tol float64) {
	t.Helper()
	prompts := map[string]string{"": req.Prompt}
	if req.CFG != 1 {
		prompts["negative_"] = req.Negative
	}
	for neg, p := range prompts {
		opt.Negative = neg != ""
		c, err := m.encodePrompt(context.Background(), p, opt)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := c.Values(m.dev)
		check(t, neg+cond, got, fx[pre+neg+cond], tol)
		pv, _ := m.dev.Download(c.c.Pooled)
		check(t, neg+pooled, pv, fx[pre+neg+pooled], tol)
	}
}

// checkSamplerSigmas compares the sigmas of req's sampler and scheduler on m's
// model sampling for p (under p.Convention) with a fixture's (1e-6).
func checkSamplerSigmas(t *testing.T, m *Model, p SampleParams, req Request, sigmas []float64) {
	t.Helper()
	ms, _, err := m.parameterization(p)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sampling.SamplerSigmas(req.Sampler, req.Scheduler, ms.Schedule(p.Convention), req.Steps)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, len(sigmas))
	for i, v := range sigmas {
		want[i] = float32(v)
	}
	check(t, "sigmas", sig, want, 1e-6)
}

// runComfyCase runs one request on m under ComfyUI's convention and
// compares with a ComfyUI fixture ("<name>/<what>" in fx): the text states
// and pooled vector of the prompt and, with CFG, of the negative prompt
// (1e-4), the sigmas (1e-6), the latent after every step and the final one
// (1e-4) and the image (≥ 45 dB).
func runComfyCase(t *testing.T, m *Model, name string, req Request, sigmas []float64, fx map[string][]float32) {
	t.Helper()
	ctx := context.Background()
	checkConds(t, m, family.PromptOptions{Convention: ConventionComfy}, req, fx, name+"/", "cond", "pooled", 1e-4)
	checkSamplerSigmas(t, m, SampleParams{Width: req.Width, Height: req.Height, Shift: req.Shift}, req, sigmas)
	var steps []float32
	res, err := m.Generate(ctx, req, func(ev Event) {
		if ev.Phase == PhaseSample {
			steps = append(steps, ev.Latent...)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	check(t, "latents", steps, fx[name+"/latents"], 1e-4)
	check(t, "final_latent", res.Latents, fx[name+"/final_latent"], 1e-4)
	pix, err := m.Decode(ctx, res.Latents, res.LatentShape)
	if err != nil {
		t.Fatal(err)
	}
	if p := testref.PSNR(batchToHWC(pix, req.Batch, req.Height, req.Width), fx[name+"/image"]); p < 45 {
		t.Errorf("image PSNR %.1f dB < 45", p)
	} else {
		t.Logf("image PSNR %.1f dB", p)
	}
}

// TestFluxImg2ImgRuns runs img2img and inpainting on the tiny Flux model
// (checkImg2ImgPaths): the final latent moves away from the encoded init
// image as the denoise grows, and inpainting the right half keeps the left
// pixels (the peer test is TestFluxImg2ImgDiffusers).
func TestFluxImg2ImgRuns(t *testing.T) {
	if !testref.Exists("flux-pipe", "cases.json") {
		t.Skip("no flux-pipe fixtures")
	}
	m, err := Load(context.Background(), fluxFolder(t, "dev"), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := DefaultRequest()
	base.Model, base.Prompt, base.Seed, base.Steps, base.Width, base.Height = "flux-tiny", "a red fox", 3, 4, 64, 48
	base.CFG, base.Sampler, base.Scheduler = 1, "euler", "simple"
	mask := image.NewGray(image.Rect(0, 0, 64, 48))
	for y := 0; y < 48; y++ {
		for x := 32; x < 64; x++ {
			mask.Pix[y*64+x] = 255
		}
	}
	checkImg2ImgPaths(t, m, base, mask, 0.8, base.Seed, func(x, _ int) bool { return x < 24 })
}

// checkImg2ImgPaths runs a model's img2img and inpaint paths from an image
// it made with base: the final latent's distance from the encoded init
// image grows with the denoise (0.2, 0.5, 0.9, seed 11), and an inpaint
// over mask at the given denoise and seed leaves every pixel where keep
// holds as it was. It returns the init image and the inpainted one.
func checkImg2ImgPaths(t *testing.T, m *Model, base Request, mask image.Image, denoise float64, seed uint64, keep func(x, y int) bool) (init, out *image.NRGBA) {
	t.Helper()
	ctx := context.Background()
	first, err := m.Generate(ctx, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	initPath := filepath.Join(dir, "init.png")
	if err := WritePNG(initPath, first.Images[0], nil); err != nil {
		t.Fatal(err)
	}
	z, err := m.EncodeImage(ctx, first.Images[0])
	if err != nil {
		t.Fatal(err)
	}
	var prev float64
	for _, d := range []float64{0.2, 0.5, 0.9} {
		req := base
		req.InitImage, req.Denoise, req.Seed = initPath, d, 11
		res, err := m.Generate(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		dist := testref.RelErr(res.Latents, z)
		t.Logf("img2img denoise %g: final latent %.3g from the encoded init image", d, dist)
		if math.IsNaN(dist) || dist <= prev {
			t.Errorf("denoise %g: distance %.3g from the init latent, not above the last (%.3g)", d, dist, prev)
		}
		prev = dist
	}
	mp := filepath.Join(dir, "mask.png")
	if err := WritePNG(mp, mask, nil); err != nil {
		t.Fatal(err)
	}
	req := base
	req.InitImage, req.Mask, req.Denoise, req.Seed = initPath, mp, denoise, seed
	res, err := m.Generate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	init, out = first.Images[0], res.Images[0]
	b := init.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if keep(x, y) && out.NRGBAAt(x, y) != init.NRGBAAt(x, y) {
				t.Fatalf("inpaint changed the unmasked pixel (%d, %d): %v, was %v", x, y, out.NRGBAAt(x, y), init.NRGBAAt(x, y))
			}
		}
	}
	return init, out
}
