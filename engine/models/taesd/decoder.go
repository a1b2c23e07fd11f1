package taesd

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Decoder maps latents to images.
type Decoder struct {
	Config Config
	in     *nn.Conv2d // 1: latent → hidden (0 is the weightless Clamp, 2 a ReLU)
	levels []decLevel
	out    *nn.Conv2d // 19: hidden → RGB
}

type decLevel struct {
	blocks []*block
	up     *nn.Conv2d // bias-free conv after the 2× nearest upsample (nil: last level)
}

// LoadDecoder builds a decoder from b (whose prefix holds "1.weight", ...).
// Missing or misshaped tensors are recorded in b (see Builder.Err).
func LoadDecoder(b *weights.Builder, c Config) *Decoder {
	ch := c.Channels
	d := &Decoder{
		Config: c,
		in:     loadConv(b.Subf("%d", decIn), c.LatentChannels, ch, 1),
		out:    loadConv(b.Subf("%d", decOut), ch, 3, 1),
	}
	for i, lv := range decLevels {
		dl := decLevel{blocks: loadBlocks(b, lv.blocks, ch, c.MidBlockGN && i == 0)}
		if lv.conv >= 0 {
			dl.up = loadConvNoBias(b.Subf("%d", lv.conv), ch, ch, 3, 1)
		}
		d.levels = append(d.levels, dl)
	}
	return d
}

// NewDecoder infers the configuration from src, uploads the weights to dev
// and checks that src holds exactly a TAESD decoder's tensors.
func NewDecoder(src weights.Source, dev backend.Device) (*Decoder, error) {
	c, err := DecoderConfigFromWeights(src, "")
	if err != nil {
		return nil, err
	}
	d, err := build(src, dev, func(b *weights.Builder) *Decoder { return LoadDecoder(b, c) })
	if err != nil {
		return nil, fmt.Errorf("taesd decoder: %w", err)
	}
	return d, nil
}

// Decode maps sampler-space latents [N, C, h, w] to images [N, 3, 8h, 8w]
// whose values lie approximately in 0..1; they are not clamped (clamp to
// 0..1 before quantising, as the reference does).
func (d *Decoder) Decode(ctx context.Context, dev backend.Device, latents *backend.Tensor) (*backend.Tensor, error) {
	if len(latents.Shape) != 4 || latents.Shape[1] != d.Config.LatentChannels {
		return nil, fmt.Errorf("taesd decode: latents %v, want [N, %d, h, w]", latents.Shape, d.Config.LatentChannels)
	}
	// Clamp: tanh(x/3)·3 bounds outliers softly.
	x := dev.Alloc(latents.Shape...)
	dev.Affine(x, latents, 1.0/clampMagnitude, 0)
	dev.Unary(backend.Tanh, x, x)
	dev.Affine(x, x, clampMagnitude, 0)
	h := d.in.Forward(dev, x) // [N, 64, h, w]
	dev.Unary(backend.ReLU, h, h)
	for _, lv := range d.levels {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h = forwardBlocks(dev, lv.blocks, h)
		if lv.up != nil {
			h = lv.up.Forward(dev, nn.Upsample2x(dev, h)) // [N, 64, 2H, 2W]
		}
	}
	return d.out.Forward(dev, h), nil // [N, 3, 8h, 8w]
}
