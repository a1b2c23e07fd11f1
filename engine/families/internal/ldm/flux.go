package ldm

import (
	"encoding/json"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/flux"
)

// FluxLatentFormat is the latent space of the Flux autoencoder (Flux.1,
// Z-Image, Chroma): 16 channels, factor 8, scale 0.3611
// and shift 0.1159, ComfyUI's latent→RGB factors for Flux and TAEF1.
func FluxLatentFormat() family.LatentFormat {
	return family.LatentFormat{
		Channels: 16, Factor: 8, Scale: 0.3611, Shift: 0.1159,
		RGB: [][3]float32{
			{-0.0346, 0.0244, 0.0681}, {0.0034, 0.0210, 0.0687}, {0.0275, -0.0668, -0.0433}, {-0.0174, 0.0160, 0.0617},
			{0.0859, 0.0721, 0.0329}, {0.0004, 0.0383, 0.0115}, {0.0405, 0.0861, 0.0915}, {-0.0236, -0.0185, -0.0259},
			{-0.0245, 0.0250, 0.1180}, {0.1008, 0.0755, -0.0421}, {-0.0515, 0.0201, 0.0011}, {0.0428, -0.0012, -0.0036},
			{0.0817, 0.0765, 0.0749}, {-0.1264, -0.0522, -0.1103}, {-0.0280, -0.0881, -0.0499}, {-0.1262, -0.0982, -0.0778},
		},
		RGBBias: [3]float32{-0.0329, -0.0718, -0.0851},
		TAESD:   "taef1_decoder.safetensors",
	}
}

// ReadRopeAxes takes a Flux-stack transformer's RoPE axes from a diffusers
// folder's transformer/config.json (axes_dims_rope; Flux.1, Qwen-Image):
// shapes cannot tell them, and single files only come with the released
// models' head dim 128, whose axes flux.ConfigFromWeights sets.
func ReadRopeAxes(src *family.Source, c *flux.Config) error {
	b, ok := src.JSON["transformer/config.json"]
	if !ok {
		return nil
	}
	var cfg struct {
		Axes []int `json:"axes_dims_rope"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("transformer/config.json: %w", err)
	}
	if cfg.Axes == nil {
		return nil
	}
	sum := 0
	for _, a := range cfg.Axes {
		if a <= 0 || a%2 != 0 {
			return fmt.Errorf("transformer/config.json: axes_dims_rope %v: each must be even and positive", cfg.Axes)
		}
		sum += a
	}
	if len(cfg.Axes) != 3 || sum != c.HeadDim {
		return fmt.Errorf("transformer/config.json: axes_dims_rope %v: want 3 axes summing to the head dim %d", cfg.Axes, c.HeadDim)
	}
	c.AxesDim = cfg.Axes
	return nil
}
