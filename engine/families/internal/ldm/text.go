package ldm

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
)

// CLIPText is a conditioner with one CLIP encoder (SD1's CLIP-L, SD2's
// OpenCLIP ViT-H).
type CLIPText struct {
	Enc clip.PromptEncoder
	Dev backend.Device
	// Layers maps a request's clip skip to the encoder's layer.
	Layers SkipMap
}

// SkipMap maps a request's clip skip (1 = the last layer, 2 = the
// penultimate, as A1111 and ComfyUI's CLIPSetLastLayer count) to a layer
// of the stored encoder.
type SkipMap struct {
	// Default is the layer the family reads when the request asks for the
	// last: 2 for SD2 and SDXL, whose encoders are read at the penultimate
	// layer (A1111's clip skip 1 and 2 are then the same layer, as there).
	Default int
	// Dropped is the number of final layers the stored encoder lacks:
	// diffusers' SD2 text_encoder stores 23 of OpenCLIP ViT-H's 24, since
	// SD2 reads the penultimate.
	Dropped int
}

// Skip is the layer to read, counted from the stored encoder's last (1).
func (m SkipMap) Skip(req int) int { return max(req, m.Default, 1) - m.Dropped }

// Check refuses a clip skip deeper than the stored encoder.
func (m SkipMap) Check(req, layers int) error {
	if m.Skip(req) > layers {
		return &family.FieldError{Field: "clip_skip", Value: req, Msg: fmt.Sprintf("the text encoder has %d layers", layers+m.Dropped)}
	}
	return nil
}

// Encode encodes a prompt into the UNet's context [1, 77·k, width]: under
// ComfyUI's convention with its weighting syntax and 75-token windows;
// under diffusers' literally, truncated to one 77-token window, as a
// diffusers pipeline encodes it (the negative prompt at the default layer).
func (c *CLIPText) Encode(ctx context.Context, text string, opt family.PromptOptions) (*family.Cond, error) {
	encode := c.Enc.Encode
	if opt.Convention != family.ConventionComfy {
		encode = c.Enc.EncodeLiteral
	}
	skip := c.Layers.Skip(opt.ClipSkip)
	if opt.Negative && opt.Convention != family.ConventionComfy {
		// diffusers' StableDiffusionPipeline encodes the negative prompt
		// at the last layer whatever clip_skip says.
		skip = c.Layers.Skip(0)
	}
	e, err := encode(ctx, c.Dev, text, skip)
	if err != nil {
		return nil, err
	}
	return &family.Cond{Prompt: text, Tokens: e.Tokens, Chunks: e.Chunks, Context: e.Hidden, Pooled: e.Pooled}, nil
}

// Tokenize returns the CLIP ids with start and end tokens, untruncated.
func (c *CLIPText) Tokenize(text string) []int { return c.Enc.Tok.Encode(text) }

// Check refuses a clip skip deeper than the encoder.
func (c *CLIPText) Check(opt family.PromptOptions) error {
	return c.Layers.Check(opt.ClipSkip, c.Enc.Model.Config.Layers)
}

// Encoder returns the prompt encoder (tests compare its conventions).
func (c *CLIPText) Encoder() *clip.PromptEncoder { return &c.Enc }
