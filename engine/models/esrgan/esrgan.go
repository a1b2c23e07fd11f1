// Package esrgan holds the super-resolution networks users keep in
// models/upscale_models: RRDBNet (ESRGAN, BSRGAN, Real-ESRGAN x4plus /
// x2plus, 4x-UltraSharp and the other community ESRGAN models) and
// Real-ESRGAN's SRVGGNetCompact (realesr-animevideov3,
// realesr-general-x4v3). Both read canonical names (keymap.Upscaler:
// basicsr's RRDBNet names, SRVGGNetCompact's own) and infer every size
// from tensor shapes. Forward is the network; Run pads one image and
// Upscale tiles a large one.
package esrgan

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/nn"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Arch names a network.
type Arch string

// Architectures.
const (
	// RRDB is RRDBNet: residual-in-residual dense blocks, then nearest 2×
	// upsampling steps with convolutions (ESRGAN and its descendants).
	RRDB Arch = "RRDBNet"
	// Compact is SRVGGNetCompact: a plain stack of convolutions and PReLU
	// at the input size, a pixel shuffle, plus the nearest-upsampled input.
	Compact Arch = "SRVGGNetCompact"
)

// leakySlope is the negative slope of ESRGAN's LeakyReLU.
const leakySlope = 0.2

// Config is a network's shape, read from its tensors.
type Config struct {
	Arch Arch
	// InChannels and OutChannels are the image channels (3 for RGB); the
	// first convolution sees InChannels·Unshuffle².
	InChannels, OutChannels int
	// Scale is the output size over the input size (1, 2, 4, 8).
	Scale int
	// Features is the width of the network (nf, num_feat).
	Features int
	// Blocks is RRDBNet's number of RRDB blocks (nb) or SRVGGNetCompact's
	// number of body convolutions (num_conv).
	Blocks int
	// Growth is RRDBNet's dense-block growth width (gc; 32 in every
	// release).
	Growth int
	// Unshuffle is RRDBNet's input pixel unshuffle (Real-ESRGAN ×2: 2,
	// ×1: 4; otherwise 1): the image is folded into Unshuffle² times the
	// channels before the first convolution, and the 4× network gives
	// Scale = 4/Unshuffle.
	Unshuffle int
}

// String describes the configuration in one line.
func (c Config) String() string {
	if c.Arch == Compact {
		return fmt.Sprintf("%s %d× (%d features, %d convolutions)", c.Arch, c.Scale, c.Features, c.Blocks)
	}
	s := fmt.Sprintf("%s %d× (nf %d, nb %d, gc %d", c.Arch, c.Scale, c.Features, c.Blocks, c.Growth)
	if c.Unshuffle > 1 {
		s += fmt.Sprintf(", pixel-unshuffle %d", c.Unshuffle)
	}
	return s + ")"
}

var (
	rrdbBlock    = regexp.MustCompile(`^body\.(\d+)\.rdb1\.conv1\.weight$`)
	rrdbUp       = regexp.MustCompile(`^conv_up(\d+)\.weight$`)
	compactLayer = regexp.MustCompile(`^body\.(\d+)\.weight$`)
)

func shape4(src weights.Source, name string) ([]int, bool) {
	info, ok := src.Info(name)
	if !ok || len(info.Shape) != 4 {
		return nil, false
	}
	return info.Shape, true
}

// ConfigFromWeights reads the architecture and its sizes from canonical
// tensor names and shapes.
func ConfigFromWeights(src weights.Source) (Config, error) {
	names := src.Names()
	if first, ok := shape4(src, "conv_first.weight"); ok {
		return rrdbConfig(src, names, first)
	}
	if _, ok := shape4(src, "body.0.weight"); ok {
		return compactConfig(src, names)
	}
	return Config{}, unknownModel(names)
}

func unknownModel(names []string) error {
	show := names[:min(3, len(names))]
	return fmt.Errorf("not an upscaler darkroom knows (ESRGAN / Real-ESRGAN RRDBNet, SRVGGNetCompact): %d tensors such as %s", len(names), strings.Join(quote(show), ", "))
}

func quote(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strconv.Quote(v)
	}
	return out
}

func rrdbConfig(src weights.Source, names []string, first []int) (Config, error) {
	c := Config{Arch: RRDB, Features: first[0], Unshuffle: 1}
	for _, n := range names {
		if strings.Contains(n, ".conv1x1.") {
			return Config{}, fmt.Errorf("an ESRGAN+ model (tensor %q): its extra residual paths are not supported", n)
		}
		if m := rrdbBlock.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			c.Blocks = max(c.Blocks, i+1)
		}
	}
	ups := 0
	for _, n := range names {
		if m := rrdbUp.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			ups = max(ups, i)
		}
	}
	if c.Blocks == 0 {
		return Config{}, fmt.Errorf("an RRDBNet without RRDB blocks (no body.0.rdb1.conv1.weight)")
	}
	g, ok := shape4(src, "body.0.rdb1.conv1.weight")
	if !ok {
		return Config{}, fmt.Errorf("body.0.rdb1.conv1.weight is not a convolution")
	}
	c.Growth = g[0]
	last, ok := shape4(src, "conv_last.weight")
	if !ok {
		return Config{}, fmt.Errorf("an RRDBNet without conv_last.weight")
	}
	c.OutChannels = last[0]
	in := first[1]
	switch in {
	case c.OutChannels:
		c.InChannels = in
	case 4 * c.OutChannels:
		c.InChannels, c.Unshuffle = c.OutChannels, 2
	case 16 * c.OutChannels:
		c.InChannels, c.Unshuffle = c.OutChannels, 4
	default:
		return Config{}, fmt.Errorf("an RRDBNet of %d input and %d output channels", in, c.OutChannels)
	}
	net := 1 << ups
	if net < c.Unshuffle {
		return Config{}, fmt.Errorf("an RRDBNet with pixel-unshuffle %d and only %d upsampling steps", c.Unshuffle, ups)
	}
	c.Scale = net / c.Unshuffle
	return c, nil
}

func compactConfig(src weights.Source, names []string) (Config, error) {
	last := -1
	for _, n := range names {
		if m := compactLayer.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			last = max(last, i)
		}
	}
	first, _ := shape4(src, "body.0.weight")
	if info, ok := src.Info("body.1.weight"); !ok || len(info.Shape) != 1 {
		return Config{}, fmt.Errorf("an SRVGGNetCompact without PReLU slopes (body.1.weight): only the PReLU variant (every Real-ESRGAN release) is supported")
	}
	out, ok := shape4(src, fmt.Sprintf("body.%d.weight", last))
	if last < 2 || last%2 != 0 || !ok {
		return Config{}, fmt.Errorf("an SRVGGNetCompact whose last layer is body.%d (want an even index, a convolution)", last)
	}
	c := Config{Arch: Compact, InChannels: first[1], Features: first[0], Blocks: (last - 2) / 2, Unshuffle: 1}
	for _, ch := range []int{c.InChannels, 3, 4, 1} {
		if out[0]%ch != 0 {
			continue
		}
		s := 1
		for s*s < out[0]/ch {
			s++
		}
		if s*s == out[0]/ch {
			c.OutChannels, c.Scale = ch, s
			break
		}
	}
	if c.Scale == 0 {
		return Config{}, fmt.Errorf("an SRVGGNetCompact whose last convolution has %d outputs (want channels × scale²)", out[0])
	}
	return c, nil
}

// Net is a loaded upscaler network.
type Net struct {
	Config Config

	// RRDBNet
	first  *nn.Conv2d
	blocks []rrdb
	body   *nn.Conv2d
	ups    []*nn.Conv2d // conv_up1, conv_up2, ...: after each nearest 2× upsample
	hr     *nn.Conv2d
	last   *nn.Conv2d

	// SRVGGNetCompact: body.0, 2, 4, ... convolutions, body.1, 3, ... PReLU
	convs []*nn.Conv2d
	acts  []*nn.PReLU
}

// rrdb is one residual-in-residual dense block: three dense blocks.
type rrdb struct{ rdb [3]rdb }

// rdb is a residual dense block of five convolutions, each seeing the
// input and every earlier output.
type rdb struct{ conv [5]*nn.Conv2d }

// Load infers the configuration from src (canonical names), uploads the
// weights to dev and checks that src holds exactly the network's tensors.
func Load(src weights.Source, dev backend.Device) (*Net, error) {
	c, err := ConfigFromWeights(src)
	if err != nil {
		return nil, err
	}
	b := weights.NewBuilder(src, dev)
	n := &Net{Config: c}
	conv := func(name string, in, out int) *nn.Conv2d { return nn.LoadConv2d(b.Sub(name), in, out, 3, 1, 1) }
	switch c.Arch {
	case RRDB:
		nf, gc := c.Features, c.Growth
		n.first = conv("conv_first", c.InChannels*c.Unshuffle*c.Unshuffle, nf)
		for i := range c.Blocks {
			var blk rrdb
			for r := range 3 {
				for j := range 5 {
					out := gc
					if j == 4 {
						out = nf
					}
					blk.rdb[r].conv[j] = conv(fmt.Sprintf("body.%d.rdb%d.conv%d", i, r+1, j+1), nf+j*gc, out)
				}
			}
			n.blocks = append(n.blocks, blk)
		}
		n.body = conv("conv_body", nf, nf)
		for k := 1; 1<<(k-1) < c.Scale*c.Unshuffle; k++ {
			n.ups = append(n.ups, conv(fmt.Sprintf("conv_up%d", k), nf, nf))
		}
		n.hr = conv("conv_hr", nf, nf)
		n.last = conv("conv_last", nf, c.OutChannels)
	case Compact:
		in := c.InChannels
		for i := range c.Blocks + 1 {
			n.convs = append(n.convs, conv(fmt.Sprintf("body.%d", 2*i), in, c.Features))
			n.acts = append(n.acts, nn.LoadPReLU(dev, b.Subf("body.%d", 2*i+1), c.Features))
			in = c.Features
		}
		n.convs = append(n.convs, conv(fmt.Sprintf("body.%d", 2*(c.Blocks+1)), c.Features, c.OutChannels*c.Scale*c.Scale))
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", c.Arch, err)
	}
	if unused := b.Unused(""); len(unused) > 0 {
		return nil, fmt.Errorf("%s: %d tensors that %v does not use, such as %s", c.Arch, len(unused), c, strings.Join(quote(unused[:min(3, len(unused))]), ", "))
	}
	return n, nil
}

// Forward runs the network on x [N, InChannels, H, W] (values in 0..1;
// H and W multiples of Unshuffle) and returns [N, OutChannels, H·Scale,
// W·Scale], not clamped.
func (n *Net) Forward(ctx context.Context, dev backend.Device, x *backend.Tensor) (*backend.Tensor, error) {
	c := n.Config
	if len(x.Shape) != 4 || x.Shape[1] != c.InChannels || x.Shape[2]%c.Unshuffle != 0 || x.Shape[3]%c.Unshuffle != 0 {
		return nil, fmt.Errorf("%s forward: input %v, want [N, %d, H, W] with sides divisible by %d", c.Arch, x.Shape, c.InChannels, c.Unshuffle)
	}
	if c.Arch == Compact {
		return n.compact(ctx, dev, x)
	}
	return n.rrdb(ctx, dev, x)
}

func (n *Net) rrdb(ctx context.Context, dev backend.Device, x *backend.Tensor) (*backend.Tensor, error) {
	in := x
	if u := n.Config.Unshuffle; u > 1 {
		in = nn.PixelUnshuffle(dev, x, u) // [N, C·u², H/u, W/u]
		defer dev.Free(in)
	}
	feat := n.first.Forward(dev, in) // [N, nf, h, w]
	h := feat
	for _, blk := range n.blocks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		next := blk.forward(dev, h)
		if h != feat {
			dev.Free(h)
		}
		h = next
	}
	trunk := n.body.ForwardAdd(dev, h, feat) // feat + conv_body(body(feat))
	if h != feat {
		dev.Free(h)
	}
	dev.Free(feat)
	h = trunk
	for _, up := range n.ups {
		u := nn.Upsample2x(dev, h) // [N, nf, 2h, 2w]
		dev.Free(h)
		y := up.Forward(dev, u)
		dev.Free(u)
		h = nn.LeakyReLU(dev, y, leakySlope)
		dev.Free(y)
	}
	y := n.hr.Forward(dev, h)
	dev.Free(h)
	a := nn.LeakyReLU(dev, y, leakySlope)
	dev.Free(y)
	out := n.last.Forward(dev, a) // [N, out, H·s, W·s]
	dev.Free(a)
	return out, nil
}

// forward is RRDB: three dense blocks, then out·0.2 + x.
func (b *rrdb) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	h := x
	for i := range b.rdb {
		next := b.rdb[i].forward(dev, h)
		if h != x {
			dev.Free(h)
		}
		h = next
	}
	return scaledResidual(dev, h, x)
}

// forward is the residual dense block: x1..x4 = lrelu(conv_j(x ⊕ x1 ⊕ …)),
// x5 = conv5(x ⊕ x1 ⊕ … ⊕ x4), out = x5·0.2 + x.
func (b *rdb) forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	parts := []*backend.Tensor{x}
	cat := x
	var out *backend.Tensor
	for j, conv := range b.conv {
		y := conv.Forward(dev, cat)
		if cat != x {
			dev.Free(cat)
		}
		if j == 4 {
			out = scaledResidual(dev, y, x)
			break
		}
		a := nn.LeakyReLU(dev, y, leakySlope)
		dev.Free(y)
		parts = append(parts, a)
		cat = nn.Concat(dev, 1, parts...)
	}
	for _, p := range parts[1:] {
		dev.Free(p)
	}
	return out
}

// scaledResidual returns y·0.2 + x and frees y.
func scaledResidual(dev backend.Device, y, x *backend.Tensor) *backend.Tensor {
	dev.Affine(y, y, 0.2, 0)
	out := dev.Alloc(x.Shape...)
	dev.Binary(backend.Add, out, y, x)
	dev.Free(y)
	return out
}

func (n *Net) compact(ctx context.Context, dev backend.Device, x *backend.Tensor) (*backend.Tensor, error) {
	h := x
	for i, conv := range n.convs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		y := conv.Forward(dev, h)
		if h != x {
			dev.Free(h)
		}
		h = y
		if i < len(n.acts) {
			h = n.acts[i].Forward(dev, y)
			dev.Free(y)
		}
	}
	s := n.Config.Scale
	up := nn.PixelShuffle(dev, h, s) // [N, out, H·s, W·s]
	dev.Free(h)
	out := nn.AddNearest(dev, up, x, s) // plus the nearest-upsampled input
	dev.Free(up)
	return out, nil
}

// Run upscales one image: img holds InChannels planes of h×w values in
// 0..1. It pads the bottom and right edges by reflection to a multiple of
// Unshuffle (as spandrel's RRDBNet does; by repetition where the image is
// too small to reflect), runs the network and crops, returning
// OutChannels planes of (h·Scale)×(w·Scale), not clamped.
func (n *Net) Run(ctx context.Context, dev backend.Device, img []float32, h, w int) ([]float32, error) {
	c := n.Config
	if len(img) != c.InChannels*h*w || h <= 0 || w <= 0 {
		return nil, fmt.Errorf("upscale: %d values for %d planes of %dx%d", len(img), c.InChannels, w, h)
	}
	u := c.Unshuffle
	ph, pw := (h+u-1)/u*u, (w+u-1)/u*u
	in := img
	if ph != h || pw != w {
		in = padReflect(img, c.InChannels, h, w, ph, pw)
	}
	x := dev.Upload(in, 1, c.InChannels, ph, pw)
	defer dev.Free(x)
	y, err := n.Forward(ctx, dev, x)
	if err != nil {
		return nil, err
	}
	defer dev.Free(y)
	out, err := dev.Download(y)
	if err != nil {
		return nil, fmt.Errorf("upscale: %w", err)
	}
	s := c.Scale
	if ph == h && pw == w {
		return out, nil
	}
	return crop(out, c.OutChannels, ph*s, pw*s, 0, 0, h*s, w*s), nil
}

// padReflect pads planes of h×w at the bottom and right to ph×pw by
// reflection (torch's "reflect": the edge row is not repeated), falling
// back to repeating the edge where the plane is too small.
func padReflect(img []float32, c, h, w, ph, pw int) []float32 {
	idx := func(i, n int) int {
		if i >= n {
			i = 2*(n-1) - i
		}
		return max(i, 0)
	}
	out := make([]float32, c*ph*pw)
	for ch := range c {
		for y := range ph {
			sy := idx(y, h)
			for x := range pw {
				out[(ch*ph+y)*pw+x] = img[(ch*h+sy)*w+idx(x, w)]
			}
		}
	}
	return out
}

// crop copies the h×w window at (y0, x0) of c planes of H×W.
func crop(img []float32, c, H, W, y0, x0, h, w int) []float32 {
	out := make([]float32, c*h*w)
	for ch := range c {
		for y := range h {
			copy(out[(ch*h+y)*w:(ch*h+y+1)*w], img[(ch*H+y0+y)*W+x0:])
		}
	}
	return out
}
