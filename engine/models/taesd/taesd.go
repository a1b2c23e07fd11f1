// Package taesd implements TAESD, the tiny convolutional autoencoder for
// Stable Diffusion latent spaces by Ollin Boer Bohan (madebyollin/taesd,
// MIT), and its TAEF2 variant for the FLUX.2 latent space.
//
// Both halves are plain stacks of 3×3 convolutions, ReLUs and residual
// blocks; nothing is normalised except in TAEF2's "mid-block" branch. The
// decoder maps sampler-space latents (the latents as the sampler sees them:
// the VAE latents already multiplied by the family's scaling factor, and
// shifted where the family shifts; no extra scaling, unlike the VAE's
// Decode) to images 8× larger whose values lie in 0..1 (not clamped); the
// encoder maps images in 0..1 back to such latents. The network itself
// works in 0..1: diffusers' AutoencoderTiny and ComfyUI's wrapper map its
// output to -1..1 afterwards, the reference script only clamps it. For
// TAEF2 the latent is the FLUX.2 VAE's 32-channel latent at 1/8 scale,
// before the transformer's 2×2 patchification. Use it for cheap live
// previews and fast drafts; the full VAE is the quality path.
//
// Decoder and encoder are separate checkpoints (taesd_decoder.safetensors,
// taesd_encoder.safetensors, ...). Tensor names are the nn.Sequential
// indices of the reference code: "1.weight", "3.conv.0.weight",
// "3.pool.1.bias", ... The widths are read from the shapes: 4 latent
// channels for SD1/SD2/SDXL (taesd, taesdxl), 16 for SD3 and Flux.1 (taesd3,
// taef1), 32 for FLUX.2 (taef2); 64 hidden channels throughout.
package taesd

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

const (
	// midGroups and midEps are the GroupNorm of the TAEF2 mid-block branch
	// (torch.nn.GroupNorm(4, C) with its default eps).
	midGroups = 4
	midEps    = 1e-5
	// midExpand is the width factor of that branch's hidden layer.
	midExpand = 4
	// clampMagnitude bounds the decoder input softly: tanh(x/3)·3.
	clampMagnitude = 3
)

// Config describes one half (encoder or decoder) of a TAESD.
type Config struct {
	// LatentChannels is the latent width (4, 16 or 32).
	LatentChannels int
	// Channels is the hidden width (64 in every released model).
	Channels int
	// MidBlockGN is set for TAEF2: the three blocks at the lowest
	// resolution add a 1×1 conv → GroupNorm(4) → ReLU → 1×1 conv branch to
	// their input.
	MidBlockGN bool
}

// String is a one-line summary.
func (c Config) String() string {
	s := fmt.Sprintf("%d latent channels, %d hidden", c.LatentChannels, c.Channels)
	if c.MidBlockGN {
		s += ", mid-block GroupNorm (TAEF2)"
	}
	return s
}

// Factor is the spatial scale between pixels and latents.
const Factor = 8

// Sequential indices of the layers with weights. The decoder is
// Clamp, conv, ReLU, 3 blocks, (upsample, conv, 3 blocks) ×2, upsample,
// conv, block, conv; the encoder is conv, block, (stride-2 conv, 3 blocks)
// ×3, conv.
const (
	decIn  = 1
	decOut = 19
	encIn  = 0
	encOut = 14
)

var (
	// decLevels are the decoder's levels, lowest resolution first: the
	// indices of their blocks and of the bias-free conv after the 2×
	// upsample that ends them (the last level ends with decOut instead).
	decLevels = []level{
		{blocks: []int{3, 4, 5}, conv: 7},
		{blocks: []int{8, 9, 10}, conv: 12},
		{blocks: []int{13, 14, 15}, conv: 17},
		{blocks: []int{18}, conv: -1},
	}
	// encLevels are the encoder's levels, highest resolution first: the
	// index of the bias-free stride-2 conv that starts them (-1: none) and
	// of their blocks.
	encLevels = []level{
		{conv: -1, blocks: []int{1}},
		{conv: 2, blocks: []int{3, 4, 5}},
		{conv: 6, blocks: []int{7, 8, 9}},
		{conv: 10, blocks: []int{11, 12, 13}},
	}
)

type level struct {
	blocks []int
	conv   int
}

// DecoderConfigFromWeights infers a decoder's configuration from the tensor
// shapes under prefix (usually "").
func DecoderConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	in, ok := src.Info(fmt.Sprintf("%s%d.weight", prefix, decIn))
	if !ok || len(in.Shape) != 4 {
		return Config{}, fmt.Errorf("taesd: no decoder input conv %s%d.weight", prefix, decIn)
	}
	if out, ok := src.Info(fmt.Sprintf("%s%d.weight", prefix, decOut)); !ok || len(out.Shape) != 4 || out.Shape[0] != 3 {
		return Config{}, fmt.Errorf("taesd: no 3-channel decoder output conv %s%d.weight (not an 8× TAESD decoder)", prefix, decOut)
	}
	_, gn := src.Info(fmt.Sprintf("%s%d.pool.0.weight", prefix, decLevels[0].blocks[0]))
	return Config{LatentChannels: in.Shape[1], Channels: in.Shape[0], MidBlockGN: gn}, nil
}

// EncoderConfigFromWeights infers an encoder's configuration from the tensor
// shapes under prefix (usually "").
func EncoderConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	in, ok := src.Info(fmt.Sprintf("%s%d.weight", prefix, encIn))
	if !ok || len(in.Shape) != 4 || in.Shape[1] != 3 {
		return Config{}, fmt.Errorf("taesd: no 3-channel encoder input conv %s%d.weight", prefix, encIn)
	}
	out, ok := src.Info(fmt.Sprintf("%s%d.weight", prefix, encOut))
	if !ok || len(out.Shape) != 4 {
		return Config{}, fmt.Errorf("taesd: no encoder output conv %s%d.weight (not an 8× TAESD encoder)", prefix, encOut)
	}
	last := encLevels[len(encLevels)-1].blocks[0]
	_, gn := src.Info(fmt.Sprintf("%s%d.pool.0.weight", prefix, last))
	return Config{LatentChannels: out.Shape[0], Channels: in.Shape[0], MidBlockGN: gn}, nil
}

// loadConv reads a 3×3 convolution (padding 1) with a bias.
func loadConv(b *weights.Builder, in, out, stride int) *nn.Conv2d {
	return nn.LoadConv2d(b, in, out, 3, stride, 1)
}

// loadConvNoBias reads a k×k convolution (padding k/2) that has no bias.
func loadConvNoBias(b *weights.Builder, in, out, k, stride int) *nn.Conv2d {
	return &nn.Conv2d{
		Weight: b.Tensor("weight", out, in, k, k),
		Out:    out, K: k,
		Params: backend.Conv2DSame(stride, k/2),
	}
}

// midBlock is TAEF2's "pool" branch: expand (pool.0, 1×1, no bias),
// norm (pool.1), ReLU (pool.2, no weights), project (pool.3, 1×1, no bias).
// Despite its name it does not pool; the GroupNorm statistics span the
// whole image, which is what gives the blocks a global view.
type midBlock struct {
	expand  *nn.Conv2d
	norm    *nn.GroupNorm
	project *nn.Conv2d
}

func loadMidBlock(b *weights.Builder, ch int) *midBlock {
	hidden := ch * midExpand
	return &midBlock{
		expand:  loadConvNoBias(b.Sub("0"), ch, hidden, 1, 1),
		norm:    nn.LoadGroupNorm(b.Sub("1"), hidden, midGroups, midEps),
		project: loadConvNoBias(b.Sub("3"), hidden, ch, 1, 1),
	}
}

// forward returns x + branch(x).
func (m *midBlock) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	h := m.expand.Forward(dev, x)     // [N, 4C, H, W]
	h = m.norm.Forward(dev, h, false) // GroupNorm(4), statistics over the whole image
	dev.Unary(backend.ReLU, h, h)
	h = m.project.Forward(dev, h) // [N, C, H, W]
	dev.Binary(backend.Add, h, h, x)
	return h
}

// block is the residual Block(in, out):
// ReLU(conv.4(ReLU(conv.2(ReLU(conv.0(x))))) + skip(x)). The ReLUs
// (conv.1, conv.3, fuse) have no weights; skip is a bias-free 1×1 conv when
// the widths differ and the identity (no weights) otherwise.
type block struct {
	conv0, conv2, conv4 *nn.Conv2d
	skip                *nn.Conv2d
	pool                *midBlock // TAEF2 only
}

func loadBlock(b *weights.Builder, in, out int, midGN bool) *block {
	blk := &block{
		conv0: loadConv(b.Sub("conv.0"), in, out, 1),
		conv2: loadConv(b.Sub("conv.2"), out, out, 1),
		conv4: loadConv(b.Sub("conv.4"), out, out, 1),
	}
	if in != out {
		blk.skip = loadConvNoBias(b.Sub("skip"), in, out, 1, 1)
	}
	if midGN {
		blk.pool = loadMidBlock(b.Sub("pool"), in)
	}
	return blk
}

func (blk *block) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	if blk.pool != nil {
		x = blk.pool.forward(dev, x) // x + pool(x)
	}
	h := blk.conv0.Forward(dev, x) // [N, out, H, W]
	dev.Unary(backend.ReLU, h, h)
	h = blk.conv2.Forward(dev, h)
	dev.Unary(backend.ReLU, h, h)
	h = blk.conv4.Forward(dev, h)
	skip := x
	if blk.skip != nil {
		skip = blk.skip.Forward(dev, x)
	}
	dev.Binary(backend.Add, h, h, skip)
	dev.Unary(backend.ReLU, h, h) // fuse
	return h
}

func loadBlocks(b *weights.Builder, idx []int, ch int, midGN bool) []*block {
	out := make([]*block, len(idx))
	for i, n := range idx {
		out[i] = loadBlock(b.Subf("%d", n), ch, ch, midGN)
	}
	return out
}

func forwardBlocks(dev backend.Device, blocks []*block, x *backend.Tensor) *backend.Tensor {
	for _, blk := range blocks {
		x = blk.forward(dev, x)
	}
	return x
}

// build loads a half with weights.NewBuilder and checks that every tensor
// was found and used.
func build[T any](src weights.Source, dev backend.Device, load func(*weights.Builder) T) (T, error) {
	b := weights.NewBuilder(src, dev)
	m := load(b)
	if err := b.Err(); err != nil {
		var zero T
		return zero, err
	}
	if unused := b.Unused(""); len(unused) > 0 {
		var zero T
		return zero, fmt.Errorf("%d unexpected tensors (first %q): not a TAESD of this layout", len(unused), unused[0])
	}
	return m, nil
}
