package server

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/darkroom-ai/darkroom/engine"
)

// a1111Body is the body of A1111's /sdapi/v1/txt2img and img2img
// (StableDiffusionProcessingTxt2Img / Img2Img): the keys darkroom maps.
// Pointers tell a key the client sent from one it left out. Other keys
// (restore_faces, tiling, styles, script_args, alwayson_scripts, ...) are
// accepted and ignored.
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
	Width             *int     `json:"width"`
	Height            *int     `json:"height"`
	DenoisingStrength *float64 `json:"denoising_strength"`
	EnableHR          bool     `json:"enable_hr"`
	HRScale           *float64 `json:"hr_scale"`
	HRUpscaler        string   `json:"hr_upscaler"`
	HRSecondPassSteps *int     `json:"hr_second_pass_steps"`
	RefinerCheckpoint string   `json:"refiner_checkpoint"`
	RefinerSwitchAt   *float64 `json:"refiner_switch_at"`
	OverrideSettings  struct {
		Model    string `json:"sd_model_checkpoint"`
		ClipSkip *int   `json:"CLIP_stop_at_last_layers"`
		VAE      string `json:"sd_vae"`
	} `json:"override_settings"`
	// img2img
	InitImages []string `json:"init_images"`
	ResizeMode *int     `json:"resize_mode"`
	Mask       string   `json:"mask"`
	MaskBlur   *int     `json:"mask_blur"`
	// SendImages false leaves the images out of the answer.
	SendImages *bool `json:"send_images"`
}

// a1111Task maps an A1111 body onto a task for client c.
func (s *Server) a1111Task(c caller, b a1111Body, img2img bool) (Task, error) {
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
			return Task{}, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("sampler_name %q: unknown sampler (GET /sdapi/v1/samplers lists them)", sampler)}
		}
		req.Sampler = sm
		set("sampler", true)
		if sched != "" {
			req.Scheduler = sched
			set("scheduler", true)
		}
	}
	if b.Scheduler != "" && !strings.EqualFold(b.Scheduler, "automatic") {
		req.Scheduler = b.Scheduler
		set("scheduler", true)
	}
	if b.BatchSize != nil {
		req.Batch = max(*b.BatchSize, 1)
	}
	if b.NIter != nil && *b.NIter > 1 {
		// darkroom runs one batch a request: n_iter batches are one
		// batch of all the images.
		req.Batch *= *b.NIter
	}
	if b.Steps != nil {
		req.Steps = *b.Steps
	}
	set("steps", b.Steps != nil)
	if b.CFGScale != nil {
		req.CFG = *b.CFGScale
	}
	set("cfg", b.CFGScale != nil)
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
		if len(b.InitImages) == 0 {
			return Task{}, &httpError{status: http.StatusBadRequest, msg: "init_images: img2img needs an image"}
		}
		var err error
		if t.InitImage, err = decodeImage("init_images[0]", b.InitImages[0]); err != nil {
			return Task{}, err
		}
		if b.Mask != "" {
			if t.Mask, err = decodeImage("mask", b.Mask); err != nil {
				return Task{}, err
			}
			if b.MaskBlur != nil {
				t.Request.MaskBlur = *b.MaskBlur
			}
		}
		t.Request.Denoise = 0.75 // A1111's default strength
		if b.DenoisingStrength != nil {
			t.Request.Denoise = *b.DenoisingStrength
		}
		t.Request.DenoiseSteps = engine.DenoiseStepsA1111
		if b.ResizeMode != nil {
			switch *b.ResizeMode {
			case 0:
				t.Request.Resize = engine.ResizeStretch
			case 1:
				t.Request.Resize = engine.ResizeCrop
			case 2:
				t.Request.Resize = engine.ResizeFill
			default:
				return Task{}, &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("resize_mode %d: darkroom resizes with 0 (just resize), 1 (crop and resize) or 2 (resize and fill)", *b.ResizeMode)}
			}
		}
	} else if b.EnableHR {
		t.Request.Hires = 2
		if b.HRScale != nil {
			t.Request.Hires = *b.HRScale
		}
		t.Request.HiresDenoise = 0.7 // A1111's default
		if b.DenoisingStrength != nil {
			t.Request.HiresDenoise = *b.DenoisingStrength
		}
		if b.HRSecondPassSteps != nil {
			t.Request.HiresSteps = *b.HRSecondPassSteps
		}
		if u := b.HRUpscaler; u != "" {
			f, _ := engine.FieldByName("hires_upscaler")
			if err := f.Set(&t.Request, a1111Upscaler(u)); err != nil {
				return Task{}, badField(err)
			}
		}
	}
	t.Given = append(given, "prompt", "negative", "seed", "batch")
	return t, nil
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

// a1111Generate runs an A1111 request to its end and answers as A1111
// does: {"images": [base64 PNG], "parameters": the body, "info": JSON
// text}. A client that hangs up cancels its job.
func (s *Server) a1111Generate(w http.ResponseWriter, r *http.Request, c caller, img2img bool) {
	var b a1111Body
	keys, err := s.decodeBody(w, r, &b, false)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	t, err := s.a1111Task(c, b, img2img)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	j, err := s.submit(c.name, t)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	select {
	case <-j.done:
	case <-r.Context().Done():
		s.cancelJob(c, j)
		return
	case <-s.ctx.Done():
		s.fail(w, r, http.StatusServiceUnavailable, "the server is shutting down")
		return
	}
	s.mu.Lock()
	o := *j.out
	s.mu.Unlock()
	if o.Error != "" {
		status := http.StatusInternalServerError
		if o.Field != "" {
			status = http.StatusBadRequest
		}
		if o.Cancelled {
			status = http.StatusOK // A1111 answers an interrupted job with what it has
		}
		if !o.Cancelled {
			writeJSON(w, status, errorBody{Error: o.Error, Detail: o.Error, Field: o.Field})
			return
		}
	}
	images := []string{}
	if b.SendImages == nil || *b.SendImages {
		for _, img := range o.Images {
			images = append(images, encodeB64(img))
		}
	}
	info, _ := json.Marshal(a1111Info(o, j.created))
	params := map[string]json.RawMessage{}
	for k, v := range keys {
		if k != "init_images" && k != "mask" {
			params[k] = v
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"images": images, "parameters": params, "info": string(info)})
}

// a1111Info is the "info" object of an A1111 answer (as a JSON text in
// the answer): the request as run, per image seeds and infotexts.
func a1111Info(o Outcome, created time.Time) map[string]any {
	req := o.Request
	n := len(o.Images)
	seeds := make([]uint64, n)
	prompts := make([]string, n)
	negs := make([]string, n)
	for i := range n {
		seeds[i], prompts[i], negs[i] = req.Seed, req.Prompt, req.Negative
	}
	clip := max(req.ClipSkip, 1)
	info := map[string]any{
		"prompt": req.Prompt, "all_prompts": prompts, "negative_prompt": req.Negative, "all_negative_prompts": negs,
		"seed": req.Seed, "all_seeds": seeds, "subseed": req.VariationSeed, "all_subseeds": seeds,
		"subseed_strength": req.VariationStrength, "width": req.Width, "height": req.Height,
		"sampler_name": engine.A1111SamplerName(req.Sampler), "scheduler": engine.A1111SchedulerName(req.Scheduler),
		"cfg_scale": req.CFG, "steps": req.Steps, "batch_size": req.Batch, "restore_faces": false,
		"sd_model_name": o.ModelName, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
		"denoising_strength": req.Denoise, "extra_generation_params": map[string]any{}, "index_of_first_image": 0,
		"infotexts": o.Infotexts, "styles": []string{}, "job_timestamp": created.Format("20060102150405"),
		"clip_skip": clip, "is_using_inpainting_conditioning": false, "version": "darkroom",
	}
	if o.Cancelled {
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
