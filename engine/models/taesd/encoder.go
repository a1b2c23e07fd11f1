package taesd

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Encoder maps images to latents.
type Encoder struct {
	Config Config
	in     *nn.Conv2d // 0: RGB → hidden
	levels []encLevel
	out    *nn.Conv2d // 14: hidden → latent
}

type encLevel struct {
	down   *nn.Conv2d // bias-free stride-2 conv (nil: first level)
	blocks []*block
}

// LoadEncoder builds an encoder from b (whose prefix holds "0.weight", ...).
// Missing or misshaped tensors are recorded in b (see Builder.Err).
func LoadEncoder(b *weights.Builder, c Config) *Encoder {
	ch := c.Channels
	e := &Encoder{
		Config: c,
		in:     loadConv(b.Subf("%d", encIn), 3, ch, 1),
		out:    loadConv(b.Subf("%d", encOut), ch, c.LatentChannels, 1),
	}
	for i, lv := range encLevels {
		var el encLevel
		if lv.conv >= 0 {
			el.down = loadConvNoBias(b.Subf("%d", lv.conv), ch, ch, 3, 2)
		}
		el.blocks = loadBlocks(b, lv.blocks, ch, c.MidBlockGN && i == len(encLevels)-1)
		e.levels = append(e.levels, el)
	}
	return e
}

// NewEncoder infers the configuration from src, uploads the weights to dev
// and checks that src holds exactly a TAESD encoder's tensors.
func NewEncoder(src weights.Source, dev backend.Device) (*Encoder, error) {
	c, err := EncoderConfigFromWeights(src, "")
	if err != nil {
		return nil, err
	}
	e, err := build(src, dev, func(b *weights.Builder) *Encoder { return LoadEncoder(b, c) })
	if err != nil {
		return nil, fmt.Errorf("taesd encoder: %w", err)
	}
	return e, nil
}

// Encode maps images [N, 3, H, W] in 0..1 to sampler-space latents
// [N, C, H/8, W/8]. H and W must be multiples of 8.
func (e *Encoder) Encode(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error) {
	if len(img.Shape) != 4 || img.Shape[1] != 3 || img.Shape[2]%Factor != 0 || img.Shape[3]%Factor != 0 {
		return nil, fmt.Errorf("taesd encode: image %v, want [N, 3, H, W] with sides divisible by %d", img.Shape, Factor)
	}
	h := e.in.Forward(dev, img) // [N, 64, H, W]
	for _, lv := range e.levels {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if lv.down != nil {
			h = lv.down.Forward(dev, h) // [N, 64, H/2, W/2]
		}
		h = forwardBlocks(dev, lv.blocks, h)
	}
	return e.out.Forward(dev, h), nil // [N, C, H/8, W/8]
}
