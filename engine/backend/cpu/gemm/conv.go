package gemm

import (
	"fmt"
	"runtime"
)

// Conv2D computes the 2-D cross-correlation (PyTorch's conv2d with groups 1
// and dilation 1) of x [n,c,h,w] with weight [oc,c,kh,kw], plus bias [oc]
// when it is not nil, into dst [n,oc,oh,ow], where
//
//	oh = (h+2·padH-kh)/strideH + 1,  ow = (w+2·padW-kw)/strideW + 1
//
// and the padding is zeros. Each image is one product
// dst[oc×oh·ow] = weight[oc×c·kh·kw] · cols[c·kh·kw×oh·ow]: a 1×1 unpadded
// stride-1 convolution uses x as cols directly, other shapes pack cols
// straight from the image panel by panel (an implicit im2col), so no im2col
// matrix is ever built. A padded image of up to 64 MB is first copied with
// its zero border into a pooled buffer, so that packing needs no bounds
// checks. Large convolutions run on up to GOMAXPROCS goroutines. It panics
// if the sizes are inconsistent or a slice is shorter than they imply.
func Conv2D(dst, x []float32, n, c, h, w int, weight []float32, oc, kh, kw, strideH, strideW, padH, padW int, bias []float32) {
	if n < 0 || c <= 0 || h <= 0 || w <= 0 || oc <= 0 || kh <= 0 || kw <= 0 || strideH <= 0 || strideW <= 0 || padH < 0 || padW < 0 {
		panic(fmt.Sprintf("gemm: conv2d: bad sizes n=%d c=%d h=%d w=%d oc=%d kernel %d×%d stride %d×%d pad %d×%d", n, c, h, w, oc, kh, kw, strideH, strideW, padH, padW))
	}
	if h+2*padH < kh || w+2*padW < kw {
		panic(fmt.Sprintf("gemm: conv2d: kernel %d×%d larger than padded input %d×%d", kh, kw, h+2*padH, w+2*padW))
	}
	oh := (h+2*padH-kh)/strideH + 1
	ow := (w+2*padW-kw)/strideW + 1
	depth, pixels := c*kh*kw, oh*ow
	switch {
	case len(x) < n*c*h*w:
		panic(fmt.Sprintf("gemm: conv2d: len(x) %d < %d", len(x), n*c*h*w))
	case len(weight) < oc*depth:
		panic(fmt.Sprintf("gemm: conv2d: len(weight) %d < %d", len(weight), oc*depth))
	case len(dst) < n*oc*pixels:
		panic(fmt.Sprintf("gemm: conv2d: len(dst) %d < %d", len(dst), n*oc*pixels))
	case bias != nil && len(bias) < oc:
		panic(fmt.Sprintf("gemm: conv2d: len(bias) %d < %d", len(bias), oc))
	}
	conv2D(bestKernel, runtime.GOMAXPROCS(0), maxPaddedCopy, dst, x, n, c, h, w, weight, oc, kh, kw, strideH, strideW, padH, padW, bias)
}

// conv2D is Conv2D for checked arguments, with the kernel given, on up to
// maxWorkers goroutines, copying padded images of at most padLimit floats.
func conv2D(kern *kernel, maxWorkers, padLimit int, dst, x []float32, n, c, h, w int, weight []float32, oc, kh, kw, strideH, strideW, padH, padW int, bias []float32) {
	oh := (h+2*padH-kh)/strideH + 1
	ow := (w+2*padW-kw)/strideW + 1
	depth, pixels := c*kh*kw, oh*ow
	workers := workersFor(maxWorkers, oc, pixels, depth)
	wm := matrix{data: weight, ld: depth}
	pointwise := kh == 1 && kw == 1 && strideH == 1 && strideW == 1 && padH == 0 && padW == 0
	hp, wp := h+2*padH, w+2*padW
	var padded *[]float32
	if !pointwise && (padH > 0 || padW > 0) && c*hp*wp <= padLimit {
		padded = getBuf(c * hp * wp)
		defer putBuf(padded)
	}
	for b := 0; b < n; b++ {
		img := x[b*c*h*w : (b+1)*c*h*w]
		out := dst[b*oc*pixels : (b+1)*oc*pixels]
		var beta float32
		if bias != nil {
			for o := 0; o < oc; o++ {
				row := out[o*pixels : (o+1)*pixels]
				for i := range row {
					row[i] = bias[o]
				}
			}
			beta = 1
		}
		var cols bSource
		switch {
		case pointwise:
			cols = matrix{data: img, ld: pixels}
		case padded != nil:
			xp := *padded
			parallelFor(workers, c, func(_, ci int) {
				padPlane(xp[ci*hp*wp:(ci+1)*hp*wp], img[ci*h*w:(ci+1)*h*w], h, w, padH, padW)
			})
			cols = &convCols{x: xp, c: c, h: hp, w: wp, kh: kh, kw: kw, sh: strideH, sw: strideW, oh: oh, ow: ow}
		default:
			cols = &convCols{x: img, c: c, h: h, w: w, kh: kh, kw: kw, sh: strideH, sw: strideW, ph: padH, pw: padW, oh: oh, ow: ow}
		}
		gemmPacked(kern, workers, oc, pixels, depth, 1, wm, cols, beta, out, pixels)
	}
}

// convCols is the implicit im2col matrix of one image: row p = (ci·kh+ky)·kw+kx
// and column j = oy·ow+ox hold x[ci, oy·sh-ph+ky, ox·sw-pw+kx], or 0 in the
// padding.
type convCols struct {
	x                                       []float32 // [c,h,w]
	c, h, w, kh, kw, sh, sw, ph, pw, oh, ow int
}

// maxPanelDepth bounds the panel depth kc for which packB keeps its tap
// offsets on the stack.
const maxPanelDepth = 1024

// packB packs a block of the implicit matrix, one run of columns within an
// output row at a time. Runs whose taps all fall inside the image are
// gathered by tap offsets (see packRun); the others, at the image border,
// check every tap against the bounds.
func (s *convCols) packB(dst []float32, p0, kc, j0, nc, nr int) {
	var offsBuf [maxPanelDepth]int
	offs := s.tapOffsets(offsBuf[:0], p0, kc)
	khw := s.kh * s.kw
	for jr := 0; jr < nc; jr += nr {
		cols := min(nr, nc-jr)
		strip := dst[jr*kc : jr*kc+nr*kc]
		for j, end := j0+jr, j0+jr+cols; j < end; {
			oy, ox := j/s.ow, j%s.ow
			n := min(end-j, s.ow-ox)
			d := strip[j-j0-jr:]
			j += n
			iy0, ix0 := oy*s.sh-s.ph, ox*s.sw-s.pw
			if iy0 >= 0 && iy0+s.kh <= s.h && ix0 >= 0 && ix0+(n-1)*s.sw+s.kw <= s.w {
				s.packRun(d, nr, s.x[iy0*s.w+ix0:], offs, n)
				continue
			}
			ci, r := p0/khw, p0%khw
			ky, kx := r/s.kw, r%s.kw
			for p := 0; p < kc; p++ {
				seg := d[p*nr : p*nr+n]
				s.packBorder(seg, ci, iy0+ky, ix0+kx)
				if kx++; kx == s.kw {
					kx = 0
					if ky++; ky == s.kh {
						ky = 0
						ci++
					}
				}
			}
		}
		if cols < nr {
			for p := 0; p < kc; p++ {
				clear(strip[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// packBorder fills seg with the pixels x[ci, iy, ix+t·sw] for t < len(seg),
// zero where they fall outside the image.
func (s *convCols) packBorder(seg []float32, ci, iy, ix int) {
	if iy < 0 || iy >= s.h {
		clear(seg)
		return
	}
	row := s.x[(ci*s.h+iy)*s.w : (ci*s.h+iy+1)*s.w]
	if s.sw == 1 {
		lo, hi := clamp(-ix, 0, len(seg)), clamp(s.w-ix, 0, len(seg))
		if hi <= lo {
			clear(seg)
			return
		}
		clear(seg[:lo])
		copy(seg[lo:hi], row[ix+lo:ix+hi])
		clear(seg[hi:])
		return
	}
	for t := range seg {
		if x := ix + t*s.sw; x >= 0 && x < s.w {
			seg[t] = row[x]
		} else {
			seg[t] = 0
		}
	}
}

// tapOffsets returns, for each row p0 ≤ p < p0+kc of the matrix, the offset
// of its tap (ci, ky, kx) from a pixel: ci·h·w + ky·w + kx. It appends to
// buf, which it uses when large enough.
func (s *convCols) tapOffsets(buf []int, p0, kc int) []int {
	offs := buf[:0]
	if cap(buf) < kc {
		offs = make([]int, 0, kc)
	}
	plane := s.h * s.w
	ci, r := p0/(s.kh*s.kw), p0%(s.kh*s.kw)
	ky, kx := r/s.kw, r%s.kw
	for range kc {
		offs = append(offs, ci*plane+ky*s.w+kx)
		if kx++; kx == s.kw {
			kx = 0
			if ky++; ky == s.kh {
				ky = 0
				ci++
			}
		}
	}
	return offs
}

// packRun packs n columns lying in one output row, all of whose taps fall
// inside the image: row p of the strip d (width nr) gets src[offs[p]+t·sw]
// for t < n, where src starts at the run's first input pixel.
func (s *convCols) packRun(d []float32, nr int, src []float32, offs []int, n int) {
	switch {
	case s.sw == 1 && copyRows(d, src, offs, n, nr):
	case s.sw == 1:
		for p, o := range offs {
			copy(d[p*nr:p*nr+n], src[o:o+n])
		}
	default:
		for p, o := range offs {
			seg := d[p*nr : p*nr+n]
			row := src[o:]
			for t := range seg {
				seg[t] = row[t*s.sw]
			}
		}
	}
}

// maxPaddedCopy is the largest padded image, in floats (64 MB), that conv2D
// copies so as to pack from it without bounds checks; larger images are
// packed from the original with per-tap bounds checks.
const maxPaddedCopy = 16 << 20

// padPlane copies the plane img [h,w] into dst [h+2·ph,w+2·pw] with zero
// borders.
func padPlane(dst, img []float32, h, w, ph, pw int) {
	wp := w + 2*pw
	clear(dst[:ph*wp])
	clear(dst[(ph+h)*wp:])
	for y := 0; y < h; y++ {
		row := dst[(ph+y)*wp : (ph+y+1)*wp]
		clear(row[:pw])
		copy(row[pw:pw+w], img[y*w:(y+1)*w])
		clear(row[pw+w:])
	}
}
