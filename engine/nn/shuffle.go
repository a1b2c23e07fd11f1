package nn

import (
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// The layers of super-resolution networks (ESRGAN, Real-ESRGAN), composed
// from Device ops every backend has (Clamp, Affine, Binary with
// broadcasting, Permute of rank 6), so that no backend needs a kernel of
// its own for them.

// negativePart returns min(x, 0).
func negativePart(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	t := dev.Alloc(x.Shape...)
	dev.Clamp(t, x, -math.MaxFloat32, 0)
	return t
}

// LeakyReLU returns torch.nn.LeakyReLU(slope)(x) = max(x, 0) + slope·min(x, 0),
// computed as x + (slope − 1)·min(x, 0).
func LeakyReLU(dev backend.Device, x *backend.Tensor, slope float32) *backend.Tensor {
	t := negativePart(dev, x)
	dev.Affine(t, t, slope-1, 0)
	y := dev.Alloc(x.Shape...)
	dev.Binary(backend.Add, y, x, t)
	dev.Free(t)
	return y
}

// PReLU is torch.nn.PReLU with one slope per channel (num_parameters = C)
// or one for all: max(x, 0) + a·min(x, 0) on [N, C, ...].
type PReLU struct {
	// Weight is the stored slope [C] (or [1]).
	Weight *backend.Tensor
	// aMinus1 is Weight − 1 shaped [1, C, 1, 1] for broadcasting.
	aMinus1 *backend.Tensor
}

// LoadPReLU reads `weight` [c] under b.
func LoadPReLU(dev backend.Device, b *weights.Builder, c int) *PReLU {
	p := &PReLU{Weight: b.Tensor("weight", c)}
	if p.Weight != nil {
		p.aMinus1 = dev.Alloc(1, c, 1, 1)
		dev.Affine(p.aMinus1, p.Weight.Reshape(1, c, 1, 1), 1, -1)
	}
	return p
}

// Forward applies the activation to x [N, C, H, W] as x + (a − 1)·min(x, 0).
func (p *PReLU) Forward(dev backend.Device, x *backend.Tensor) *backend.Tensor {
	t := negativePart(dev, x)
	dev.Binary(backend.Mul, t, t, p.aMinus1)
	y := dev.Alloc(x.Shape...)
	dev.Binary(backend.Add, y, x, t)
	dev.Free(t)
	return y
}

// PixelShuffle is torch.nn.functional.pixel_shuffle: [N, C·r², H, W] →
// [N, C, H·r, W·r], channel c·r² + i·r + j going to row offset i, column
// offset j.
func PixelShuffle(dev backend.Device, x *backend.Tensor, r int) *backend.Tensor {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if c%(r*r) != 0 {
		panic(fmt.Sprintf("pixel shuffle: %d channels by %d", c, r))
	}
	c /= r * r
	y := dev.Alloc(n, c, h, r, w, r)
	dev.Permute(y, x.Reshape(n, c, r, r, h, w), 0, 1, 4, 2, 5, 3)
	return y.Reshape(n, c, h*r, w*r)
}

// PixelUnshuffle is torch.nn.functional.pixel_unshuffle, the inverse of
// PixelShuffle: [N, C, H·r, W·r] → [N, C·r², H, W].
func PixelUnshuffle(dev backend.Device, x *backend.Tensor, r int) *backend.Tensor {
	n, c, hr, wr := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if hr%r != 0 || wr%r != 0 {
		panic(fmt.Sprintf("pixel unshuffle: %dx%d by %d", wr, hr, r))
	}
	h, w := hr/r, wr/r
	y := dev.Alloc(n, c, r, r, h, w)
	dev.Permute(y, x.Reshape(n, c, h, r, w, r), 0, 1, 3, 5, 2, 4)
	return y.Reshape(n, c*r*r, h, w)
}

// AddNearest returns y + nearest(x, s): y [N, C, H·s, W·s] plus x
// [N, C, H, W] upsampled s× by repetition (torch's interpolate with
// mode="nearest" and an integer scale), in one broadcasting add.
func AddNearest(dev backend.Device, y, x *backend.Tensor, s int) *backend.Tensor {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if !y.Shape.Equal([]int{n, c, h * s, w * s}) {
		panic(fmt.Sprintf("add nearest: %v + %v upsampled %d×", y.Shape, x.Shape, s))
	}
	out := dev.Alloc(n, c, h, s, w, s)
	dev.Binary(backend.Add, out, y.Reshape(n, c, h, s, w, s), x.Reshape(n, c, h, 1, w, 1))
	return out.Reshape(n, c, h*s, w*s)
}
