package engine

import (
	"errors"
	"fmt"
	"github.com/darkroom-ai/darkroom/engine/family"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/sampling"
)

// RequestField describes one field of Request: its names in JSON, on the
// command line and in A1111 parameters text, how to read and write it as
// text, its default and its validation. RequestFields lists them all; the
// CLI flags of `darkroom gen`, `gen --from`, the A1111 text of PNGs,
// DefaultRequest and Request.Validate are driven by that one table. (The
// "darkroom" PNG chunk is the Request's JSON; Name is its json tag, which a
// test keeps in step with the table.)
//
// The slices of a RequestField (Values) are shared: do not modify them.
type RequestField struct {
	// Name is the field's JSON name in the "darkroom" PNG chunk, also the
	// name FieldError uses ("width", "clip_skip", "text_encoders").
	Name string
	// Flag is the `darkroom gen` flag ("clip-skip"), without dashes; Short
	// its one-letter shorthand ("W"), or "" when it has none.
	Flag, Short string
	// Usage is the flag's help text.
	Usage string
	// Kind is the type of the field's value.
	Kind FieldKind
	// A1111 is the field's key in A1111 "parameters" text ("Steps", "CFG
	// scale", "Size"), or "" when A1111 has none. Width and height share
	// "Size" (written as WIDTHxHEIGHT); "Prompt" is the text's first lines
	// and "Negative prompt" the line after them, as A1111 reads them.
	A1111 string
	// Values lists the valid values of an enumerated field (sampler,
	// scheduler, convention), or the usual ones of an open field
	// (hires_upscaler, which also takes upscaler models), for completion;
	// nil for other fields.
	Values []string

	get        func(*Request) any
	str        func(*Request) string
	set        func(*Request, string) error
	copyTo     func(dst, src *Request)
	setDefault func(*Request)
	check      func(*Request) *FieldError
	a1111Write func(*Request, a1111Meta) []a1111Pair
	a1111Read  func(*Request, map[string]string) error
}

// FieldKind is the type of a RequestField's value.
type FieldKind uint8

// Field kinds.
const (
	KindString  FieldKind = iota // string
	KindInt                      // int
	KindUint                     // uint64
	KindFloat                    // float64
	KindStrings                  // []string; Set appends one value
	KindBool                     // bool
)

// String returns the Go type of the kind's values.
func (k FieldKind) String() string {
	switch k {
	case KindString:
		return "string"
	case KindInt:
		return "int"
	case KindUint:
		return "uint64"
	case KindFloat:
		return "float64"
	case KindStrings:
		return "[]string"
	case KindBool:
		return "bool"
	}
	return fmt.Sprintf("FieldKind(%d)", uint8(k))
}

// Value returns the field's value in r: a string, int, uint64, float64 or
// []string (a copy) according to Kind.
func (f RequestField) Value(r *Request) any { return f.get(r) }

// String formats the field's value in r as Set parses it (a KindStrings
// field's values are joined with commas).
func (f RequestField) String(r *Request) string { return f.str(r) }

// Set parses s and stores it in r; a KindStrings field appends s to its
// list. A value that does not parse is a *FieldError holding s.
func (f RequestField) Set(r *Request, s string) error { return f.set(r, s) }

// Copy copies the field's value from src to dst.
func (f RequestField) Copy(dst, src *Request) { f.copyTo(dst, src) }

// Check validates the field's value in r alone and returns nil or a
// *FieldError. Request.Validate checks every field.
func (f RequestField) Check(r *Request) error {
	if f.check == nil {
		return nil
	}
	if fe := f.check(r); fe != nil {
		return fe
	}
	return nil
}

// RequestFields returns the request fields, in the order in which keyed
// fields appear in A1111 parameters text.
func RequestFields() []RequestField { return slices.Clone(requestFields) }

// FieldByName returns the field with JSON name name.
func FieldByName(name string) (RequestField, bool) {
	for _, f := range requestFields {
		if f.Name == name {
			return f, true
		}
	}
	return RequestField{}, false
}

// FieldError is an error about one request field (see family.FieldError):
// Validate's and the model checks' errors, which the CLI maps to flags.
type FieldError = family.FieldError

// conventions are the values of Request.Convention ("" means the first).
var conventions = []string{"comfyui", "diffusers"}

// requestFields is the table behind RequestFields. Keyed fields are written
// to A1111 text in this order; Validate reports the first problem in it.
//
// Adding a request field: add it to Request (with a json tag) and give it
// an entry here.
var requestFields = []RequestField{
	stringField("prompt", "", func(r *Request) *string { return &r.Prompt }).
		flag("prompt", "p", "the prompt").
		a1111(a1111Prompt, nil, nil).done(),
	stringField("negative", "", func(r *Request) *string { return &r.Negative }).
		flag("negative", "n", "the negative prompt").
		a1111(a1111Negative, func(v string) (string, bool) { return v, v != "" }, nil).done(),
	intField("steps", 20, func(r *Request) *int { return &r.Steps }).
		flag("steps", "", "sampling steps").
		valid(func(v int) string {
			if v < 1 || v > MaxSteps {
				return fmt.Sprintf("must be between 1 and %d", MaxSteps)
			}
			return ""
		}).
		a1111("Steps", nil, nil).done(),
	stringField("sampler", "euler", func(r *Request) *string { return &r.Sampler }).
		flag("sampler", "", "sampler: "+strings.Join(sampling.Samplers(), ", ")+` (A1111 and stable-diffusion.cpp names work too: "Euler a", "DPM++ 2M Karras", dpm++2m)`).
		names(samplerNames, setSampler).
		a1111Request("Sampler", writeSampler, readSampler).done(),
	stringField("scheduler", "normal", func(r *Request) *string { return &r.Scheduler }).
		flag("scheduler", "", "scheduler: "+strings.Join(sampling.Schedulers(), ", ")+" (A1111 names work too: Karras, \"SGM Uniform\")").
		names(schedulerNames, setScheduler).
		a1111Request("Schedule type", writeSchedule, readSchedule).done(),
	floatField("cfg", 7, func(r *Request) *float64 { return &r.CFG }).
		flag("cfg", "", "classifier-free guidance scale (1 disables the negative prompt)").
		valid(func(v float64) string {
			if !(v >= 0 && v <= MaxCFG) {
				return fmt.Sprintf("must be between 0 and %d", MaxCFG)
			}
			return ""
		}).
		a1111("CFG scale", nil, nil).done(),
	floatField("guidance", 0, func(r *Request) *float64 { return &r.Guidance }).
		flag("guidance", "", "embedded guidance of a guidance-distilled model (Flux dev; diffusers' guidance_scale, ComfyUI's FluxGuidance; 0: the model's default, 3.5)").
		valid(func(v float64) string {
			if !(v >= 0 && v <= MaxCFG) {
				return fmt.Sprintf("must be between 0 and %d", MaxCFG)
			}
			return ""
		}).
		a1111("Distilled CFG Scale", func(v float64) (string, bool) { return formatFloat(v), v != 0 }, nil).done(),
	intField("max_sequence_length", 0, func(r *Request) *int { return &r.MaxSequenceLength }).
		flag("max-sequence-length", "", "T5 tokens a prompt is truncated and padded to (diffusers' name; 0: ComfyUI pads to at least 256 (Flux) or 77 (SD3) and never truncates, diffusers uses 512 for Flux dev and 256 for schnell and SD3)").
		valid(func(v int) string {
			if v < 0 || v > MaxSequenceLength {
				return fmt.Sprintf("must be between 1 and %d (0: the default)", MaxSequenceLength)
			}
			return ""
		}).
		a1111("Max sequence length", func(v int) (string, bool) { return strconv.Itoa(v), v != 0 }, nil).done(),
	floatField("shift", 0, func(r *Request) *float64 { return &r.Shift }).
		flag("shift", "", "flow shift of a flow-matching model (Flux: the mu of ComfyUI's ModelSamplingFlux; SD3: ModelSamplingSD3's shift; 0: the model's rule, 3 for SD3, for Flux dev derived from the image size, 1.15 at 1024²)").
		valid(func(v float64) string {
			if !(v >= 0 && v <= 100) {
				return "must be between 0 and 100 (0: the model's rule)"
			}
			return ""
		}).
		a1111("Shift", func(v float64) (string, bool) { return formatFloat(v), v != 0 }, nil).done(),
	stringField("slg_layers", "", func(r *Request) *string { return &r.SLGLayers }).
		flag("slg-layers", "", `Skip-Layer Guidance for SD3/SD3.5 (ComfyUI's SkipLayerGuidanceSD3, diffusers' skip_guidance_layers): the MMDiT blocks the extra pass leaves out, e.g. "7,8,9" for SD3.5 Medium; empty is off`).
		valid(func(v string) string {
			if _, err := ParseSLGLayers(v); err != nil {
				return err.Error()
			}
			return ""
		}).
		a1111("SLG layers", func(v string) (string, bool) { return v, v != "" }, nil).done(),
	floatField("slg_scale", 0, func(r *Request) *float64 { return &r.SLGScale }).
		flag("slg-scale", "", "Skip-Layer Guidance scale (with --slg-layers; 0: ComfyUI's 3)").
		valid(func(v float64) string {
			if !(v >= 0 && v <= 10) {
				return "must be between 0 and 10"
			}
			return ""
		}).
		a1111Request("SLG scale", slgWrite("SLG scale", func(r *Request) *float64 { return &r.SLGScale }), slgRead("SLG scale", func(r *Request) *float64 { return &r.SLGScale })).done(),
	floatField("slg_start", 0, func(r *Request) *float64 { return &r.SLGStart }).
		flag("slg-start", "", "fraction of the schedule where Skip-Layer Guidance starts (with --slg-layers; 0: ComfyUI's 0.01)").
		valid(unitFraction).
		a1111Request("SLG start", slgWrite("SLG start", func(r *Request) *float64 { return &r.SLGStart }), slgRead("SLG start", func(r *Request) *float64 { return &r.SLGStart })).done(),
	floatField("slg_end", 0, func(r *Request) *float64 { return &r.SLGEnd }).
		flag("slg-end", "", "fraction of the schedule where Skip-Layer Guidance ends (with --slg-layers; 0: ComfyUI's 0.15; diffusers' default is 0.2)").
		valid(unitFraction).
		a1111Request("SLG end", slgWrite("SLG end", func(r *Request) *float64 { return &r.SLGEnd }), slgRead("SLG end", func(r *Request) *float64 { return &r.SLGEnd })).done(),
	uintField("seed", 0, func(r *Request) *uint64 { return &r.Seed }).
		flag("seed", "s", "seed (0 to 2^64-1); random when absent or -1, and printed").
		a1111("Seed", nil, nil).done(),
	intField("width", 512, func(r *Request) *int { return &r.Width }).
		flag("width", "W", "image width in pixels (multiple of 8)").
		valid(checkSize).
		a1111Request("Size", writeSize, readSize).done(),
	intField("height", 512, func(r *Request) *int { return &r.Height }).
		flag("height", "H", "image height in pixels (multiple of 8)").
		valid(checkSize).
		keyOnly("Size").done(), // written and read with the width
	stringField("model", "", func(r *Request) *string { return &r.Model }).
		flag("model", "m", "checkpoint: a .safetensors file, a diffusers folder, or a model name in the model directory (default: the built-in darkroom-digits)").
		a1111Request("Model", writeModel, readModel).done(),
	stringField("vae", "", func(r *Request) *string { return &r.VAE }).
		flag("vae", "", "a separate VAE `file` (or name in the model directories) to use instead of the checkpoint's").
		a1111("VAE", func(v string) (string, bool) { return a1111BaseName(v), v != "" }, nil).done(),
	floatField("denoise", 0, func(r *Request) *float64 { return &r.Denoise }).
		flag("denoise", "", "denoising strength, more than 0 and at most 1 (default 1: a full run from noise; below 1 needs --init-image)").
		valid(func(v float64) string {
			if !(v >= 0 && v <= 1) {
				return "must be more than 0 and at most 1 (0 means 1)"
			}
			return ""
		}).
		a1111Request("Denoising strength", writeDenoise, readDenoise).done(),
	intField("clip_skip", 1, func(r *Request) *int { return &r.ClipSkip }).
		flag("clip-skip", "", "text encoder layer: 1 = last, 2 = penultimate (A1111 'Clip skip')").
		valid(func(v int) string {
			if v < 0 {
				return "must be ≥ 1 (0 means 1)"
			}
			return ""
		}).
		a1111("Clip skip", func(v int) (string, bool) { return strconv.Itoa(v), v > 1 }, nil).done(),
	intField("batch", 1, func(r *Request) *int { return &r.Batch }).
		flag("batch", "b", "images per run (one noise tensor, as ComfyUI)").
		valid(func(v int) string {
			if v < 1 || v > MaxBatch {
				return fmt.Sprintf("must be between 1 and %d", MaxBatch)
			}
			return ""
		}).done(),
	intField("batch_index", 0, func(r *Request) *int { return &r.BatchIndex }).
		flag("batch-index", "", "write only image N (1-based) of the batch, e.g. with --from on one file of a batch; 0 writes every image").
		valid(func(v int) string {
			if v < 0 || v > MaxBatch {
				return fmt.Sprintf("must be between 0 and %d", MaxBatch)
			}
			return ""
		}).done(),
	stringField("convention", "", func(r *Request) *string { return &r.Convention }).
		flag("convention", "", "whose numerical conventions to reproduce: comfyui (default) or diffusers").
		enum(conventions, true).done(),
	stringsField("text_encoders", func(r *Request) *[]string { return &r.TextEncoders }).
		flag("text-encoder", "", "a separate text encoder `file` (or name), e.g. ComfyUI's split CLIP files; repeat for several").
		valid(func(v []string) string {
			if slices.Contains(v, "") {
				return "an empty file name"
			}
			return ""
		}).done(),
	stringsField("loras", func(r *Request) *[]string { return &r.LoRAs }).
		flag("lora", "", "a LoRA `file` (or name in the LoRA folders) merged into the model, as FILE[:STRENGTH[:CLIP_STRENGTH]] (strength 1, clip strength = strength); repeat to stack several. <lora:NAME:W> in the prompt does the same").
		valid(func(v []string) string {
			for _, s := range v {
				if _, err := ParseLoRA(s); err != nil {
					var fe *FieldError
					if errors.As(err, &fe) {
						return fe.Msg
					}
					return err.Error()
				}
			}
			return ""
		}).done(),
	stringField("prediction", "", func(r *Request) *string { return &r.Prediction }).
		flag("prediction", "", "what an ε/v model predicts when its file does not say: eps or v (SD2 768-v and v fine-tunes; a file's own declaration wins)").
		enum([]string{"eps", "v"}, true).done(),
	boolField("zsnr", func(r *Request) *bool { return &r.ZSNR }).
		flag("zsnr", "", "rescale the noise schedule to zero terminal SNR (models trained so, as ComfyUI's ModelSamplingDiscrete zsnr)").
		a1111("Zero terminal SNR", func(v bool) (string, bool) { return "True", v }, func(s string) (bool, error) { return strconv.ParseBool(strings.ToLower(s)) }).done(),
	intField("original_width", 0, func(r *Request) *int { return &r.OriginalWidth }).
		flag("original-width", "", "SDXL size conditioning: the original image width the model is told (0: the image width)").
		valid(checkCondSize).done(),
	intField("original_height", 0, func(r *Request) *int { return &r.OriginalHeight }).
		flag("original-height", "", "SDXL size conditioning: the original image height (0: the image height)").
		valid(checkCondSize).done(),
	intField("crop_top", 0, func(r *Request) *int { return &r.CropTop }).
		flag("crop-top", "", "SDXL crop conditioning: pixels cropped at the top (0: none)").
		valid(checkCrop).done(),
	intField("crop_left", 0, func(r *Request) *int { return &r.CropLeft }).
		flag("crop-left", "", "SDXL crop conditioning: pixels cropped at the left (0: none)").
		valid(checkCrop).done(),
	intField("target_width", 0, func(r *Request) *int { return &r.TargetWidth }).
		flag("target-width", "", "SDXL size conditioning: the target width (0: the image width)").
		valid(checkCondSize).done(),
	intField("target_height", 0, func(r *Request) *int { return &r.TargetHeight }).
		flag("target-height", "", "SDXL size conditioning: the target height (0: the image height)").
		valid(checkCondSize).done(),
	floatField("aesthetic_score", 0, func(r *Request) *float64 { return &r.AestheticScore }).
		flag("aesthetic-score", "", "SDXL refiner: the aesthetic score of the prompt (0: 6)").
		valid(checkAesthetic).done(),
	floatField("negative_aesthetic_score", 0, func(r *Request) *float64 { return &r.NegativeAestheticScore }).
		flag("negative-aesthetic-score", "", "SDXL refiner: the aesthetic score of the negative prompt (0: 2.5)").
		valid(checkAesthetic).done(),
	stringField("refiner", "", func(r *Request) *string { return &r.Refiner }).
		flag("refiner", "", "an SDXL refiner `file` (or name) that finishes the image: it takes over the last steps (--refiner-switch) on the same noise").
		a1111("Refiner", func(v string) (string, bool) { return a1111BaseName(v), v != "" }, nil).done(),
	floatField("refiner_switch", 0, func(r *Request) *float64 { return &r.RefinerSwitch }).
		flag("refiner-switch", "", "fraction of the steps the base runs before the refiner takes over (A1111's 'switch at'; 0: 0.8)").
		valid(func(v float64) string {
			if !(v >= 0 && v < 1) {
				return "must be at least 0 and below 1 (0 means 0.8)"
			}
			return ""
		}).
		a1111("Refiner switch at", func(v float64) (string, bool) { return formatFloat(v), v != 0 }, nil).done(),
	floatField("refiner_denoise", 0, func(r *Request) *float64 { return &r.RefinerDenoise }).
		flag("refiner-denoise", "", "apply the refiner after the full run instead: an img2img pass over the finished latent with this denoising strength (e.g. 0.3; 0: step swap at --refiner-switch)").
		valid(func(v float64) string {
			if !(v >= 0 && v < 1) {
				return "must be at least 0 and below 1 (0: step swap)"
			}
			return ""
		}).done(),
	stringField("init_image", "", func(r *Request) *string { return &r.InitImage }).
		flag("init-image", "i", "img2img: the `image` (PNG, JPEG, GIF) to start from, with --denoise below 1; without -W/-H the image's size (rounded down to a multiple of 8)").done(),
	stringField("resize", "", func(r *Request) *string { return &r.Resize }).
		flag("resize", "", "how an init image of another size is fitted: crop (scale to cover, cut the overflow; default), fill (scale to fit, repeat the edges) or stretch").
		enum(resizeModes, true).done(),
	stringField("mask", "", func(r *Request) *string { return &r.Mask }).
		flag("mask", "", "inpaint: a mask `image` (white repaints, black keeps), fitted like --init-image; without it a transparent init image's alpha is the mask").done(),
	intField("mask_grow", 0, func(r *Request) *int { return &r.MaskGrow }).
		flag("mask-grow", "", "inpaint: dilate the mask by N pixels").
		valid(checkMaskPixels).done(),
	intField("mask_blur", 0, func(r *Request) *int { return &r.MaskBlur }).
		flag("mask-blur", "", "inpaint: feather the mask with a Gaussian of N pixels (A1111's mask blur)").
		valid(checkMaskPixels).done(),
	stringField("outpaint", "", func(r *Request) *string { return &r.Outpaint }).
		flag("outpaint", "", "outpaint: extend the init image by N pixels per side, or LEFT,TOP,RIGHT,BOTTOM, and paint the new borders").
		valid(func(v string) string {
			if v == "" {
				return ""
			}
			if _, err := ParseOutpaint(v); err != nil {
				return "want N or LEFT,TOP,RIGHT,BOTTOM in pixels"
			}
			return ""
		}).done(),
	intField("outpaint_feather", 0, func(r *Request) *int { return &r.OutpaintFeather }).
		flag("outpaint-feather", "", "outpaint: feather the mask into the image over N pixels (0: ComfyUI's default 40)").
		valid(checkMaskPixels).done(),
	uintField("variation_seed", 0, func(r *Request) *uint64 { return &r.VariationSeed }).
		flag("variation-seed", "", "variation seed: the seed whose noise --variation-strength blends in (A1111's variation seed)").
		a1111Request("Variation seed", writeVariationSeed, readVariationSeed).done(),
	floatField("variation_strength", 0, func(r *Request) *float64 { return &r.VariationStrength }).
		flag("variation-strength", "", "how far the initial noise moves towards --variation-seed's: 0 (none) to 1 (all), a slerp as A1111's").
		valid(func(v float64) string {
			if !(v >= 0 && v <= 1) {
				return "must be between 0 and 1"
			}
			return ""
		}).
		a1111("Variation seed strength", func(v float64) (string, bool) { return formatFloat(v), v != 0 }, nil).done(),
	intField("seed_resize_from_w", 0, func(r *Request) *int { return &r.SeedResizeFromW }).
		flag("seed-resize-from-w", "", "draw the initial noise as for an image this wide and paste it centred (A1111's resize seed from; with --seed-resize-from-h)").
		valid(checkCondSize).
		a1111Request("Seed resize from", writeSeedResize, readSeedResize).done(),
	intField("seed_resize_from_h", 0, func(r *Request) *int { return &r.SeedResizeFromH }).
		flag("seed-resize-from-h", "", "the height of --seed-resize-from-w").
		valid(checkCondSize).
		keyOnly("Seed resize from").done(),
	floatField("hires", 0, func(r *Request) *float64 { return &r.Hires }).
		flag("hires", "", "hires fix: upscale the result by this factor (e.g. 1.5 or 2) and refine it in a second pass; 0 or 1: off").
		valid(func(v float64) string {
			if !(v == 0 || v >= 1 && v <= 4) {
				return "must be between 1 and 4 (0: off)"
			}
			return ""
		}).
		a1111("Hires upscale", func(v float64) (string, bool) { return formatFloat(v), v > 1 }, nil).done(),
	floatField("hires_denoise", 0, func(r *Request) *float64 { return &r.HiresDenoise }).
		flag("hires-denoise", "", "hires fix: the second pass's denoising strength (0: 0.5)").
		valid(func(v float64) string {
			if !(v >= 0 && v <= 1) {
				return "must be between 0 and 1 (0: 0.5)"
			}
			return ""
		}).
		a1111Request("Denoising strength", writeHiresDenoise, readHiresDenoise).done(),
	stringField("hires_upscaler", "", func(r *Request) *string { return &r.HiresUpscaler }).
		flag("hires-upscaler", "", "hires fix: how to upscale: lanczos (the image; default), latent-nearest, latent-bilinear, latent-bicubic or latent-bislerp (ComfyUI's latent methods), or an upscaler model (a name in upscale_models, e.g. 4x-UltraSharp, or a file), whose result is resized to the hires size with Lanczos").
		values(hiresUpscalers).
		valid(checkHiresUpscaler).
		a1111Request("Hires upscaler", writeHiresUpscaler, readHiresUpscaler).done(),
	intField("hires_steps", 0, func(r *Request) *int { return &r.HiresSteps }).
		flag("hires-steps", "", "hires fix: the second pass's steps (0: --steps)").
		valid(func(v int) string {
			if v < 0 || v > MaxSteps {
				return fmt.Sprintf("must be between 0 and %d (0: --steps)", MaxSteps)
			}
			return ""
		}).
		a1111("Hires steps", func(v int) (string, bool) { return strconv.Itoa(v), v > 0 }, nil).done(),
	stringField("denoise_steps", "", func(r *Request) *string { return &r.DenoiseSteps }).
		flag("denoise-steps", "", "img2img steps: comfyui (run --steps steps of a steps/denoise schedule), a1111 (run int(denoise·steps)+1 of a steps schedule) or diffusers (int(steps·denoise)); default: the --convention's").
		enum(denoiseRules, true).done(),
}

func checkMaskPixels(v int) string {
	if v < 0 || v > 256 {
		return "must be between 0 and 256 pixels"
	}
	return ""
}

func checkCondSize(v int) string {
	if v < 0 || v > 16384 {
		return "must be between 0 and 16384 (0: the image size)"
	}
	return ""
}

func checkCrop(v int) string {
	if v < 0 || v > 16384 {
		return "must be between 0 and 16384"
	}
	return ""
}

func checkAesthetic(v float64) string {
	if !(v >= 0 && v <= 10) {
		return "must be between 0 and 10 (0: the default)"
	}
	return ""
}

func checkSize(v int) string {
	if v != 0 && (v%8 != 0 || v < MinSize || v > MaxSize) {
		return fmt.Sprintf("must be a multiple of 8 between %d and %d", MinSize, MaxSize)
	}
	return ""
}

// fieldBuilder builds the RequestField of a field of type T.
type fieldBuilder[T any] struct {
	f      RequestField
	get    func(*Request) *T
	parse  func(string) (T, error)
	format func(T) string
}

func newField[T any](kind FieldKind, name string, def T, get func(*Request) *T, parse func(string) (T, error), format func(T) string, clone func(T) T) *fieldBuilder[T] {
	b := &fieldBuilder[T]{get: get, parse: parse, format: format}
	b.f = RequestField{
		Name:       name,
		Kind:       kind,
		get:        func(r *Request) any { return clone(*get(r)) },
		str:        func(r *Request) string { return format(*get(r)) },
		copyTo:     func(dst, src *Request) { *get(dst) = clone(*get(src)) },
		setDefault: func(r *Request) { *get(r) = clone(def) },
		set: func(r *Request, s string) error {
			v, err := parse(s)
			if err != nil {
				return &FieldError{Field: name, Value: s, Msg: err.Error()}
			}
			*get(r) = v
			return nil
		},
	}
	return b
}

func same[T any](v T) T { return v }

func stringField(name, def string, get func(*Request) *string) *fieldBuilder[string] {
	return newField(KindString, name, def, get, func(s string) (string, error) { return s, nil }, same, same)
}

func intField(name string, def int, get func(*Request) *int) *fieldBuilder[int] {
	return newField(KindInt, name, def, get, parseInt, strconv.Itoa, same)
}

func uintField(name string, def uint64, get func(*Request) *uint64) *fieldBuilder[uint64] {
	return newField(KindUint, name, def, get, parseUint, func(v uint64) string { return strconv.FormatUint(v, 10) }, same)
}

func boolField(name string, get func(*Request) *bool) *fieldBuilder[bool] {
	return newField(KindBool, name, false, get, parseBool, strconv.FormatBool, same)
}

func parseBool(s string) (bool, error) {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, errors.New("want a boolean (true or false)")
	}
	return v, nil
}

func floatField(name string, def float64, get func(*Request) *float64) *fieldBuilder[float64] {
	return newField(KindFloat, name, def, get, parseFloat, formatFloat, same)
}

// stringsField is a list of strings (default empty); Set appends.
func stringsField(name string, get func(*Request) *[]string) *fieldBuilder[[]string] {
	b := newField(KindStrings, name, nil, get,
		func(s string) ([]string, error) { return []string{s}, nil },
		func(v []string) string { return strings.Join(v, ",") },
		slices.Clone)
	b.f.set = func(r *Request, s string) error {
		*get(r) = append(*get(r), s)
		return nil
	}
	return b
}

// parseInt parses integers as the flag package does (base prefixes allowed).
func parseInt(s string) (int, error) {
	v, err := strconv.ParseInt(s, 0, strconv.IntSize)
	if err != nil {
		return 0, fmt.Errorf("want a whole number")
	}
	return int(v), nil
}

// parseUint parses a decimal uint64 in its canonical form (an optional
// leading +).
func parseUint(s string) (uint64, error) {
	t := strings.TrimPrefix(s, "+")
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || strconv.FormatUint(v, 10) != t {
		return 0, fmt.Errorf("want a whole number from 0 to %d", uint64(math.MaxUint64))
	}
	return v, nil
}

func parseFloat(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("want a number")
	}
	return v, nil
}

// formatFloat formats as %g does: the shortest text that parses back.
func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// flag sets the field's CLI flag.
func (b *fieldBuilder[T]) flag(name, short, usage string) *fieldBuilder[T] {
	b.f.Flag, b.f.Short, b.f.Usage = name, short, usage
	return b
}

// valid sets the validation: check returns what is wrong with v, or "".
// values lists the field's usual values (for completion and help) without
// restricting it to them.
func (b *fieldBuilder[T]) values(vs []string) *fieldBuilder[T] {
	b.f.Values = vs
	return b
}

// checkHiresUpscaler accepts the built-in upscalers and any other name
// as an upscaler model (found when the job loads it), except a misspelt
// latent method.
func checkHiresUpscaler(v string) string {
	switch {
	case v == "" || slices.Contains(hiresUpscalers, v):
		return ""
	case strings.TrimSpace(v) == "":
		return "a blank name"
	case strings.HasPrefix(strings.ToLower(v), "latent"):
		return "unknown latent method; valid: " + strings.Join(hiresUpscalers, ", ") + ", or an upscaler model"
	}
	return ""
}

func (b *fieldBuilder[T]) valid(check func(v T) string) *fieldBuilder[T] {
	get, name := b.get, b.f.Name
	b.f.check = func(r *Request) *FieldError {
		v := *get(r)
		if msg := check(v); msg != "" {
			return &FieldError{Field: name, Value: v, Msg: msg}
		}
		return nil
	}
	return b
}

// enum restricts the field to values (or "" when emptyOK), compared as
// String formats them.
func (b *fieldBuilder[T]) enum(values []string, emptyOK bool) *fieldBuilder[T] {
	b.f.Values = values
	return b.valid(func(v T) string {
		if s := b.format(v); (s == "" && emptyOK) || slices.Contains(values, s) {
			return ""
		}
		return "unknown; valid: " + strings.Join(values, ", ")
	})
}

// names makes the field one of t's canonical names: set stores a name
// given in any accepted spelling, and the check suggests the nearest name
// for an unknown one.
func (b *fieldBuilder[T]) names(t *nameTable, set func(*Request, string) error) *fieldBuilder[T] {
	b.f.Values = t.canonical
	b.f.set = set
	return b.valid(func(v T) string {
		if s := b.format(v); !slices.Contains(t.canonical, s) {
			return t.unknownName(s)
		}
		return ""
	})
}

// setSampler stores the sampler's canonical name, and the scheduler too
// when the name holds one ("DPM++ 2M Karras"). An unknown name is stored
// as it is, for Validate to report.
func setSampler(r *Request, s string) error {
	sampler, scheduler, ok := CanonicalSampler(s)
	if !ok {
		r.Sampler = s
		return nil
	}
	r.Sampler = sampler
	if scheduler != "" {
		r.Scheduler = scheduler
	}
	return nil
}

// setScheduler stores the scheduler's canonical name (an unknown one as it
// is, for Validate to report).
func setScheduler(r *Request, s string) error {
	if c, ok := CanonicalScheduler(s); ok {
		s = c
	}
	r.Scheduler = s
	return nil
}

// a1111 gives the field the A1111 key key. write formats the value and
// says whether to write it (nil: format it as String does, always); read
// parses the text (nil: as Set does).
func (b *fieldBuilder[T]) a1111(key string, write func(T) (string, bool), read func(string) (T, error)) *fieldBuilder[T] {
	if write == nil {
		write = func(v T) (string, bool) { return b.format(v), true }
	}
	if read == nil {
		read = b.parse
	}
	get, name := b.get, b.f.Name
	return b.a1111Request(key,
		func(r *Request, _ a1111Meta) []a1111Pair {
			if s, ok := write(*get(r)); ok {
				return []a1111Pair{{key, s}}
			}
			return nil
		},
		func(r *Request, params map[string]string) error {
			s, ok := params[key]
			if !ok {
				return nil
			}
			v, err := read(s)
			if err != nil {
				return &FieldError{Field: name, Value: s, Msg: err.Error()}
			}
			*get(r) = v
			return nil
		})
}

// a1111Request gives the field the A1111 key key with writer and reader
// that see the whole request.
func (b *fieldBuilder[T]) a1111Request(key string, write func(*Request, a1111Meta) []a1111Pair, read func(*Request, map[string]string) error) *fieldBuilder[T] {
	b.f.A1111, b.f.a1111Write, b.f.a1111Read = key, write, read
	return b
}

// keyOnly names the field's A1111 key, written and read by another field.
func (b *fieldBuilder[T]) keyOnly(key string) *fieldBuilder[T] {
	b.f.A1111 = key
	return b
}

func (b *fieldBuilder[T]) done() RequestField { return b.f }

// slgWrite writes a Skip-Layer Guidance setting into A1111 text, only
// when the request has SLG layers.
func slgWrite(key string, get func(*Request) *float64) func(*Request, a1111Meta) []a1111Pair {
	return func(r *Request, _ a1111Meta) []a1111Pair {
		if r.SLGLayers == "" {
			return nil
		}
		return []a1111Pair{{key, formatFloat(*get(r))}}
	}
}

// slgRead reads a Skip-Layer Guidance setting back from A1111 text.
func slgRead(key string, get func(*Request) *float64) func(*Request, map[string]string) error {
	return func(r *Request, params map[string]string) error {
		s, ok := params[key]
		if !ok {
			return nil
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%s %q: not a number", key, s)
		}
		*get(r) = v
		return nil
	}
}

// unitFraction accepts a fraction of the schedule, 0 to 1.
func unitFraction(v float64) string {
	if !(v >= 0 && v <= 1) {
		return "must be between 0 and 1"
	}
	return ""
}
