package esrgan

import (
	"context"
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
)

// Tiling splits a large image into overlapping tiles that are upscaled one
// at a time and blended, so that memory stays bounded whatever the image
// size.
type Tiling struct {
	// Tile is the largest tile side in input pixels; 0 or less runs the
	// image in one piece.
	Tile int
	// Overlap is how many input pixels neighbouring tiles share. Inside
	// the overlap the tiles are feathered: each tile's weight is 0 over
	// the quarter of the overlap nearest its edge (where the network saw
	// the zero padding past the tile), rises linearly over the middle half
	// and is 1 beyond.
	Overlap int
	// OnTile, when set, is called after each tile with the number done and
	// the total.
	OnTile func(done, total int)
}

// span is one tile's extent along an axis, in input pixels.
type span struct{ start, size int }

// spans covers n pixels with tiles of at most about tile pixels sharing
// ov, every start a multiple of u (the unshuffle factor, so that each
// tile sees the pixel grid the whole image would).
func spans(n, tile, ov, u int) []span {
	if n <= tile {
		return []span{{0, n}}
	}
	count := (n - ov + (tile - ov) - 1) / (tile - ov)
	step := (n - ov + count - 1) / count
	step = (step + u - 1) / u * u
	var out []span
	for start := 0; ; start += step {
		size := min(step+ov, n-start)
		out = append(out, span{start, size})
		if start+size >= n {
			return out
		}
	}
}

// ramp is a tile's blending weight at output pixel i of a tile of n
// output pixels, whose leading / trailing edges are inside the image
// (lead, trail) and feathered over ov output pixels.
func ramp(i, n, ov int, lead, trail bool) float32 {
	w := float32(1)
	edge := func(d int) float32 { // d: distance from the edge, in pixels
		if ov <= 0 {
			return 1
		}
		t := (float32(d) + 0.5 - float32(ov)/4) / (float32(ov) / 2)
		return min(max(t, 1e-4), 1)
	}
	if lead {
		w = min(w, edge(i))
	}
	if trail {
		w = min(w, edge(n-1-i))
	}
	return w
}

// Upscale runs the network over an image of InChannels planes of h×w in
// 0..1 (see Run), tile by tile when it is larger than t.Tile, and returns
// OutChannels planes of (h·Scale)×(w·Scale), not clamped. ctx is checked
// between tiles (and between the network's blocks).
func (n *Net) Upscale(ctx context.Context, dev backend.Device, img []float32, h, w int, t Tiling) ([]float32, error) {
	c := n.Config
	if len(img) != c.InChannels*h*w || h <= 0 || w <= 0 {
		return nil, fmt.Errorf("upscale: %d values for %d planes of %dx%d", len(img), c.InChannels, w, h)
	}
	if t.Tile <= 0 || (h <= t.Tile && w <= t.Tile) {
		out, err := n.Run(ctx, dev, img, h, w)
		if err == nil && t.OnTile != nil {
			t.OnTile(1, 1)
		}
		return out, err
	}
	u := c.Unshuffle
	ov := (max(t.Overlap, 0) + u - 1) / u * u
	tile := max(t.Tile/u*u, ov+u, 2*u)
	ys, xs := spans(h, tile, ov, u), spans(w, tile, ov, u)
	s := c.Scale
	H, W := h*s, w*s
	acc := make([]float32, c.OutChannels*H*W)
	wsum := make([]float32, H*W)
	total, done := len(ys)*len(xs), 0
	for _, ty := range ys {
		for _, tx := range xs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			in := crop(img, c.InChannels, h, w, ty.start, tx.start, ty.size, tx.size)
			out, err := n.Run(ctx, dev, in, ty.size, tx.size)
			if err != nil {
				return nil, err
			}
			th, tw := ty.size*s, tx.size*s
			y0, x0 := ty.start*s, tx.start*s
			wx := make([]float32, tw)
			for x := range tw {
				wx[x] = ramp(x, tw, ov*s, tx.start > 0, tx.start+tx.size < w)
			}
			for y := range th {
				wy := ramp(y, th, ov*s, ty.start > 0, ty.start+ty.size < h)
				row := (y0+y)*W + x0
				for x := range tw {
					wgt := wy * wx[x]
					wsum[row+x] += wgt
					for ch := range c.OutChannels {
						acc[ch*H*W+row+x] += wgt * out[(ch*th+y)*tw+x]
					}
				}
			}
			done++
			if t.OnTile != nil {
				t.OnTile(done, total)
			}
		}
	}
	for i := range wsum {
		for ch := range c.OutChannels {
			acc[ch*H*W+i] /= wsum[i]
		}
	}
	return acc, nil
}
