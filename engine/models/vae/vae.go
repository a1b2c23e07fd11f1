// Package vae implements the LDM AutoencoderKL (the SD1/SD2/SDXL image
// autoencoder): Encode maps pixels to latents, Decode maps latents to pixels.
//
// Tensor names are the canonical single-file names under
// "first_stage_model."; diffusers names are converted by weights/keymap.
package vae

import (
	"context"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

const (
	groups = 32
	eps    = 1e-6
)

// Config describes an AutoencoderKL.
type Config struct {
	Channels     int   // base width (encoder.conv_in output)
	ChannelMult  []int // per level
	NumResBlocks int   // per encoder level (decoder levels have one more)
	ZChannels    int   // latent channels (4 for SD1/SD2/SDXL)
	InChannels   int   // image channels (3)
	// HasEncoder is false for decoder-only checkpoints.
	HasEncoder bool
	// ScalingFactor multiplies latents after encoding (SD1: 0.18215); shapes
	// cannot tell it, so the model family sets it.
	ScalingFactor float32
	// ShiftFactor is subtracted from the latents before scaling (Flux:
	// 0.1159; 0 for SD1/SD2/SDXL): sampler latents are (z − shift)·scale.
	// The model family sets it.
	ShiftFactor float32
	// QuantConvs is whether the model has the 1×1 quant_conv and
	// post_quant_conv around the latents (SD1/SD2/SDXL do; the Flux and SD3
	// autoencoders do not).
	QuantConvs bool
}

// SD1ScalingFactor is the SD1.x/SD2.x latent scaling factor.
const SD1ScalingFactor = 0.18215

// Factor is the spatial downsampling factor between pixels and latents.
func (c Config) Factor() int { return 1 << (len(c.ChannelMult) - 1) }

// String is a one-line summary.
func (c Config) String() string {
	enc := ""
	if !c.HasEncoder {
		enc = ", decoder only"
	}
	if c.ShiftFactor != 0 {
		enc = fmt.Sprintf(", shift %g", c.ShiftFactor) + enc
	}
	if !c.QuantConvs {
		enc = ", no quant convs" + enc
	}
	return fmt.Sprintf("channels %d × %v, %d res blocks/level, %d latent channels, factor %d, scaling %g%s",
		c.Channels, c.ChannelMult, c.NumResBlocks, c.ZChannels, c.Factor(), c.ScalingFactor, enc)
}

// ConfigFromWeights infers the configuration from tensor shapes under prefix
// (usually "first_stage_model.").
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(prefix + name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	dIn := shape("decoder.conv_in.weight")
	if len(dIn) != 4 {
		return Config{}, fmt.Errorf("vae: no %sdecoder.conv_in.weight", prefix)
	}
	c := Config{ZChannels: dIn[1], ScalingFactor: SD1ScalingFactor, InChannels: 3}
	c.QuantConvs = shape("post_quant_conv.weight") != nil
	if out := shape("decoder.conv_out.weight"); len(out) == 4 {
		c.InChannels = out[0]
	}
	// Decoder levels: decoder.up.{i}.block.0; widths from each level's last block.
	levels := 0
	for shape(fmt.Sprintf("decoder.up.%d.block.0.conv1.weight", levels)) != nil {
		levels++
	}
	if levels == 0 {
		return Config{}, fmt.Errorf("vae: no %sdecoder.up.0 blocks", prefix)
	}
	blocks := 0
	for shape(fmt.Sprintf("decoder.up.0.block.%d.conv1.weight", blocks)) != nil {
		blocks++
	}
	c.NumResBlocks = blocks - 1
	if c.NumResBlocks < 1 {
		return Config{}, fmt.Errorf("vae: decoder level 0 has %d blocks", blocks)
	}
	widths := make([]int, levels)
	for i := range levels {
		s := shape(fmt.Sprintf("decoder.up.%d.block.0.conv2.weight", i))
		if len(s) != 4 {
			return Config{}, fmt.Errorf("vae: no %sdecoder.up.%d.block.0.conv2.weight", prefix, i)
		}
		widths[i] = s[0]
	}
	c.Channels = widths[0]
	if in := shape("encoder.conv_in.weight"); len(in) == 4 {
		c.HasEncoder = true
		c.Channels = in[0]
	}
	for _, w := range append([]int{c.Channels}, widths...) {
		if w%groups != 0 {
			return Config{}, fmt.Errorf("vae: width %d is not a multiple of the %d GroupNorm groups", w, groups)
		}
	}
	for _, w := range widths {
		if w%c.Channels != 0 {
			return Config{}, fmt.Errorf("vae: level width %d not a multiple of %d", w, c.Channels)
		}
		c.ChannelMult = append(c.ChannelMult, w/c.Channels)
	}
	return c, nil
}

// resBlock is the VAE ResnetBlock: GN-SiLU-conv twice, 1×1 nin_shortcut when widths differ.
type resBlock struct {
	norm1, norm2 *nn.GroupNorm
	conv1, conv2 *nn.Conv2d
	shortcut     *nn.Conv2d
}

func loadResBlock(b *weights.Builder, in, out int) *resBlock {
	r := &resBlock{
		norm1: nn.LoadGroupNorm(b.Sub("norm1"), in, groups, eps),
		conv1: nn.LoadConv2d(b.Sub("conv1"), in, out, 3, 1, 1),
		norm2: nn.LoadGroupNorm(b.Sub("norm2"), out, groups, eps),
		conv2: nn.LoadConv2d(b.Sub("conv2"), out, out, 3, 1, 1),
	}
	if in != out {
		r.shortcut = nn.LoadConv2d(b.Sub("nin_shortcut"), in, out, 1, 1, 0)
	}
	return r
}

func (r *resBlock) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	h := r.conv1.Forward(dev, r.norm1.Forward(dev, x, true))
	skip := x
	if r.shortcut != nil {
		skip = r.shortcut.Forward(dev, x)
	}
	return r.conv2.ForwardAdd(dev, r.norm2.Forward(dev, h, true), skip)
}

// attnBlock is the single-head self-attention over all pixels; q/k/v and
// proj_out are stored as 1×1 convolutions and applied as linear layers.
type attnBlock struct {
	norm             *nn.GroupNorm
	q, k, v, projOut *nn.Linear
}

func loadAttnBlock(b *weights.Builder, ch int) *attnBlock {
	lin := func(name string) *nn.Linear {
		return &nn.Linear{Weight: b.Tensor(name+".weight", ch, ch), Bias: b.Tensor(name+".bias", ch), In: ch, Out: ch}
	}
	return &attnBlock{norm: nn.LoadGroupNorm(b.Sub("norm"), ch, groups, eps), q: lin("q"), k: lin("k"), v: lin("v"), projOut: lin("proj_out")}
}

func (a *attnBlock) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	c, h, w := x.Shape[1], x.Shape[2], x.Shape[3]
	y := a.norm.Forward(dev, x, false)
	q := nn.FromChannels(dev, y, a.q.Weight, a.q.Bias) // [N, HW, C]
	k := nn.FromChannels(dev, y, a.k.Weight, a.k.Bias)
	v := nn.FromChannels(dev, y, a.v.Weight, a.v.Bias)
	o := nn.Attention(dev, q, k, v, backend.AttentionParams{Heads: 1, Scale: float32(1 / math.Sqrt(float64(c)))})
	return nn.ToChannels(dev, o, a.projOut.Weight, a.projOut.Bias, x, h, w)
}

type level struct {
	blocks []*resBlock
	sample *nn.Conv2d // downsample (stride 2, padded (0,1,0,1)) or upsample conv
}

type mid struct {
	block1, block2 *resBlock
	attn           *attnBlock
}

func loadMid(b *weights.Builder, ch int) mid {
	return mid{block1: loadResBlock(b.Sub("block_1"), ch, ch), attn: loadAttnBlock(b.Sub("attn_1"), ch), block2: loadResBlock(b.Sub("block_2"), ch, ch)}
}

func (m mid) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	return m.block2.forward(dev, m.attn.forward(dev, m.block1.forward(dev, x)))
}

// Model is a loaded autoencoder.
type Model struct {
	Config Config
	// decoder
	postQuant *nn.Conv2d
	decIn     *nn.Conv2d
	decMid    mid
	up        []level // indexed by level, as decoder.up.{i}
	decNorm   *nn.GroupNorm
	decOut    *nn.Conv2d
	// encoder (nil when decoder-only)
	quant   *nn.Conv2d
	encIn   *nn.Conv2d
	down    []level
	encMid  mid
	encNorm *nn.GroupNorm
	encOut  *nn.Conv2d
}

// Load builds the autoencoder from b (prefixed at first_stage_model.).
func Load(b *weights.Builder, c Config) *Model {
	m := &Model{Config: c}
	top := c.Channels * c.ChannelMult[len(c.ChannelMult)-1]
	z := c.ZChannels
	if c.HasEncoder {
		e := b.Sub("encoder")
		m.encIn = nn.LoadConv2d(e.Sub("conv_in"), c.InChannels, c.Channels, 3, 1, 1)
		ch := c.Channels
		for i, mult := range c.ChannelMult {
			var lv level
			out := c.Channels * mult
			for j := range c.NumResBlocks {
				lv.blocks = append(lv.blocks, loadResBlock(e.Subf("down.%d.block.%d", i, j), ch, out))
				ch = out
			}
			if i != len(c.ChannelMult)-1 {
				lv.sample = nn.LoadConv2d(e.Subf("down.%d.downsample.conv", i), ch, ch, 3, 2, 0)
				lv.sample.Params = backend.Conv2DParams{StrideH: 2, StrideW: 2, PadBottom: 1, PadRight: 1}
			}
			m.down = append(m.down, lv)
		}
		m.encMid = loadMid(e.Sub("mid"), top)
		m.encNorm = nn.LoadGroupNorm(e.Sub("norm_out"), top, groups, eps)
		m.encOut = nn.LoadConv2d(e.Sub("conv_out"), top, 2*z, 3, 1, 1)
		if c.QuantConvs {
			m.quant = nn.LoadConv2d(b.Sub("quant_conv"), 2*z, 2*z, 1, 1, 0)
		}
	}
	if c.QuantConvs {
		m.postQuant = nn.LoadConv2d(b.Sub("post_quant_conv"), z, z, 1, 1, 0)
	}
	d := b.Sub("decoder")
	m.decIn = nn.LoadConv2d(d.Sub("conv_in"), z, top, 3, 1, 1)
	m.decMid = loadMid(d.Sub("mid"), top)
	m.up = make([]level, len(c.ChannelMult))
	ch := top
	for i := len(c.ChannelMult) - 1; i >= 0; i-- {
		out := c.Channels * c.ChannelMult[i]
		for j := range c.NumResBlocks + 1 {
			m.up[i].blocks = append(m.up[i].blocks, loadResBlock(d.Subf("up.%d.block.%d", i, j), ch, out))
			ch = out
		}
		if i != 0 {
			m.up[i].sample = nn.LoadConv2d(d.Subf("up.%d.upsample.conv", i), ch, ch, 3, 1, 1)
		}
	}
	m.decNorm = nn.LoadGroupNorm(d.Sub("norm_out"), ch, groups, eps)
	m.decOut = nn.LoadConv2d(d.Sub("conv_out"), ch, c.InChannels, 3, 1, 1)
	return m
}

// Decode maps scaled latents [N, Z, h, w] (as the sampler produces them) to
// images [N, 3, h·f, w·f] in [-1, 1] (not clamped).
func (m *Model) Decode(ctx context.Context, dev backend.Device, latents *backend.Tensor) (*backend.Tensor, error) {
	if latents.Shape[1] != m.Config.ZChannels {
		return nil, fmt.Errorf("vae decode: latents have %d channels, the model %d", latents.Shape[1], m.Config.ZChannels)
	}
	z := dev.Alloc(latents.Shape...)
	dev.Affine(z, latents, 1/m.Config.ScalingFactor, m.Config.ShiftFactor)
	if m.postQuant != nil {
		z = m.postQuant.Forward(dev, z)
	}
	h := m.decIn.Forward(dev, z)
	h = m.decMid.forward(dev, h)
	for i := len(m.up) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, blk := range m.up[i].blocks {
			h = blk.forward(dev, h)
		}
		if m.up[i].sample != nil {
			h = m.up[i].sample.Forward(dev, nn.Upsample2x(dev, h))
		}
	}
	return m.decOut.Forward(dev, m.decNorm.Forward(dev, h, true)), nil
}

// Encode maps images [N, 3, H, W] in [-1, 1] to scaled latents
// [N, Z, H/f, W/f], taking the mean of the latent distribution (ComfyUI's
// VAEEncode, and diffusers' sample_mode="argmax").
func (m *Model) Encode(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error) {
	moments, err := m.moments(ctx, dev, img)
	if err != nil {
		return nil, err
	}
	z := m.Config.ZChannels
	mean := dev.Alloc(moments.Shape[0], z, moments.Shape[2], moments.Shape[3])
	dev.Slice(mean, moments, 1, 0)
	dev.Free(moments)
	dev.Affine(mean, mean, m.Config.ScalingFactor, -m.Config.ShiftFactor*m.Config.ScalingFactor)
	return mean, nil
}

// EncodeSample maps images to scaled latents drawn from the latent
// distribution, (mean + std·eps)·scale with std = exp(logvar/2) and the
// log-variance clamped to [−30, 20], as diffusers' DiagonalGaussian
// sample() and img2img pipelines (retrieve_latents' default) compute it;
// eps holds one unit normal per latent value, in [N, Z, h, w] order.
func (m *Model) EncodeSample(ctx context.Context, dev backend.Device, img *backend.Tensor, eps []float32) (*backend.Tensor, error) {
	moments, err := m.moments(ctx, dev, img)
	if err != nil {
		return nil, err
	}
	host, err := dev.Download(moments)
	dev.Free(moments)
	if err != nil {
		return nil, err
	}
	n, z, h, w := moments.Shape[0], m.Config.ZChannels, moments.Shape[2], moments.Shape[3]
	plane := z * h * w
	if len(eps) != n*plane {
		return nil, fmt.Errorf("vae encode: %d noise values for latents [%d %d %d %d]", len(eps), n, z, h, w)
	}
	out := make([]float32, n*plane)
	scale, shift := m.Config.ScalingFactor, m.Config.ShiftFactor
	for b := range n {
		mean, logvar := host[2*b*plane:(2*b+1)*plane], host[(2*b+1)*plane:(2*b+2)*plane]
		for i := range plane {
			lv := min(max(float64(logvar[i]), -30), 20)
			std := float32(math.Exp(0.5 * lv))
			out[b*plane+i] = (mean[i] + std*eps[b*plane+i] - shift) * scale
		}
	}
	return dev.Upload(out, n, z, h, w), nil
}

// moments runs the encoder: [N, 2Z, h, w], the distribution's mean then
// its log-variance, unscaled.
func (m *Model) moments(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error) {
	if !m.Config.HasEncoder {
		return nil, fmt.Errorf("vae encode: this checkpoint has no encoder")
	}
	f := m.Config.Factor()
	if img.Shape[1] != m.Config.InChannels || img.Shape[2]%f != 0 || img.Shape[3]%f != 0 {
		return nil, fmt.Errorf("vae encode: image %v must have %d channels and sides divisible by %d", img.Shape, m.Config.InChannels, f)
	}
	h := m.encIn.Forward(dev, img)
	for _, lv := range m.down {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, blk := range lv.blocks {
			h = blk.forward(dev, h)
		}
		if lv.sample != nil {
			h = lv.sample.Forward(dev, h)
		}
	}
	h = m.encMid.forward(dev, h)
	h = m.encOut.Forward(dev, m.encNorm.Forward(dev, h, true))
	if m.quant != nil {
		h = m.quant.Forward(dev, h)
	}
	return h, nil
}
