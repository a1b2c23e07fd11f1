// Package wanvae implements Qwen-Image's autoencoder, the Wan 2.1 video
// VAE (diffusers' AutoencoderKLQwenImage, ComfyUI's comfy/ldm/wan/vae.py),
// for still images: Decode maps [B, 16, h, w] latents to [B, 3, 8h, 8w]
// pixels and Encode maps pixels to the latent distribution's mean.
//
// The network is built from causal 3-D convolutions. An image is a video
// of one frame, and on one frame every causal convolution is an ordinary
// 2-D convolution with the kernel's last temporal slice: a causal
// convolution with a temporal kernel of kt = 2p+1 taps pads the time axis
// with 2p zero frames in front (none behind), so the single output frame
// of a one-frame input reads padded frames 0…2p, of which only frame 2p —
// the input, met by tap 2p = kt−1 — is non-zero; its spatial padding is
// the 2-D convolution's. The temporal resamplers (time_conv, in the
// upsamplers and downsamplers that diffusers' temperal_downsample marks)
// are skipped for the first frame of a video (diffusers' and ComfyUI's
// feature cache is empty then), so an image never reaches them: their
// weights are claimed, not loaded. The norms are RMS norms over the
// channels (F.normalize(x, dim=1)·√C·γ), computed as backend.RMSNorm over
// channels-last rows.
//
// Two tensor layouts load: diffusers' names (encoder.down_blocks.N,
// decoder.up_blocks.I.resnets.J, mid_block, quant_conv, post_quant_conv)
// and the original Wan names ComfyUI's qwen_image_vae.safetensors and
// wan_2.1_vae.safetensors use (encoder.downsamples.N.residual.K,
// decoder.upsamples.N, middle.K, head.K, conv1/conv2).
package wanvae

import (
	"context"
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Layout is a naming of the autoencoder's tensors.
type Layout int

// Layouts.
const (
	// Diffusers is AutoencoderKLQwenImage's (and AutoencoderKLWan's)
	// state dict: encoder.conv_in, encoder.down_blocks.N,
	// decoder.up_blocks.I.resnets.J, …, quant_conv, post_quant_conv.
	Diffusers Layout = iota
	// Wan is the original Wan 2.1 naming that ComfyUI's files keep:
	// encoder.conv1, encoder.downsamples.N.residual.K, middle.K, head.K,
	// decoder.upsamples.N, conv1 (quant) and conv2 (post-quant).
	Wan
)

// String names the layout.
func (l Layout) String() string {
	if l == Wan {
		return "Wan names"
	}
	return "diffusers names"
}

// QwenImageLatentsMean and QwenImageLatentsStd are Qwen-Image's
// per-channel latent statistics (the vae config's latents_mean and
// latents_std; diffusers' AutoencoderKLQwenImage defaults).
var (
	QwenImageLatentsMean = []float32{-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921}
	QwenImageLatentsStd  = []float32{2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160}
)

// Config describes the autoencoder.
type Config struct {
	// BaseDim is the encoder's first width (diffusers' base_dim, 96).
	BaseDim int
	// DimMult are the per-level width multipliers ([1 2 4 4]).
	DimMult []int
	// NumResBlocks is the residual blocks per encoder level (decoder
	// levels have one more).
	NumResBlocks int
	// ZChannels is the latent channels (16).
	ZChannels int
	// InChannels is the image channels (3).
	InChannels int
	// TemporalDownsample marks the encoder's resamplers that also
	// downsample time (diffusers' temperal_downsample, [false true true]);
	// the decoder's upsamplers are marked in reverse. An image never
	// reaches those temporal convolutions: the flags only say which
	// time_conv tensors the checkpoint holds.
	TemporalDownsample []bool
	// HasEncoder is false for decoder-only checkpoints.
	HasEncoder bool
	// Layout is the tensor naming.
	Layout Layout
	// LatentsMean and LatentsStd (ZChannels values each) map VAE latents
	// z to sampler latents (z − mean)/std, as the Qwen-Image pipelines
	// do; shapes cannot tell them, so ConfigFromWeights sets Qwen-Image's.
	LatentsMean, LatentsStd []float32
}

// Factor is the spatial downsampling factor between pixels and latents.
func (c Config) Factor() int { return 1 << (len(c.DimMult) - 1) }

// String is a one-line summary.
func (c Config) String() string {
	enc := ""
	if !c.HasEncoder {
		enc = ", decoder only"
	}
	return fmt.Sprintf("base %d × %v, %d res blocks/level, %d latent channels, factor %d, temporal downsample %v, %s%s",
		c.BaseDim, c.DimMult, c.NumResBlocks, c.ZChannels, c.Factor(), c.TemporalDownsample, c.Layout, enc)
}

// names maps the model's parts to a layout's tensor names (prefix and
// trailing dot included).
type names struct {
	l      Layout
	prefix string
	blocks int // NumResBlocks, for the Wan decoder's flat indices
}

func (n names) encConvIn() string { return n.pick("encoder.conv_in.", "encoder.conv1.") }
func (n names) decConvIn() string { return n.pick("decoder.conv_in.", "decoder.conv1.") }
func (n names) quant() string     { return n.pick("quant_conv.", "conv1.") }
func (n names) postQuant() string { return n.pick("post_quant_conv.", "conv2.") }

func (n names) pick(diffusers, wan string) string {
	if n.l == Wan {
		return n.prefix + wan
	}
	return n.prefix + diffusers
}

// encLayer is the encoder's k-th down block (residual block or resampler,
// counted together in both layouts).
func (n names) encLayer(k int) string {
	return n.pick(fmt.Sprintf("encoder.down_blocks.%d.", k), fmt.Sprintf("encoder.downsamples.%d.", k))
}

// decRes is residual block j of decoder level i.
func (n names) decRes(i, j int) string {
	return n.pick(fmt.Sprintf("decoder.up_blocks.%d.resnets.%d.", i, j), fmt.Sprintf("decoder.upsamples.%d.", i*(n.blocks+2)+j))
}

// decUp is decoder level i's upsampler.
func (n names) decUp(i int) string {
	return n.pick(fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.", i), fmt.Sprintf("decoder.upsamples.%d.", i*(n.blocks+2)+n.blocks+1))
}

// mid is part k of a middle block (0 and 2 residual blocks, 1 attention).
func (n names) mid(side string, k int) string {
	if n.l == Wan {
		return fmt.Sprintf("%s%s.middle.%d.", n.prefix, side, k)
	}
	if k == 1 {
		return fmt.Sprintf("%s%s.mid_block.attentions.0.", n.prefix, side)
	}
	return fmt.Sprintf("%s%s.mid_block.resnets.%d.", n.prefix, side, k/2)
}

// normOut and convOut are side's ("encoder", "decoder") head.
func (n names) normOut(side string) string {
	return n.pick(side+".norm_out.", side+".head.0.")
}

func (n names) convOut(side string) string {
	return n.pick(side+".conv_out.", side+".head.2.")
}

// Residual block parts.
func (n names) norm1() string    { return n.pickRel("norm1.", "residual.0.") }
func (n names) conv1() string    { return n.pickRel("conv1.", "residual.2.") }
func (n names) norm2() string    { return n.pickRel("norm2.", "residual.3.") }
func (n names) conv2() string    { return n.pickRel("conv2.", "residual.6.") }
func (n names) shortcut() string { return n.pickRel("conv_shortcut.", "shortcut.") }

func (n names) pickRel(diffusers, wan string) string {
	if n.l == Wan {
		return wan
	}
	return diffusers
}

// ConfigFromWeights infers the configuration from tensor shapes under
// prefix (usually "", or "vae."/"first_stage_model." in a bundle), in
// either layout.
func ConfigFromWeights(src weights.Source, prefix string) (Config, error) {
	shape := func(name string) []int {
		info, ok := src.Info(name)
		if !ok {
			return nil
		}
		return info.Shape
	}
	n := names{prefix: prefix}
	switch {
	case shape(prefix+"decoder.conv_in.weight") != nil:
		n.l = Diffusers
	case shape(prefix+"decoder.conv1.weight") != nil:
		n.l = Wan
	default:
		return Config{}, fmt.Errorf("wanvae: no %sdecoder.conv_in.weight or %sdecoder.conv1.weight", prefix, prefix)
	}
	c := Config{Layout: n.l, InChannels: 3, LatentsMean: QwenImageLatentsMean, LatentsStd: QwenImageLatentsStd}
	dIn := shape(n.decConvIn() + "weight")
	dOut := shape(n.convOut("decoder") + "weight")
	if len(dIn) != 5 || len(dOut) != 5 {
		return Config{}, fmt.Errorf("wanvae: decoder conv_in %v / conv_out %v are not 3-D convolution kernels", dIn, dOut)
	}
	c.ZChannels, c.InChannels, c.BaseDim = dIn[1], dOut[0], dOut[1]

	// Decoder levels: widths from each level's first residual block; the
	// upsamplers with a time_conv upsample time.
	var widths []int
	var up []bool
	if n.l == Diffusers {
		for shape(fmt.Sprintf("%sdecoder.up_blocks.%d.resnets.0.conv1.weight", prefix, len(widths))) != nil {
			widths = append(widths, 0)
		}
		if len(widths) == 0 {
			return Config{}, fmt.Errorf("wanvae: no %sdecoder.up_blocks.0", prefix)
		}
		for shape(fmt.Sprintf("%sdecoder.up_blocks.0.resnets.%d.conv1.weight", prefix, c.NumResBlocks+1)) != nil {
			c.NumResBlocks++
		}
	} else {
		// The flat decoder.upsamples list: NumResBlocks+1 residual blocks,
		// then a resampler, per level but the last.
		var kinds []byte
		for k := 0; ; k++ {
			at := fmt.Sprintf("%sdecoder.upsamples.%d.", prefix, k)
			if shape(at+"residual.2.weight") != nil {
				kinds = append(kinds, 'r')
			} else if shape(at+"resample.1.weight") != nil {
				kinds = append(kinds, 's')
			} else {
				break
			}
		}
		per := 0
		for per < len(kinds) && kinds[per] == 'r' {
			per++
		}
		if per < 2 || (len(kinds)+1)%(per+1) != 0 {
			return Config{}, fmt.Errorf("wanvae: %sdecoder.upsamples holds %d layers (%s), not levels of residual blocks and resamplers", prefix, len(kinds), kinds)
		}
		c.NumResBlocks = per - 1
		widths = make([]int, (len(kinds)+1)/(per+1))
		for k, kind := range kinds {
			if want := byte('r'); k%(per+1) == per {
				want = 's'
				if kind != want {
					return Config{}, fmt.Errorf("wanvae: %sdecoder.upsamples.%d is not a resampler", prefix, k)
				}
			} else if kind != want {
				return Config{}, fmt.Errorf("wanvae: %sdecoder.upsamples.%d is not a residual block", prefix, k)
			}
		}
	}
	if c.NumResBlocks < 1 {
		return Config{}, fmt.Errorf("wanvae: decoder level 0 has %d residual blocks", c.NumResBlocks+1)
	}
	n.blocks = c.NumResBlocks
	for i := range widths {
		s := shape(n.decRes(i, 0) + n.conv1() + "weight")
		if len(s) != 5 {
			return Config{}, fmt.Errorf("wanvae: no %s%sweight", n.decRes(i, 0), n.conv1())
		}
		widths[i] = s[0]
		if i != len(widths)-1 {
			up = append(up, shape(n.decUp(i)+"time_conv.weight") != nil)
		}
	}
	if in := shape(n.encConvIn() + "weight"); len(in) == 5 {
		c.HasEncoder = true
		c.BaseDim = in[0]
	}
	c.DimMult = make([]int, len(widths))
	for i, w := range widths {
		if w%c.BaseDim != 0 {
			return Config{}, fmt.Errorf("wanvae: level width %d not a multiple of %d", w, c.BaseDim)
		}
		c.DimMult[len(widths)-1-i] = w / c.BaseDim
	}
	c.TemporalDownsample = make([]bool, len(up))
	for i, u := range up {
		c.TemporalDownsample[len(up)-1-i] = u
	}
	if c.HasEncoder {
		// The encoder's own flags: its downsamplers with a time_conv.
		k := 0
		for i := range len(c.DimMult) - 1 {
			k += c.NumResBlocks
			c.TemporalDownsample[i] = shape(n.encLayer(k)+"time_conv.weight") != nil
			k++
		}
	}
	return c, nil
}

// conv is a causal 3-D convolution applied to one frame: a 2-D
// convolution with the kernel's last temporal slice.
type conv struct{ *nn.Conv2d }

// loadConv reads a causal 3-D convolution [out, in, k, k, k] (k = 1 or 3,
// spatial padding k/2) under at, keeping its last temporal slice.
func loadConv(b *weights.Builder, at string, in, out, k int) conv {
	return conv{&nn.Conv2d{
		Weight: b.Select(at+"weight", 2, k-1, out, in, k, k, k),
		Bias:   b.Tensor(at+"bias", out),
		Out:    out, K: k,
		Params: backend.Conv2DSame(1, k/2),
	}}
}

// rmsNorm is the RMS norm over channels, F.normalize(x, dim=1)·√C·γ.
type rmsNorm struct{ gamma *backend.Tensor }

// rmsEps makes RMSNorm's 1/sqrt(mean(x²)+eps) F.normalize's
// 1/max(‖x‖, 1e-12) (times √C) to within 1e-24 of ‖x‖².
func rmsEps(c int) float32 { return float32(1e-24 / float64(c)) }

func loadNorm(b *weights.Builder, at string, c int) rmsNorm {
	return rmsNorm{gamma: b.Tensor(at+"gamma", c)}
}

// forward normalises x [N, C, H, W] over C, followed by SiLU when silu.
func (r rmsNorm) forward(dev backend.Device, x *backend.Tensor, silu bool) *backend.Tensor {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	t := dev.Alloc(n, h, w, c)
	dev.Permute(t, x, 0, 2, 3, 1)
	u := dev.Alloc(n, h, w, c)
	dev.RMSNorm(u, t, r.gamma, rmsEps(c))
	dev.Free(t)
	y := dev.Alloc(n, c, h, w)
	dev.Permute(y, u, 0, 3, 1, 2)
	dev.Free(u)
	if silu {
		dev.Unary(backend.SiLU, y, y)
	}
	return y
}

// resBlock is the residual block: RMS-SiLU-conv twice, plus x (through a
// 1×1 shortcut when the widths differ).
type resBlock struct {
	norm1, norm2 rmsNorm
	conv1, conv2 conv
	shortcut     *conv
}

func loadResBlock(b *weights.Builder, n names, at string, in, out int) *resBlock {
	r := &resBlock{
		norm1: loadNorm(b, at+n.norm1(), in),
		conv1: loadConv(b, at+n.conv1(), in, out, 3),
		norm2: loadNorm(b, at+n.norm2(), out),
		conv2: loadConv(b, at+n.conv2(), out, out, 3),
	}
	if in != out {
		s := loadConv(b, at+n.shortcut(), in, out, 1)
		r.shortcut = &s
	}
	return r
}

func (r *resBlock) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	h := r.norm1.forward(dev, x, true)
	a := r.conv1.Forward(dev, h)
	dev.Free(h)
	h = r.norm2.forward(dev, a, true)
	dev.Free(a)
	skip := x
	if r.shortcut != nil {
		skip = r.shortcut.Forward(dev, x)
	}
	y := r.conv2.ForwardAdd(dev, h, skip)
	dev.Free(h)
	if r.shortcut != nil {
		dev.Free(skip)
	}
	return y
}

// attnBlock is the middle block's single-head self-attention over the
// pixels: an RMS norm, the fused 1×1 to_qkv convolution (q, k, v in that
// order along its outputs), attention and the 1×1 proj, plus x.
type attnBlock struct {
	norm       rmsNorm
	q, k, v    *backend.Tensor // [C, C, 1, 1]
	qb, kb, vb *backend.Tensor
	proj, pb   *backend.Tensor
}

func loadAttn(b *weights.Builder, at string, c int) *attnBlock {
	a := &attnBlock{norm: loadNorm(b, at+"norm.", c)}
	w := b.Split(at+"to_qkv.weight", 3, c, c, 1, 1)
	bias := b.Split(at+"to_qkv.bias", 3, c)
	a.q, a.k, a.v = w[0], w[1], w[2]
	a.qb, a.kb, a.vb = bias[0], bias[1], bias[2]
	a.proj = b.Tensor(at+"proj.weight", c, c)
	a.pb = b.Tensor(at+"proj.bias", c)
	return a
}

func (a *attnBlock) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	c, h, w := x.Shape[1], x.Shape[2], x.Shape[3]
	y := a.norm.forward(dev, x, false)
	q := nn.FromChannels(dev, y, a.q, a.qb) // [N, HW, C]
	k := nn.FromChannels(dev, y, a.k, a.kb)
	v := nn.FromChannels(dev, y, a.v, a.vb)
	dev.Free(y)
	o := nn.Attention(dev, q, k, v, backend.AttentionParams{Heads: 1, Scale: float32(1 / math.Sqrt(float64(c)))})
	dev.Free(q)
	dev.Free(k)
	dev.Free(v)
	out := nn.ToChannels(dev, o, a.proj, a.pb, x, h, w)
	dev.Free(o)
	return out
}

// middle is the middle block: residual, attention, residual.
type middle struct {
	res0, res1 *resBlock
	attn       *attnBlock
}

func loadMiddle(b *weights.Builder, n names, side string, c int) middle {
	return middle{
		res0: loadResBlock(b, n, n.mid(side, 0), c, c),
		attn: loadAttn(b, n.mid(side, 1), c),
		res1: loadResBlock(b, n, n.mid(side, 2), c, c),
	}
}

func (m middle) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	h := m.res0.forward(dev, x)
	a := m.attn.forward(dev, h)
	dev.Free(h)
	h = m.res1.forward(dev, a)
	dev.Free(a)
	return h
}

// level is an encoder or decoder level: residual blocks and the 2-D part
// of its resampler (nil for the last level).
type level struct {
	blocks []*resBlock
	sample *nn.Conv2d
}

// Model is a loaded autoencoder.
type Model struct {
	Config Config
	// decoder
	postQuant, decIn conv
	decMid           middle
	up               []level
	decNorm          rmsNorm
	decOut           conv
	// encoder (zero when decoder-only)
	encIn   conv
	down    []level
	encMid  middle
	encNorm rmsNorm
	encOut  conv
	quant   conv
}

// Load builds the autoencoder from b, prefixed where ConfigFromWeights
// was given a prefix (b.Sub("vae") for "vae.").
func Load(b *weights.Builder, c Config) *Model {
	m := &Model{Config: c}
	n := names{l: c.Layout, blocks: c.NumResBlocks}
	top := c.BaseDim * c.DimMult[len(c.DimMult)-1]
	z := c.ZChannels
	if c.HasEncoder {
		m.encIn = loadConv(b, n.encConvIn(), c.InChannels, c.BaseDim, 3)
		in, k := c.BaseDim, 0
		for i, mult := range c.DimMult {
			var lv level
			out := c.BaseDim * mult
			for range c.NumResBlocks {
				lv.blocks = append(lv.blocks, loadResBlock(b, n, n.encLayer(k), in, out))
				in = out
				k++
			}
			if i != len(c.DimMult)-1 {
				at := n.encLayer(k)
				lv.sample = &nn.Conv2d{
					Weight: b.Tensor(at+"resample.1.weight", out, out, 3, 3),
					Bias:   b.Tensor(at+"resample.1.bias", out),
					Out:    out, K: 3,
					// nn.ZeroPad2d((0, 1, 0, 1)) then a stride-2 3×3 convolution.
					Params: backend.Conv2DParams{StrideH: 2, StrideW: 2, PadBottom: 1, PadRight: 1},
				}
				if i < len(c.TemporalDownsample) && c.TemporalDownsample[i] {
					b.Claim(at + "time_conv.weight")
					b.Claim(at + "time_conv.bias")
				}
				k++
			}
			m.down = append(m.down, lv)
		}
		m.encMid = loadMiddle(b, n, "encoder", top)
		m.encNorm = loadNorm(b, n.normOut("encoder"), top)
		m.encOut = loadConv(b, n.convOut("encoder"), top, 2*z, 3)
		m.quant = loadConv(b, n.quant(), 2*z, 2*z, 1)
	}
	m.postQuant = loadConv(b, n.postQuant(), z, z, 1)
	m.decIn = loadConv(b, n.decConvIn(), z, top, 3)
	m.decMid = loadMiddle(b, n, "decoder", top)
	levels := len(c.DimMult)
	m.up = make([]level, levels)
	in := top
	for i := range levels {
		out := c.BaseDim * c.DimMult[levels-1-i]
		for j := range c.NumResBlocks + 1 {
			m.up[i].blocks = append(m.up[i].blocks, loadResBlock(b, n, n.decRes(i, j), in, out))
			in = out
		}
		if i != levels-1 {
			at := n.decUp(i)
			m.up[i].sample = &nn.Conv2d{
				Weight: b.Tensor(at+"resample.1.weight", out/2, out, 3, 3),
				Bias:   b.Tensor(at+"resample.1.bias", out/2),
				Out:    out / 2, K: 3,
				Params: backend.Conv2DSame(1, 1),
			}
			if t := len(c.TemporalDownsample) - 1 - i; t >= 0 && c.TemporalDownsample[t] {
				b.Claim(at + "time_conv.weight")
				b.Claim(at + "time_conv.bias")
			}
			in = out / 2
		}
	}
	m.decNorm = loadNorm(b, n.normOut("decoder"), in)
	m.decOut = loadConv(b, n.convOut("decoder"), in, c.InChannels, 3)
	return m
}

// Decode maps sampler latents [N, Z, h, w] — normalised as the
// Qwen-Image pipelines keep them — to images [N, 3, h·f, w·f] in [-1, 1]:
// z = x/(1/std) + mean, as the pipeline computes it, then DecodeRaw.
func (m *Model) Decode(ctx context.Context, dev backend.Device, latents *backend.Tensor) (*backend.Tensor, error) {
	if err := m.checkLatents(latents); err != nil {
		return nil, err
	}
	mean, inv := m.stats(dev)
	defer dev.Free(mean)
	defer dev.Free(inv)
	z := dev.Alloc(latents.Shape...)
	dev.Binary(backend.Div, z, latents, inv)
	dev.Binary(backend.Add, z, z, mean)
	defer dev.Free(z)
	return m.DecodeRaw(ctx, dev, z)
}

// DecodeRaw maps VAE latents z [N, Z, h, w] to images [N, 3, h·f, w·f],
// clamped to [-1, 1], as diffusers' AutoencoderKLQwenImage.decode does for
// one frame.
func (m *Model) DecodeRaw(ctx context.Context, dev backend.Device, z *backend.Tensor) (*backend.Tensor, error) {
	if err := m.checkLatents(z); err != nil {
		return nil, err
	}
	x := m.postQuant.Forward(dev, z)
	h := m.decIn.Forward(dev, x)
	dev.Free(x)
	h = swap(dev, h, m.decMid.forward(dev, h))
	for _, lv := range m.up {
		if err := ctx.Err(); err != nil {
			dev.Free(h)
			return nil, err
		}
		for _, blk := range lv.blocks {
			h = swap(dev, h, blk.forward(dev, h))
		}
		if lv.sample != nil {
			u := nn.Upsample2x(dev, h)
			dev.Free(h)
			h = swap(dev, u, lv.sample.Forward(dev, u))
		}
	}
	h = swap(dev, h, m.decNorm.forward(dev, h, true))
	out := m.decOut.Forward(dev, h)
	dev.Free(h)
	dev.Clamp(out, out, -1, 1)
	return out, nil
}

// Encode maps images [N, 3, H, W] in [-1, 1] (sides divisible by the
// factor) to sampler latents [N, Z, H/f, W/f]: the latent distribution's
// mean (EncodeRaw) normalised as the Qwen-Image pipelines do,
// (z − mean)·(1/std).
func (m *Model) Encode(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error) {
	z, err := m.EncodeRaw(ctx, dev, img)
	if err != nil {
		return nil, err
	}
	mean, inv := m.stats(dev)
	defer dev.Free(mean)
	defer dev.Free(inv)
	dev.Binary(backend.Sub, z, z, mean)
	dev.Binary(backend.Mul, z, z, inv)
	return z, nil
}

// EncodeRaw maps images [N, 3, H, W] in [-1, 1] to VAE latents: the mean
// of the latent distribution diffusers' AutoencoderKLQwenImage.encode
// returns for one frame (latent_dist.mode()).
func (m *Model) EncodeRaw(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error) {
	moments, err := m.Moments(ctx, dev, img)
	if err != nil {
		return nil, err
	}
	z := m.Config.ZChannels
	mean := dev.Alloc(moments.Shape[0], z, moments.Shape[2], moments.Shape[3])
	dev.Slice(mean, moments, 1, 0)
	dev.Free(moments)
	return mean, nil
}

// Moments runs the encoder and quant_conv: [N, 2Z, h, w], the latent
// distribution's mean then its log-variance (not clamped).
func (m *Model) Moments(ctx context.Context, dev backend.Device, img *backend.Tensor) (*backend.Tensor, error) {
	c := m.Config
	if !c.HasEncoder {
		return nil, fmt.Errorf("wanvae encode: this checkpoint has no encoder")
	}
	f := c.Factor()
	if len(img.Shape) != 4 || img.Shape[1] != c.InChannels || img.Shape[2]%f != 0 || img.Shape[3]%f != 0 {
		return nil, fmt.Errorf("wanvae encode: image %v must be [N, %d, H, W] with sides divisible by %d", img.Shape, c.InChannels, f)
	}
	h := m.encIn.Forward(dev, img)
	for _, lv := range m.down {
		if err := ctx.Err(); err != nil {
			dev.Free(h)
			return nil, err
		}
		for _, blk := range lv.blocks {
			h = swap(dev, h, blk.forward(dev, h))
		}
		if lv.sample != nil {
			h = swap(dev, h, lv.sample.Forward(dev, h))
		}
	}
	h = swap(dev, h, m.encMid.forward(dev, h))
	h = swap(dev, h, m.encNorm.forward(dev, h, true))
	h = swap(dev, h, m.encOut.Forward(dev, h))
	return swap(dev, h, m.quant.Forward(dev, h)), nil
}

// swap frees old and returns next (old was next's input).
func swap(dev backend.Device, old, next *backend.Tensor) *backend.Tensor {
	dev.Free(old)
	return next
}

func (m *Model) checkLatents(z *backend.Tensor) error {
	if len(z.Shape) != 4 || z.Shape[1] != m.Config.ZChannels {
		return fmt.Errorf("wanvae decode: latents %v must be [N, %d, h, w]", z.Shape, m.Config.ZChannels)
	}
	return nil
}

// stats uploads the latent mean and the reciprocal std, [1, Z, 1, 1]
// each; the reciprocal is rounded to float32 as the pipeline's
// 1.0/latents_std tensor is.
func (m *Model) stats(dev backend.Device) (mean, inv *backend.Tensor) {
	c := m.Config
	r := make([]float32, len(c.LatentsStd))
	for i, s := range c.LatentsStd {
		r[i] = 1 / s
	}
	return dev.Upload(c.LatentsMean, 1, c.ZChannels, 1, 1), dev.Upload(r, 1, c.ZChannels, 1, 1)
}
