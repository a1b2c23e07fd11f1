package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// a1111Body is the body of A1111's /sdapi/v1/txt2img and img2img
// (StableDiffusionProcessingTxt2Img / Img2Img): the keys darkroom maps.
// Pointers tell a key the client sent from one it left out. Every other
// key of A1111's bodies is either harmless to ignore or refused when set
// (a1111Refused lists them with the reason); keys A1111 does not know are
// ignored, as A1111 ignores them.
type a1111Body struct {
	Prompt            string   `json:"prompt"`
	NegativePrompt    string   `json:"negative_prompt"`
	Seed              *int64   `json:"seed"`
	Subseed           *int64   `json:"subseed"`
	SubseedStrength   *float64 `json:"subseed_strength"`
	SeedResizeFromH   *int     `json:"seed_resize_from_h"`
	SeedResizeFromW   *int     `json:"seed_resize_from_w"`
	SamplerName       string   `json:"sampler_name"`
	SamplerIndex      string   `json:"sampler_index"`
	Scheduler         string   `json:"scheduler"`
	BatchSize         *int     `json:"batch_size"`
	NIter             *int     `json:"n_iter"`
	Steps             *int     `json:"steps"`
	CFGScale          *float64 `json:"cfg_scale"`
	DistilledCFG      *float64 `json:"distilled_cfg_scale"` // Forge's Flux guidance
	Width             *int     `json:"width"`
	Height            *int     `json:"height"`
	DenoisingStrength *float64 `json:"denoising_strength"`
	Eta               *float64 `json:"eta"`
	EnableHR          bool     `json:"enable_hr"`
	HRScale           *float64 `json:"hr_scale"`
	HRResizeX         *int     `json:"hr_resize_x"`
	HRResizeY         *int     `json:"hr_resize_y"`
	HRUpscaler        string   `json:"hr_upscaler"`
	HRSecondPassSteps *int     `json:"hr_second_pass_steps"`
	HRPrompt          string   `json:"hr_prompt"`
	HRNegativePrompt  string   `json:"hr_negative_prompt"`
	RefinerCheckpoint string   `json:"refiner_checkpoint"`
	RefinerSwitchAt   *float64 `json:"refiner_switch_at"`
	OverrideSettings  struct {
		Model    string `json:"sd_model_checkpoint"`
		ClipSkip *int   `json:"CLIP_stop_at_last_layers"`
		VAE      string `json:"sd_vae"`
	} `json:"override_settings"`
	// img2img
	InitImages        []string  `json:"init_images"`
	ResizeMode        *int      `json:"resize_mode"`
	Mask              string    `json:"mask"`
	MaskBlur          *int      `json:"mask_blur"`
	MaskBlurX         *int      `json:"mask_blur_x"`
	MaskBlurY         *int      `json:"mask_blur_y"`
	InpaintingFill    *int      `json:"inpainting_fill"`
	InpaintFullRes    a1111Flag `json:"inpaint_full_res"`
	MaskInvert        a1111Flag `json:"inpainting_mask_invert"`
	IncludeInitImages a1111Flag `json:"include_init_images"`
	// SendImages false leaves the images out of the answer.
	SendImages *bool `json:"send_images"`
}

// a1111Flag is an A1111 switch that clients send as a JSON boolean or as
// a number (Krita plugins send inpaint_full_res and
// inpainting_mask_invert as 0/1, webuiapi as booleans); null is false.
type a1111Flag struct {
	set, on bool
}

// UnmarshalJSON reads true/false, a number (non-zero is on) or null.
func (f *a1111Flag) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
	case bool:
		f.set, f.on = true, v
	case float64:
		f.set, f.on = true, v != 0
	default:
		return fmt.Errorf("want true/false or 0/1, got %s", b)
	}
	return nil
}

// MaxNIter bounds n_iter, the number of batches of one A1111 request (the
// largest batch count A1111's UI offers).
const MaxNIter = 100

// a1111Refusal is an A1111 body key darkroom has no counterpart for: a
// value other than its defaults is refused with instead, which says what
// darkroom does and what to send.
type a1111Refusal struct {
	key, instead string
	// ok accepts a value beyond the empty ones (null, false, 0, "", [],
	// {}), when set.
	ok func(v any) bool
	// onlyNull: of the empty values only null passes (0 means something).
	onlyNull bool
}

// a1111Refused lists the keys of A1111's txt2img and img2img bodies that
// darkroom refuses when set. The other keys are mapped (a1111Body) or
// harmless to ignore:
//
//   - do_not_save_samples, do_not_save_grid, save_images: darkroom serve
//     writes no files; the images are in the answer (and there is no grid).
//   - override_settings_restore_afterwards: override_settings apply to the
//     one request; nothing outlives it.
//   - firstphase_width, firstphase_height: A1111 itself ignores them since
//     hr_resize_x/y replaced them.
//   - s_tmin, s_tmax: they bound s_churn, which must be 0.
//   - inpaint_full_res_padding: used only with inpaint_full_res, refused.
//   - image_cfg_scale: used only by instruct-pix2pix models, which
//     darkroom does not load.
//   - force_task_id: A1111's id for its progress route; darkroom's
//     /sdapi/v1/progress follows the caller's jobs.
//   - comments: shown by A1111's UI, not part of the image.
//   - override_settings keys other than sd_model_checkpoint, sd_vae and
//     CLIP_stop_at_last_layers, as POST /sdapi/v1/options ignores them
//     (img2img_color_correction included: darkroom applies no colour
//     correction; docs/serve.md lists it under "Not yet").
//   - mask_round: darkroom keeps the latent mask soft.
//   - the inpainting keys without a mask.
var a1111Refused = []a1111Refusal{
	{key: "restore_faces", instead: "darkroom has no face restoration; send false"},
	{key: "tiling", instead: "darkroom does not make tileable images; send false"},
	{key: "styles", instead: "darkroom has no prompt styles; write the style into the prompt and send []"},
	{key: "script_name", instead: "darkroom runs no A1111 scripts; send null", ok: func(v any) bool { s, _ := v.(string); return strings.EqualFold(s, "none") }},
	{key: "script_args", instead: "darkroom runs no A1111 scripts; send []"},
	{key: "alwayson_scripts", instead: "darkroom runs no A1111 extensions (ControlNet, ADetailer, Soft Inpainting, ...); send {}", ok: noScriptArgs},
	{key: "s_churn", instead: "darkroom's samplers add no churn; send 0"},
	{key: "s_noise", instead: "darkroom's samplers draw noise at scale 1; send 1", ok: isNumber(1)}, // 0: A1111's default too

	{key: "s_min_uncond", instead: "darkroom always runs the negative prompt; send 0"},
	{key: "initial_noise_multiplier", instead: "darkroom does not scale img2img's initial noise; send 1", ok: isNumber(1), onlyNull: true},
	{key: "disable_extra_networks", instead: "darkroom always applies <lora:...> tags; send false"},
	{key: "firstpass_image", instead: "darkroom's hires fix makes its own first pass; send null"},
	{key: "hr_checkpoint_name", instead: "darkroom's hires pass uses the request's model; send \"Use same checkpoint\"", ok: isString("Use same checkpoint")},
	{key: "hr_sampler_name", instead: "darkroom's hires pass uses the request's sampler; send \"Use same sampler\"", ok: isString("Use same sampler")},
	{key: "hr_scheduler", instead: "darkroom's hires pass uses the request's scheduler; send \"Use same scheduler\"", ok: isString("Use same scheduler")},
	{key: "latent_mask", instead: "darkroom blends the latent with the mask itself; send null"},
	{key: "infotext", instead: "darkroom does not read infotexts; send the parameters as keys"},
}

// isNumber accepts the number n.
func isNumber(n float64) func(any) bool {
	return func(v any) bool { f, ok := v.(float64); return ok && f == n }
}

// isString accepts the string s (any case).
func isString(s string) func(any) bool {
	return func(v any) bool { t, ok := v.(string); return ok && strings.EqualFold(t, s) }
}

// noScriptArgs accepts alwayson_scripts whose every script has no args
// (clients list their extensions switched off so).
func noScriptArgs(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	for _, s := range m {
		args, _ := s.(map[string]any)
		if args == nil || !isEmpty(args["args"]) {
			return false
		}
	}
	return true
}

// isEmpty is a JSON value clients send for "not set": null, false, 0,
// "", [] or {}.
func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case float64:
		return v == 0
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// a1111Refuse answers the first key of an A1111 body that asks for
// something darkroom does not do, with a 400 naming it.
func a1111Refuse(keys map[string]json.RawMessage) error {
	for _, r := range a1111Refused {
		raw, ok := keys[r.key]
		if !ok {
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("%s: %v", r.key, err)}
		}
		if (isEmpty(v) && (!r.onlyNull || v == nil)) || (r.ok != nil && r.ok(v)) {
			continue
		}
		return &httpError{status: http.StatusBadRequest, field: r.key, msg: fmt.Sprintf("%s %s: %s", r.key, raw, r.instead)}
	}
	return nil
}

// a1111Eta checks eta against the sampler: darkroom's ancestral and SDE
// samplers run at eta 1 (A1111's default eta_ancestral), the others have
// no eta but DDIM, whose A1111 eta is 0.
func a1111Eta(eta *float64, sampler string) error {
	if eta == nil {
		return nil
	}
	want, has := 0.0, false
	switch {
	case strings.Contains(sampler, "ancestral") || strings.Contains(sampler, "sde"):
		want, has = 1, true
	case sampler == "ddim":
		want, has = 0, true
	}
	if !has || *eta == want {
		return nil
	}
	return &httpError{status: http.StatusBadRequest, field: "eta", msg: fmt.Sprintf("eta %g: darkroom's %s runs at eta %g; send %g or null", *eta, engine.A1111SamplerName(sampler), want, want)}
}

// a1111AutomaticScheduler is the schedule A1111 (1.9 and later, and
// Forge) gives a sampler whose scheduler is "Automatic" (the "scheduler"
// option of its entry in sd_samplers_kdiffusion); samplers not listed run
// the model's own schedule there, as they do here.
var a1111AutomaticScheduler = map[string]string{
	"dpmpp_2m": "karras", "dpmpp_sde": "karras", "dpmpp_2s_ancestral": "karras",
	"dpm_2": "karras", "dpm_2_ancestral": "karras",
	"dpmpp_2m_sde": "exponential", "dpmpp_2m_sde_heun": "exponential", "dpmpp_3m_sde": "exponential",
}

// a1111Task maps an A1111 body onto a task for client c: the first of
// its n_iter batches (a1111Batches makes the others).
func (s *Server) a1111Task(c caller, b a1111Body, keys map[string]json.RawMessage, img2img bool) (Task, error) {
	if err := a1111Refuse(keys); err != nil {
		return Task{}, err
	}
	req := engine.DefaultRequest()
	var given []string
	set := func(name string, ok bool) {
		if ok {
			given = append(given, name)
		}
	}
	req.Prompt, req.Negative = b.Prompt, b.NegativePrompt
	req.Model = s.clientModel(c.name)
	if m := b.OverrideSettings.Model; m != "" {
		req.Model = a1111ModelName(m)
	}
	if v := b.OverrideSettings.VAE; v != "" && v != "Automatic" && v != "None" {
		req.VAE = v
	}
	if p := b.OverrideSettings.ClipSkip; p != nil && *p > 1 {
		req.ClipSkip = *p
	}
	if b.Seed != nil && *b.Seed >= 0 {
		req.Seed = uint64(*b.Seed)
	} else {
		req.Seed = uint64(rand.Uint32()) // -1: random, as A1111 draws it
	}
	if b.SubseedStrength != nil && *b.SubseedStrength > 0 {
		req.VariationStrength = *b.SubseedStrength
		if b.Subseed != nil && *b.Subseed >= 0 {
			req.VariationSeed = uint64(*b.Subseed)
		} else {
			req.VariationSeed = uint64(rand.Uint32())
		}
	}
	if b.SeedResizeFromW != nil && b.SeedResizeFromH != nil && *b.SeedResizeFromW > 0 && *b.SeedResizeFromH > 0 {
		req.SeedResizeFromW, req.SeedResizeFromH = *b.SeedResizeFromW, *b.SeedResizeFromH
	}
	sampler := b.SamplerName
	if sampler == "" {
		sampler = b.SamplerIndex
	}
	if sampler != "" {
		sm, sched, ok := engine.CanonicalSampler(sampler)
		if !ok {
			return Task{}, &httpError{status: http.StatusBadRequest, field: "sampler_name", msg: fmt.Sprintf("sampler_name %q: unknown sampler (GET /sdapi/v1/samplers lists them)", sampler)}
		}
		req.Sampler = sm
		set("sampler", true)
		if sched != "" {
			req.Scheduler = sched
			set("scheduler", true)
		}
	}
	if err := a1111Eta(b.Eta, req.Sampler); err != nil {
		return Task{}, err
	}
	if b.Scheduler != "" && !strings.EqualFold(b.Scheduler, "automatic") {
		req.Scheduler = b.Scheduler
		set("scheduler", true)
	} else if sched, ok := a1111AutomaticScheduler[req.Sampler]; ok && sampler != "" && !slices.Contains(given, "scheduler") {
		// A1111 1.9+ runs "Automatic" as the sampler's own schedule:
		// "DPM++ 2M" is DPM++ 2M Karras there.
		req.Scheduler = sched
		set("scheduler", true)
	}
	if b.BatchSize != nil {
		req.Batch = max(*b.BatchSize, 1)
	}
	if b.Steps != nil {
		req.Steps = *b.Steps
	}
	set("steps", b.Steps != nil)
	if b.CFGScale != nil {
		req.CFG = *b.CFGScale
	}
	set("cfg", b.CFGScale != nil)
	if b.DistilledCFG != nil {
		req.Guidance = *b.DistilledCFG
	}
	if b.Width != nil {
		req.Width = *b.Width
	}
	set("width", b.Width != nil)
	if b.Height != nil {
		req.Height = *b.Height
	}
	set("height", b.Height != nil)
	if b.RefinerCheckpoint != "" && b.RefinerCheckpoint != "None" {
		req.Refiner = a1111ModelName(b.RefinerCheckpoint)
		if b.RefinerSwitchAt != nil {
			req.RefinerSwitch = *b.RefinerSwitchAt
		}
	}
	t := Task{Request: req}
	if img2img {
		if err := a1111Img2Img(&t, b); err != nil {
			return Task{}, err
		}
	} else if b.EnableHR {
		if err := a1111Hires(&t.Request, b); err != nil {
			return Task{}, err
		}
	}
	t.Given = append(given, "prompt", "negative", "seed", "batch")
	return t, nil
}

// a1111Img2Img maps the img2img keys: the init image, strength, resize
// mode and the inpainting keys.
func a1111Img2Img(t *Task, b a1111Body) error {
	if len(b.InitImages) == 0 {
		return &httpError{status: http.StatusBadRequest, field: "init_images", msg: "init_images: img2img needs an image"}
	}
	var err error
	if t.InitImage, err = decodeImage("init_images[0]", b.InitImages[0]); err != nil {
		return err
	}
	if b.Mask != "" {
		if err := a1111Mask(t, b); err != nil {
			return err
		}
	}
	t.Request.Denoise = 0.75 // A1111's default strength
	if b.DenoisingStrength != nil {
		t.Request.Denoise = *b.DenoisingStrength
	}
	t.Request.DenoiseSteps = engine.DenoiseStepsA1111
	t.Request.Resize = engine.ResizeStretch // A1111's default, 0: just resize
	if b.ResizeMode != nil {
		switch *b.ResizeMode {
		case 0:
		case 1:
			t.Request.Resize = engine.ResizeCrop
		case 2:
			t.Request.Resize = engine.ResizeFill
		default:
			return &httpError{status: http.StatusBadRequest, field: "resize_mode", msg: fmt.Sprintf("resize_mode %d: darkroom resizes with 0 (just resize), 1 (crop and resize) or 2 (resize and fill)", *b.ResizeMode)}
		}
	}
	return nil
}

// a1111Mask maps an inpainting request: the mask (inverted for
// inpainting_mask_invert), its blur (A1111's default 4) and the
// inpainting modes darkroom has.
func a1111Mask(t *Task, b a1111Body) error {
	var err error
	if t.Mask, err = decodeImage("mask", b.Mask); err != nil {
		return err
	}
	if b.InpaintingFill != nil && *b.InpaintingFill != 1 {
		return &httpError{status: http.StatusBadRequest, field: "inpainting_fill", msg: fmt.Sprintf("inpainting_fill %d: darkroom starts the masked area from the init image (1, original); fill (0), latent noise (2) and latent nothing (3) are not implemented; send 1", *b.InpaintingFill)}
	}
	if b.InpaintFullRes.on {
		return &httpError{status: http.StatusBadRequest, field: "inpaint_full_res", msg: "inpaint_full_res: darkroom inpaints the whole picture, not an enlarged crop around the mask (only masked); send false (0, whole picture)"}
	}
	blur := 4
	if b.MaskBlurX != nil || b.MaskBlurY != nil {
		x, y := 4, 4
		if b.MaskBlurX != nil {
			x = *b.MaskBlurX
		}
		if b.MaskBlurY != nil {
			y = *b.MaskBlurY
		}
		if x != y && b.MaskBlur == nil {
			return &httpError{status: http.StatusBadRequest, field: "mask_blur_x", msg: fmt.Sprintf("mask_blur_x %d, mask_blur_y %d: darkroom blurs the mask alike in x and y; send one mask_blur", x, y)}
		}
		blur = x
	}
	if b.MaskBlur != nil {
		blur = *b.MaskBlur // A1111: mask_blur sets both
	}
	t.Request.MaskBlur = blur
	if b.MaskInvert.on {
		if t.Mask, err = invertMask(t.Mask); err != nil {
			return err
		}
	}
	return nil
}

// invertMask returns the mask image with its colours inverted (white
// keeps, black repaints, as A1111's "inpaint not masked"), as a PNG.
func invertMask(b []byte) ([]byte, error) {
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, &httpError{status: http.StatusBadRequest, field: "mask", msg: fmt.Sprintf("mask: %v", err)}
	}
	r := img.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
	for y := range r.Dy() {
		for x := range r.Dx() {
			c := color.NRGBAModel.Convert(img.At(r.Min.X+x, r.Min.Y+y)).(color.NRGBA)
			out.SetNRGBA(x, y, color.NRGBA{255 - c.R, 255 - c.G, 255 - c.B, c.A})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, out); err != nil {
		return nil, fmt.Errorf("encoding the inverted mask: %w", err)
	}
	return buf.Bytes(), nil
}

// a1111Hires maps the hires fix of a txt2img body: hr_scale, or
// hr_resize_x/y when the client gives the target size (one factor of the
// first pass's size, as darkroom's hires fix scales).
func a1111Hires(req *engine.Request, b a1111Body) error {
	req.Hires = 2
	if b.HRScale != nil {
		req.Hires = *b.HRScale
	}
	x, y := 0, 0
	if b.HRResizeX != nil {
		x = *b.HRResizeX
	}
	if b.HRResizeY != nil {
		y = *b.HRResizeY
	}
	if x > 0 || y > 0 {
		if req.Width <= 0 || req.Height <= 0 {
			return &httpError{status: http.StatusBadRequest, field: "hr_resize_x", msg: "hr_resize_x/hr_resize_y: give width and height too"}
		}
		f := float64(x) / float64(req.Width)
		if x <= 0 {
			f = float64(y) / float64(req.Height)
		}
		r := func(v int) int { return max(8, int(math.Round(float64(v)*f/8))*8) }
		if (x > 0 && r(req.Width) != x) || (y > 0 && r(req.Height) != y) {
			return &httpError{status: http.StatusBadRequest, field: "hr_resize_x", msg: fmt.Sprintf("hr_resize_x %d, hr_resize_y %d: darkroom's hires fix scales %dx%d by one factor to multiples of 8 (%dx%d at %.4g); send that size or hr_scale", x, y, req.Width, req.Height, r(req.Width), r(req.Height), f)}
		}
		req.Hires = f
	}
	req.HiresDenoise = 0.7 // A1111's default
	if b.DenoisingStrength != nil {
		req.HiresDenoise = *b.DenoisingStrength
	}
	if b.HRSecondPassSteps != nil {
		req.HiresSteps = *b.HRSecondPassSteps
	}
	if u := b.HRUpscaler; u != "" {
		f, _ := engine.FieldByName("hires_upscaler")
		if err := f.Set(req, a1111Upscaler(u)); err != nil {
			return badField(err)
		}
	}
	if b.HRPrompt != "" && b.HRPrompt != b.Prompt {
		return &httpError{status: http.StatusBadRequest, field: "hr_prompt", msg: "hr_prompt: darkroom's hires pass uses the request's prompt; send \"\" or the prompt"}
	}
	if b.HRNegativePrompt != "" && b.HRNegativePrompt != b.NegativePrompt {
		return &httpError{status: http.StatusBadRequest, field: "hr_negative_prompt", msg: "hr_negative_prompt: darkroom's hires pass uses the request's negative prompt; send \"\" or the negative prompt"}
	}
	return nil
}

// a1111Upscaler maps A1111's upscaler names onto darkroom's methods:
// "Latent" and its variants are latent methods, "Lanczos" the image;
// other names are upscaler models in the model folders.
func a1111Upscaler(name string) string {
	switch strings.ToLower(name) {
	case "latent", "latent (bilinear)":
		return engine.UpscaleLatentBilinear
	case "latent (nearest)", "latent (nearest-exact)":
		return engine.UpscaleLatentNearest
	case "latent (bicubic)", "latent (bicubic antialiased)", "latent (antialiased)":
		return engine.UpscaleLatentBicubic
	case "lanczos", "none", "":
		return engine.UpscaleLanczos
	}
	return name
}

// a1111ModelName strips A1111's title decorations from a model name:
// "v1-5-pruned-emaonly.safetensors [6ce0161689]" names
// v1-5-pruned-emaonly.
func a1111ModelName(title string) string {
	if i := strings.LastIndex(title, " ["); i > 0 && strings.HasSuffix(title, "]") {
		title = title[:i]
	}
	return strings.TrimSuffix(strings.TrimSpace(title), ".safetensors")
}

// clientModel is the model A1111 requests of client use (set with POST
// /sdapi/v1/options), "" for the server's default.
func (s *Server) clientModel(client string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.models[client]; ok {
		return m
	}
	return s.opts.DefaultModel
}

func (s *Server) a1111Txt2Img(w http.ResponseWriter, r *http.Request, c caller) {
	s.a1111Generate(w, r, c, false)
}

func (s *Server) a1111Img2Img(w http.ResponseWriter, r *http.Request, c caller) {
	s.a1111Generate(w, r, c, true)
}

// a1111Batches makes the n_iter jobs of an A1111 request: batch k of
// batch_size images is seeded seed + k·batch_size (A1111 advances its
// seeds, and its subseeds, per image; darkroom draws one noise tensor a
// batch from the batch's seed).
func a1111Batches(t Task, nIter *int) ([]Task, error) {
	n := 1
	if nIter != nil {
		n = *nIter
	}
	if n < 1 || n > MaxNIter {
		return nil, &httpError{status: http.StatusBadRequest, field: "n_iter", msg: fmt.Sprintf("n_iter %d: darkroom runs 1 to %d batches a request", n, MaxNIter)}
	}
	tasks := make([]Task, n)
	for k := range tasks {
		tk := t
		tk.Given = slices.Clone(t.Given)
		step := uint64(k) * uint64(t.Request.Batch)
		tk.Request.Seed += step
		if tk.Request.VariationStrength > 0 {
			tk.Request.VariationSeed += step
		}
		tasks[k] = tk
	}
	return tasks, nil
}

// a1111Generate runs an A1111 request to its end and answers as A1111
// does: {"images": [base64 PNG], "parameters": the body, "info": JSON
// text}. Its n_iter batches are jobs submitted one after another (each
// through the queue's limits and fairness); a queue that fills midway
// cancels those already queued and answers 429, a client that hangs up
// cancels them all, and an interrupted batch ends the request with the
// images made so far.
func (s *Server) a1111Generate(w http.ResponseWriter, r *http.Request, c caller, img2img bool) {
	var b a1111Body
	keys, err := s.decodeBody(w, r, &b, false)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	t, err := s.a1111Task(c, b, keys, img2img)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	tasks, err := a1111Batches(t, b.NIter)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	jobs := make([]*job, 0, len(tasks))
	cancelAll := func() {
		for _, j := range jobs {
			s.cancelJob(c, j)
		}
	}
	for _, tk := range tasks {
		j, err := s.submit(c.name, tk)
		if err != nil {
			cancelAll()
			s.failErr(w, r, err)
			return
		}
		jobs = append(jobs, j)
	}
	var outs []Outcome
	for _, j := range jobs {
		select {
		case <-j.done:
		case <-r.Context().Done():
			cancelAll()
			return
		case <-s.ctx.Done():
			s.fail(w, r, http.StatusServiceUnavailable, "the server is shutting down")
			return
		}
		s.mu.Lock()
		o := *j.out
		s.mu.Unlock()
		if o.Error != "" && !o.Cancelled {
			cancelAll()
			status := http.StatusInternalServerError
			if o.Field != "" {
				status = http.StatusBadRequest
			}
			writeJSON(w, status, errorBody{Error: o.Error, Detail: o.Error, Field: o.Field})
			return
		}
		outs = append(outs, o)
		if o.Cancelled {
			// A1111 answers an interrupted request with what it has and
			// runs no further batch.
			cancelAll()
			break
		}
	}
	images := []string{}
	if b.SendImages == nil || *b.SendImages {
		for _, o := range outs {
			for _, img := range o.Images {
				images = append(images, encodeB64(img))
			}
		}
	}
	info, _ := json.Marshal(a1111Info(outs, jobs[0].created))
	params := map[string]json.RawMessage{}
	for k, v := range keys {
		if b.IncludeInitImages.on || (k != "init_images" && k != "mask") {
			params[k] = v
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"images": images, "parameters": params, "info": string(info)})
}

// a1111Info is the "info" object of an A1111 answer (as a JSON text in
// the answer): the request as run, each image's seed (its batch's) and
// infotext, over the outcomes of the request's batches.
func a1111Info(outs []Outcome, created time.Time) map[string]any {
	req := outs[0].Request
	var seeds, subseeds []uint64
	var prompts, negs, texts []string
	cancelled := false
	for _, o := range outs {
		for range o.Images {
			seeds = append(seeds, o.Request.Seed)
			subseeds = append(subseeds, o.Request.VariationSeed)
			prompts = append(prompts, o.Request.Prompt)
			negs = append(negs, o.Request.Negative)
		}
		texts = append(texts, o.Infotexts...)
		cancelled = cancelled || o.Cancelled
	}
	if seeds == nil {
		seeds, subseeds, prompts, negs, texts = []uint64{}, []uint64{}, []string{}, []string{}, []string{}
	}
	clip := max(req.ClipSkip, 1)
	info := map[string]any{
		"prompt": req.Prompt, "all_prompts": prompts, "negative_prompt": req.Negative, "all_negative_prompts": negs,
		"seed": req.Seed, "all_seeds": seeds, "subseed": req.VariationSeed, "all_subseeds": subseeds,
		"subseed_strength": req.VariationStrength, "width": req.Width, "height": req.Height,
		"sampler_name": engine.A1111SamplerName(req.Sampler), "scheduler": engine.A1111SchedulerName(req.Scheduler),
		"cfg_scale": req.CFG, "steps": req.Steps, "batch_size": req.Batch, "restore_faces": false,
		"sd_model_name": outs[0].ModelName, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
		"denoising_strength": req.Denoise, "extra_generation_params": map[string]any{}, "index_of_first_image": 0,
		"infotexts": texts, "styles": []string{}, "job_timestamp": created.Format("20060102150405"),
		"clip_skip": clip, "is_using_inpainting_conditioning": false, "version": "darkroom",
	}
	if cancelled {
		info["interrupted"] = true
	}
	return info
}

func (s *Server) a1111Models(w http.ResponseWriter, r *http.Request, c caller) {
	type sdModel struct {
		Title     string  `json:"title"`
		ModelName string  `json:"model_name"`
		Hash      *string `json:"hash"`
		SHA256    *string `json:"sha256"`
		Filename  string  `json:"filename"`
		Config    *string `json:"config"`
	}
	out := []sdModel{}
	for _, m := range s.listModels() {
		if m.Broken != "" {
			continue
		}
		file := m.File
		if file == "" {
			file = m.Name
		}
		out = append(out, sdModel{Title: file, ModelName: m.Name, Filename: file})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) a1111Samplers(w http.ResponseWriter, r *http.Request, c caller) {
	type sampler struct {
		Name    string            `json:"name"`
		Aliases []string          `json:"aliases"`
		Options map[string]string `json:"options"`
	}
	f, _ := engine.FieldByName("sampler")
	out := []sampler{}
	for _, v := range f.Values {
		out = append(out, sampler{Name: engine.A1111SamplerName(v), Aliases: []string{v}, Options: map[string]string{}})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) a1111Schedulers(w http.ResponseWriter, r *http.Request, c caller) {
	type scheduler struct {
		Name           string   `json:"name"`
		Label          string   `json:"label"`
		Aliases        []string `json:"aliases"`
		DefaultRho     float64  `json:"default_rho"`
		NeedInnerModel bool     `json:"need_inner_model"`
	}
	f, _ := engine.FieldByName("scheduler")
	out := []scheduler{{Name: "automatic", Label: "Automatic", Aliases: []string{}, DefaultRho: -1}}
	for _, v := range f.Values {
		out = append(out, scheduler{Name: v, Label: engine.A1111SchedulerName(v), Aliases: []string{}, DefaultRho: -1})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) a1111GetOptions(w http.ResponseWriter, r *http.Request, c caller) {
	m := s.clientModel(c.name)
	if m == "" {
		m = engine.DefaultModel
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sd_model_checkpoint": m, "sd_checkpoint_hash": nil, "CLIP_stop_at_last_layers": 1,
		"samples_format": "png", "sd_vae": "Automatic",
	})
}

// a1111SetOptions sets the caller's model ("sd_model_checkpoint"); the
// other options are accepted and ignored. The model must exist.
func (s *Server) a1111SetOptions(w http.ResponseWriter, r *http.Request, c caller) {
	var b struct {
		Model *string `json:"sd_model_checkpoint"`
	}
	if _, err := s.decodeBody(w, r, &b, false); err != nil {
		s.failErr(w, r, err)
		return
	}
	if b.Model != nil {
		name := a1111ModelName(*b.Model)
		if _, err := s.catalog.Resolve(name); err != nil {
			s.failErr(w, r, badField(fmt.Errorf("sd_model_checkpoint: %w", err)))
			return
		}
		s.mu.Lock()
		s.models[c.name] = name
		s.mu.Unlock()
	}
	writeJSON(w, http.StatusOK, nil)
}

// currentJob is the caller's running job, else its oldest waiting one.
func (s *Server) currentJob(c caller) (*job, int) {
	var run, wait *job
	n := 0
	for _, j := range s.jobs {
		if j.Client != c.name || j.ended() {
			continue
		}
		n++
		if j.state == StateRunning && (run == nil || j.created.Before(run.created)) {
			run = j
		}
		if j.state == StateQueued && (wait == nil || j.created.Before(wait.created)) {
			wait = j
		}
	}
	if run != nil {
		return run, n
	}
	return wait, n
}

func (s *Server) a1111Progress(w http.ResponseWriter, r *http.Request, c caller) {
	s.mu.Lock()
	j, n := s.currentJob(c)
	state := map[string]any{"skipped": false, "interrupted": false, "job": "", "job_count": n, "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
	out := map[string]any{"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": nil, "textinfo": nil}
	if j != nil {
		state["job"] = j.ID
		state["job_timestamp"] = j.created.Format("20060102150405")
		state["sampling_step"], state["sampling_steps"] = j.step, j.total
		if j.total > 0 {
			p := float64(j.step) / float64(j.total)
			out["progress"] = p
			if p > 0 {
				out["eta_relative"] = time.Since(j.started).Seconds() * (1 - p) / p
			}
		}
		if j.preview != nil && r.URL.Query().Get("skip_current_image") != "true" {
			out["current_image"] = encodeB64(j.preview)
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// a1111Interrupt cancels the caller's running jobs (only its own).
func (s *Server) a1111Interrupt(w http.ResponseWriter, r *http.Request, c caller) {
	s.mu.Lock()
	var mine []*job
	for _, j := range s.jobs {
		if j.Client == c.name && j.state == StateRunning {
			mine = append(mine, j)
		}
	}
	s.mu.Unlock()
	for _, j := range mine {
		s.cancelJob(c, j)
	}
	writeJSON(w, http.StatusOK, nil)
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
