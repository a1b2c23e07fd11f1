package engine

import "fmt"

// Request is one text-to-image or image-to-image job: every parameter of
// `darkroom gen`.
//
// Each field has an entry in the field table (RequestFields, fields.go)
// giving its flag, A1111 key, default and validation: a new field is the
// struct field plus one table entry.
type Request struct {
	// Model is a checkpoint path (single .safetensors file or diffusers
	// folder) or a model name found in the engine's model directories.
	// Empty selects the default model.
	Model    string `json:"model"`
	Prompt   string `json:"prompt"`
	Negative string `json:"negative,omitempty"`
	// Seed seeds the initial noise and the sampler's noise; image i of a
	// batch is drawn as part of one [Batch,4,h,w] noise tensor, as ComfyUI does.
	Seed      uint64  `json:"seed"`
	Steps     int     `json:"steps"`
	CFG       float64 `json:"cfg"`
	Sampler   string  `json:"sampler"`
	Scheduler string  `json:"scheduler"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	Batch     int     `json:"batch"`
	// BatchIndex (1-based) marks a request stored with one image of a
	// batch: regenerating it runs the whole batch (the images share one
	// noise tensor) and keeps image BatchIndex. 0 means the whole batch.
	BatchIndex int `json:"batch_index,omitempty"`
	// ClipSkip selects the text encoder layer: 1 is the last (default), 2
	// the penultimate (A1111 "Clip skip: 2").
	ClipSkip int `json:"clip_skip,omitempty"`
	// Guidance is the embedded guidance of a guidance-distilled model (Flux
	// dev: diffusers' guidance_scale, ComfyUI's FluxGuidance, Forge's
	// "Distilled CFG Scale"); 0 takes the model's default (3.5). Other
	// models refuse it: their guidance is CFG.
	Guidance float64 `json:"guidance,omitempty"`
	// MaxSequenceLength is the number of T5 tokens a prompt is truncated
	// and padded to (diffusers' max_sequence_length); 0 takes the
	// convention's: ComfyUI pads to at least 256 and never truncates,
	// diffusers pads and truncates to 512 (Flux dev) or 256 (schnell).
	MaxSequenceLength int `json:"max_sequence_length,omitempty"`
	// Shift replaces a flow model's shift rule when positive (Flux: the μ
	// of ComfyUI's ModelSamplingFlux; Flux dev's default derives it from
	// the image size, 1.15 at 1024²).
	Shift float64 `json:"shift,omitempty"`
	// SLGLayers turns on Skip-Layer Guidance (SD3/SD3.5's MMDiT; ComfyUI's
	// SkipLayerGuidanceSD3, diffusers' skip_guidance_layers): the blocks
	// left out of the extra pass, as the node takes them ("7, 8, 9");
	// empty is off. SLGScale, SLGStart and SLGEnd are its scale and the
	// fraction of the schedule where it acts; 0 takes the node's defaults
	// (3, 0.01, 0.15).
	SLGLayers string  `json:"slg_layers,omitempty"`
	SLGScale  float64 `json:"slg_scale,omitempty"`
	SLGStart  float64 `json:"slg_start,omitempty"`
	SLGEnd    float64 `json:"slg_end,omitempty"`
	// Convention is whose numerical conventions the run reproduces:
	// "comfyui" (the default; empty means comfyui) or "diffusers".
	Convention string `json:"convention,omitempty"`
	// VAE is a separate VAE file (or a name in the model directories) used
	// instead of the checkpoint's; empty uses the checkpoint's.
	VAE string `json:"vae,omitempty"`
	// TextEncoders are separate text encoder files (or names), as ComfyUI's
	// split checkpoints have; empty uses the checkpoint's.
	TextEncoders []string `json:"text_encoders,omitempty"`
	// Denoise is the denoising strength, 0 < Denoise ≤ 1; 0 means 1 (a full
	// run from noise). Below 1 the run starts from InitImage.
	Denoise float64 `json:"denoise,omitempty"`
	// InitImage is an image file (PNG, JPEG, GIF) an img2img run starts
	// from: fitted to Width×Height by Resize (a zero width or height is
	// taken from the image), VAE-encoded, noised to the start of the
	// denoised part of the schedule.
	InitImage string `json:"init_image,omitempty"`
	// Resize is how the init image is fitted: "crop" (default), "fill"
	// or "stretch" (ResizeCrop, ResizeFill, ResizeStretch).
	Resize string `json:"resize,omitempty"`
	// Mask is a mask image for inpainting (white repaints, black keeps);
	// without it an init image's transparency is the mask. The run repaints
	// only the masked latent area and the unmasked pixels come back
	// unchanged.
	Mask string `json:"mask,omitempty"`
	// MaskGrow dilates the mask by this many pixels; MaskBlur then
	// feathers it with a Gaussian of that many pixels.
	MaskGrow int `json:"mask_grow,omitempty"`
	MaskBlur int `json:"mask_blur,omitempty"`
	// Outpaint extends the init image by "N" pixels on every side or
	// "LEFT,TOP,RIGHT,BOTTOM", filled grey and repainted; OutpaintFeather
	// feathers the mask into the image over that many pixels (0: 40).
	Outpaint        string `json:"outpaint,omitempty"`
	OutpaintFeather int    `json:"outpaint_feather,omitempty"`
	// VariationSeed and VariationStrength blend the initial noise towards
	// another seed's (A1111's variation seed / subseed strength: a slerp,
	// 0 keeps the seed's noise); SeedResizeFromW/H draw the noise as for
	// that image size and paste it centred (A1111's "resize seed from"), so
	// a seed keeps its composition at another size.
	VariationSeed     uint64  `json:"variation_seed,omitempty"`
	VariationStrength float64 `json:"variation_strength,omitempty"`
	SeedResizeFromW   int     `json:"seed_resize_from_w,omitempty"`
	SeedResizeFromH   int     `json:"seed_resize_from_h,omitempty"`
	// Hires, when above 1, is a hires fix: after the run, the latents are
	// upscaled by this factor (HiresUpscaler: "lanczos" in image space or
	// a latent method, see UpscaleLanczos) and a second pass refines them
	// at HiresDenoise (0: 0.5) with HiresSteps steps (0: Steps).
	Hires         float64 `json:"hires,omitempty"`
	HiresDenoise  float64 `json:"hires_denoise,omitempty"`
	HiresUpscaler string  `json:"hires_upscaler,omitempty"`
	HiresSteps    int     `json:"hires_steps,omitempty"`
	// DenoiseSteps is which steps a partial run makes of Steps and
	// Denoise: "comfyui", "a1111" or "diffusers" (DenoiseStepsComfy...);
	// "" follows the convention.
	DenoiseSteps string `json:"denoise_steps,omitempty"`
	// Prediction is what an ε/v model predicts when its file says nothing:
	// "eps" or "v" ("" uses the file's declaration or the family's guess).
	Prediction string `json:"prediction,omitempty"`
	// ZSNR rescales a discrete schedule to zero terminal SNR.
	ZSNR bool `json:"zsnr,omitempty"`
	// SDXL micro-conditioning; zero values are the peers' defaults (the
	// image size, no crop, aesthetic scores 6 and 2.5).
	OriginalWidth          int     `json:"original_width,omitempty"`
	OriginalHeight         int     `json:"original_height,omitempty"`
	CropTop                int     `json:"crop_top,omitempty"`
	CropLeft               int     `json:"crop_left,omitempty"`
	TargetWidth            int     `json:"target_width,omitempty"`
	TargetHeight           int     `json:"target_height,omitempty"`
	AestheticScore         float64 `json:"aesthetic_score,omitempty"`
	NegativeAestheticScore float64 `json:"negative_aesthetic_score,omitempty"`
	// Refiner is an SDXL refiner file (or name) that runs the last steps:
	// the base runs the first RefinerSwitch of the steps (0 means 0.8),
	// the refiner the rest on the same latent, as A1111's refiner and
	// diffusers' denoising_end/denoising_start do.
	Refiner       string  `json:"refiner,omitempty"`
	RefinerSwitch float64 `json:"refiner_switch,omitempty"`
	// RefinerDenoise, when set, applies the refiner after the model's full
	// run instead of swapping at RefinerSwitch: an img2img pass over the
	// finished latent with this strength (ComfyUI's second KSampler,
	// diffusers' refiner(image=latents, strength=…)).
	RefinerDenoise float64 `json:"refiner_denoise,omitempty"`
	// LoRAs are LoRA files merged into the model's weights, each
	// "FILE[:STRENGTH[:CLIP_STRENGTH]]" (ParseLoRA; a name is looked up in
	// the LoRA folders). Engine.Generate adds the prompt's <lora:NAME:W>
	// tags here and removes them from the prompt.
	LoRAs []string `json:"loras,omitempty"`
}

// DefaultRequest returns a request with the defaults of `darkroom gen`.
func DefaultRequest() Request {
	var r Request
	for _, f := range requestFields {
		f.setDefault(&r)
	}
	return r
}

// Limits on request sizes.
const (
	MinSize  = 8
	MaxSize  = 4096
	MaxBatch = 64
	MaxSteps = 1000
	MaxCFG   = 100
	// MaxSequenceLength bounds Request.MaxSequenceLength: T5's prompt
	// window in the Flux and SD3 pipelines (diffusers refuses more).
	MaxSequenceLength = 512
)

// Validate checks the request's fields, each on its own, and returns nil
// or a *FieldError for the first field (in RequestFields order) with a
// problem, e.g. `width 1001: must be a multiple of 8 between 8 and 4096`.
// The model's own limits are checked when it generates. A sampler or
// scheduler spelled as A1111 or stable-diffusion.cpp spell it is first
// replaced by its ComfyUI name (a combined "DPM++ 2M Karras" is left to
// the flag parsers, which own both fields).
func (r *Request) Validate() error {
	// Names as other UIs spell them ("Euler a", "Karras") become ComfyUI's,
	// as the flags and the PNG readers already make them.
	if s, sched, ok := CanonicalSampler(r.Sampler); ok && s != r.Sampler && sched == "" {
		r.Sampler = s
	}
	if s, ok := CanonicalScheduler(r.Scheduler); ok {
		r.Scheduler = s
	}
	for _, f := range requestFields {
		if err := f.Check(r); err != nil {
			return err
		}
	}
	if r.InitImage == "" {
		for _, f := range []struct {
			name string
			v    int
		}{{"width", r.Width}, {"height", r.Height}} {
			if f.v == 0 {
				return &FieldError{Field: f.name, Value: 0, Msg: "0 (the init image's size) needs an init image"}
			}
		}
	}
	if r.BatchIndex > r.Batch {
		return &FieldError{Field: "batch_index", Value: r.BatchIndex, Msg: fmt.Sprintf("the batch has %d images", r.Batch)}
	}
	return nil
}
