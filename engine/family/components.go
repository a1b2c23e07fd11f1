package family

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/sampling"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Source is what a family loads from: one canonical view over every file
// of the model (an all-in-one checkpoint, a diffusers folder, or a
// diffusion-model file with separate VAE and text-encoder files, as
// ComfyUI users keep them).
//
// A family reads tensors through it (a weights.Builder over the Source);
// the engine owns the files and closes them, so families never call
// Close.
type Source struct {
	*weights.Model
	keys *Keys
}

// NewSource wraps an opened model.
func NewSource(m *weights.Model) *Source { return &Source{Model: m, keys: NewKeys(m)} }

// Keys returns the probe view of the source.
func (s *Source) Keys() *Keys { return s.keys }

// Env is what a family's Load gets besides the weights.
type Env struct {
	// Device receives the weights.
	Device backend.Device
	// Detection is what the family's probe found.
	Detection Detection
	// Embeddings resolves "embedding:NAME" in prompts (textual
	// inversion); nil when the engine has no embeddings folders.
	Embeddings Embeddings
}

// Components are a loaded model's parts, the only things the generic
// pipeline (encode → sample → decode) sees.
type Components struct {
	// Text encodes prompts.
	Text Conditioner
	// Denoiser is the diffusion network.
	Denoiser Denoiser
	// VAE maps between pixels and latents and describes the latent space.
	VAE VAE
	// Sampling is the noise schedule and the network's timestep map.
	Sampling ModelSampling
	// Defaults are the family's generation defaults.
	Defaults Defaults
	// PredictionEvidence says where the denoiser's prediction type (ε or
	// v) was read: a marker tensor, metadata, a config file. Empty when the
	// family assumed it, and then a request may choose the other
	// (Request.Prediction); a request contradicting a declared type is
	// refused.
	PredictionEvidence string
	// InpaintChannels is the number of channels an inpainting denoiser
	// takes beside the latent (the mask, then the masked image's latents:
	// 1 + latent channels; SD1/SD2/SDXL inpainting UNets take 9 in all),
	// which the pipeline passes as Inputs.Concat; 0 for other models.
	InpaintChannels int
	// VAEOn, when set, builds the VAE again on another device from the
	// model's weights: the engine's float32 fallback when a 16-bit decode
	// overflows (the SDXL VAE in fp16) is the CPU.
	VAEOn func(dev backend.Device) (VAE, error)
	// RefineOnly, when set, says why the model cannot start from noise and
	// how to use it instead (the SDXL refiner); txt2img with it is refused
	// with that message.
	RefineOnly string
	// Parts describe the components for `darkroom info` and scripts:
	// name and inferred configuration, in pipeline order.
	Parts []Part
}

// Part is one described component.
type Part struct {
	// Name is what the component is ("UNet", "VAE", "text encoder (CLIP-L)").
	Name string
	// Prefix is the canonical name prefix its tensors live under.
	Prefix string
	// Config is its inferred configuration in one line.
	Config string
}

// Defaults are a family's generation defaults (ComfyUI's and the model
// card's recommendations).
type Defaults struct {
	Width, Height int
	Steps         int
	CFG           float64
	Sampler       string
	Scheduler     string
	// Guidance is a guidance-distilled model's default embedded guidance
	// (Flux dev 3.5); 0 for models without one, which refuse a request's.
	Guidance float64
	// MaxSequenceLength is diffusers' T5 window for the family (Flux dev
	// 512, schnell 256); 0 for models without a T5 encoder, which refuse a
	// request's.
	MaxSequenceLength int
}

// Convention selects whose numerical conventions a run reproduces where
// ComfyUI and diffusers differ: the schedule's construction, timestep
// rounding, initial-noise scaling and text padding. The differences are
// about 1e-3 relative — invisible in an image, but not what "same seed,
// same image" means.
type Convention uint8

// Conventions.
const (
	// ConventionComfy is ComfyUI's (the default): for discrete models the
	// schedule built in float64, the network fed the nearest integer
	// timestep in log-sigma, and txt2img noise scaled by sqrt(1+σ_max²).
	ConventionComfy Convention = iota
	// ConventionDiffusers is diffusers' Euler-family schedulers' (Euler,
	// Euler a, Heun, LMS, KDPM2, DPM-Solver SDE): the schedule in float32,
	// continuous (log-sigma interpolated) timesteps, noise scaled by σ₀.
	ConventionDiffusers
	// ConventionDiffusersRounded is diffusers' DDIM / DPM-Solver / UniPC /
	// DEIS / DDPM / LCM schedulers': the float32 schedule, timesteps
	// rounded to integers, unit noise in the variance-preserving space.
	ConventionDiffusersRounded
)

// String names the convention.
func (c Convention) String() string {
	switch c {
	case ConventionComfy:
		return "comfyui"
	case ConventionDiffusers:
		return "diffusers"
	case ConventionDiffusersRounded:
		return "diffusers (integer timesteps)"
	}
	return fmt.Sprintf("Convention(%d)", int(c))
}

// diffusersRounded lists the samplers whose diffusers scheduler feeds
// the network integer timesteps.
var diffusersRounded = map[string]bool{
	"ddim": true, "dpmpp_2m": true, "dpmpp_2m_sde": true, "dpmpp_2m_sde_heun": true, "dpmpp_3m_sde": true,
	"uni_pc": true, "uni_pc_bh2": true, "deis": true, "ddpm": true, "lcm": true,
	"ipndm": true, "ipndm_v": true, "dpmpp_2s_ancestral": true,
}

// ParseConvention maps a request's convention name ("comfyui" or "", or
// "diffusers") to a Convention; for diffusers the sampler decides
// between the continuous and the integer-timestep variant, as the
// diffusers scheduler that implements it does.
func ParseConvention(name, sampler string) (Convention, error) {
	switch name {
	case "", "comfyui", "comfy":
		return ConventionComfy, nil
	case "diffusers":
		if diffusersRounded[sampler] {
			return ConventionDiffusersRounded, nil
		}
		return ConventionDiffusers, nil
	}
	return 0, fmt.Errorf("convention %q: want comfyui or diffusers", name)
}

// PromptOptions are the per-request settings of prompt encoding.
type PromptOptions struct {
	// ClipSkip selects the CLIP layer: 1 (or 0) the last, 2 the penultimate.
	ClipSkip int
	// Convention selects the peer whose text padding is reproduced.
	Convention Convention
	// MaxSequenceLength truncates and pads T5 prompts to this many tokens;
	// 0 is the convention's default (see Defaults.MaxSequenceLength).
	MaxSequenceLength int
	// Negative marks the negative prompt: diffusers' SD, SDXL and SD3
	// pipelines encode it at their default CLIP layer whatever the clip
	// skip, which the conditioners reproduce under its convention.
	Negative bool
}

// Conditioner turns prompts into conditioning: one or more tokenizer and
// text-encoder pairs (CLIP-L; CLIP-L + OpenCLIP-G; CLIP + T5; an LLM).
type Conditioner interface {
	// Encode encodes one prompt.
	Encode(ctx context.Context, text string, opt PromptOptions) (*Cond, error)
	// Tokenize returns the first encoder's token ids with start and end
	// tokens, untruncated (for token counters).
	Tokenize(text string) []int
	// Check validates options against the encoders, as field errors
	// (e.g. clip skip deeper than the encoder).
	Check(opt PromptOptions) error
}

// Cond is an encoded prompt on the device.
type Cond struct {
	Prompt string
	// Tokens is the number of prompt tokens (without start/end tokens) of
	// the first encoder; Chunks the number of windows it was split into.
	Tokens, Chunks int
	// Context is the sequence the denoiser attends to, [1, T, D].
	Context *backend.Tensor
	// Pooled is the pooled/projected vector(s), [1, P], or nil (SD1 has none;
	// SDXL's is OpenCLIP-G's projection; Flux's CLIP-L's pooled output).
	Pooled *backend.Tensor
	// Mask marks the valid Context positions, [1, T] (1 valid, 0 padding),
	// or nil when every position is valid.
	Mask *backend.Tensor
	// Extra holds family-specific conditioning (e.g. SDXL's size ids).
	Extra map[string]any
}

// Inputs are the per-job inputs a denoiser may take besides the latent,
// the timestep and the conditioning.
type Inputs struct {
	// Width and Height are the image size in pixels (size conditioning,
	// positional embeddings).
	Width, Height int
	// Guidance is a guidance-distilled model's embedded guidance scale
	// (Flux dev); 0 for models without one.
	Guidance float32
	// Concat is concatenated to the latent along channels (inpainting
	// models' masked-image latents and mask), [B, c, h, w], or nil.
	Concat *backend.Tensor
	// Control holds residuals added inside the network (ControlNet), or nil.
	Control []*backend.Tensor
	// NegativeRows is the number of leading rows conditioned by the
	// negative prompt (the rest by the prompt), for inputs that differ
	// between them (the SDXL refiner's aesthetic score).
	NegativeRows int
	// Size is SDXL-style micro-conditioning; zero fields take the peers'
	// defaults.
	Size SizeConditioning
	// SkipLayers lists transformer blocks the step leaves out (the
	// Skip-Layer Guidance pass of SD3); set only for a LayerSkipper.
	SkipLayers []int
}

// LayerSkipper is a Denoiser whose step can leave blocks out
// (Inputs.SkipLayers), which Skip-Layer Guidance needs.
type LayerSkipper interface {
	// Blocks is the number of blocks, numbered from 0.
	Blocks() int
}

// NormRescaler is a Denoiser whose diffusers pipeline rescales the guided
// velocity to the conditional one's norm, per token of Patch × Patch
// latent cells (all channels): QwenImagePipeline's true CFG,
// comb·‖cond‖/‖comb‖. ComfyUI's plain CFG does not, so the engine applies
// it under the diffusers convention only.
type NormRescaler interface {
	// RescalePatch is the token's size in latent cells (2).
	RescalePatch() int
}

// SizeConditioning is the size and crop micro-conditioning of SDXL-style
// UNets (diffusers' original_size / crops_coords_top_left / target_size /
// aesthetic_score, ComfyUI's CLIPTextEncodeSDXL fields). Zero values mean
// the defaults both peers use: original and target size = the image size,
// no crop, aesthetic scores 6 (prompt) and 2.5 (negative).
type SizeConditioning struct {
	OriginalWidth, OriginalHeight int
	CropTop, CropLeft             int
	TargetWidth, TargetHeight     int
	// Aesthetic and NegativeAesthetic are the refiner's scores for the
	// prompt's and the negative prompt's rows; 0 means the default.
	Aesthetic, NegativeAesthetic float64
}

// Step runs the network once on x [rows, C, (T,) h, w] (already scaled
// for the network, see ModelSampling) at one timestep per row, and returns
// its raw output (noise, v or velocity, by Prediction) of x's shape. The
// caller frees neither x nor the result; they live in the job.
type Step func(ctx context.Context, x *backend.Tensor, ts []float32) (*backend.Tensor, error)

// Denoiser is the diffusion network: a UNet or a transformer.
type Denoiser interface {
	// Prediction is what the network predicts.
	Prediction() sampling.Prediction
	// Bind places the conditioning of each batch row on the device and
	// returns the step function for those rows: rows[i] conditions row i.
	Bind(ctx context.Context, rows []*Cond, in Inputs) (Step, error)
	// Reset drops per-job state (recorded CUDA graphs and their memory);
	// the pipeline calls it when sampling ends, finished or not.
	Reset()
}

// LatentFormat describes a family's latent space.
type LatentFormat struct {
	// Channels is the latent channel count (4 SD1/SDXL, 16 SD3/Flux).
	Channels int
	// Factor is the spatial downsampling between pixels and latents (8).
	Factor int
	// TemporalFactor is the temporal downsampling of video latents
	// ([B, C, T, H, W]); 0 for image models ([B, C, H, W]).
	TemporalFactor int
	// Scale and Shift map VAE latents z to sampler latents:
	// x = (z − Shift)·Scale (SD1 0.18215/0; Flux 0.3611/0.1159).
	Scale, Shift float32
	// RGB is the linear latent→RGB approximation for cheap previews, one
	// row of [r, g, b] factors per channel; RGBBias is added.
	RGB     [][3]float32
	RGBBias [3]float32
	// TAESD is the file name of the matching TAESD decoder
	// ("taesd_decoder.safetensors", "taesdxl_decoder.safetensors",
	// "taesd3_decoder.safetensors", "taef1_decoder.safetensors").
	TAESD string
}

// Shape returns the latent shape of a batch of images (or videos of
// frames frames; 0 for an image model) of width × height pixels.
func (f LatentFormat) Shape(batch, width, height, frames int) []int {
	factor := max(f.Factor, 1)
	if f.TemporalFactor > 0 {
		t := 1 + max(frames-1, 0)/f.TemporalFactor
		return []int{batch, f.Channels, t, height / factor, width / factor}
	}
	return []int{batch, f.Channels, height / factor, width / factor}
}

// VAE maps between pixels and sampler latents.
type VAE interface {
	// Format describes the latent space.
	Format() LatentFormat
	// Decode maps sampler latents [N, C, (T,) h, w] to pixels in [-1, 1]
	// (not clamped).
	Decode(ctx context.Context, dev backend.Device, latents *backend.Tensor) (*backend.Tensor, error)
	// Encode maps pixels in [-1, 1] to sampler latents (the distribution's
	// mean); it fails for decoder-only checkpoints.
	Encode(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error)
}

// ModelSampling is a family's noise schedule and its map to the
// network's inputs ("model sampling" in ComfyUI): discrete
// (ε or v prediction over a 1000-step DDPM schedule) or flow matching
// with a shift.
type ModelSampling interface {
	// Schedule returns the sigma schedule the schedulers read, built as
	// the convention's peer builds it.
	Schedule(c Convention) sampling.Schedule
	// Timestep maps sigma to the network's timestep under the convention.
	Timestep(c Convention, sigma float32) float32
	// NoiseScale is the factor of the unit initial noise for a run starting
	// at sigma0 (variance-exploding models), from pure noise or, with
	// fromImage, added to an encoded image (img2img); flow models ignore it.
	NoiseScale(c Convention, sigma0 float32, fromImage bool) float32
	// Flow returns the flow schedule of a flow-matching model, or nil.
	Flow() *sampling.Flow
}

// FieldError is an error about one request field, named as in the
// request's JSON ("width", "clip_skip"); frontends map the field to their
// own spelling (a CLI flag, a form field). Model checks build it as a
// literal: &FieldError{Field: "width", Value: 1001, Msg: "…"}.
type FieldError struct {
	// Field is the JSON name of the field.
	Field string
	// Value is the offending value: the field's value, or the text that
	// did not parse. Nil leaves it out of the message.
	Value any
	// Msg says what is wrong: "must be between 1 and 1000".
	Msg string
}

// Error returns "FIELD VALUE: MSG", e.g. `width 1001: must be a multiple of
// 8 between 8 and 4096` or `sampler "nope": unknown; valid: ...`.
func (e *FieldError) Error() string { return e.Describe(e.Field) }

// Describe returns the message of Error with name in place of the field's
// JSON name: Describe("--width") gives `--width 1001: must be ...`.
func (e *FieldError) Describe(name string) string {
	switch v := e.Value.(type) {
	case nil:
		return name + ": " + e.Msg
	case string, []string:
		return fmt.Sprintf("%s %q: %s", name, v, e.Msg)
	default:
		return fmt.Sprintf("%s %v: %s", name, v, e.Msg)
	}
}

// Describer is implemented by families that can describe a checkpoint's
// components from its shapes alone, without loading it (`darkroom info`).
type Describer interface {
	// Describe infers each component's configuration from src's shapes.
	Describe(src *Source) []Part
}
