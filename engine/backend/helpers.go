package backend

import (
	"fmt"
	"math"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// BroadcastStrides returns the element strides of a contiguous src aligned
// to out's rank, with 0 for the dimensions src broadcasts along (NumPy
// rules). It panics when src cannot broadcast to out.
func BroadcastStrides(src, out tensor.Shape) []int {
	if len(src) > len(out) {
		panic(fmt.Sprintf("cannot broadcast %v to %v", src, out))
	}
	st := make([]int, len(out))
	srcStrides := src.Strides()
	off := len(out) - len(src)
	for i := range src {
		switch src[i] {
		case out[off+i]:
			st[off+i] = srcStrides[i]
		case 1:
			st[off+i] = 0
		default:
			panic(fmt.Sprintf("cannot broadcast %v to %v", src, out))
		}
	}
	return st
}

// TimestepTable computes sinusoidal timestep embeddings [len(ts), p.Dim] on
// the host, in float32 arithmetic as torch does: freq_j =
// exp(−ln(MaxPeriod)·j/(Dim/2 − shift)), then the cos and sin halves of
// t·Scale·freq_j (cos first with FlipSinToCos). Every backend uses it, so
// they agree bit for bit.
func TimestepTable(ts []float32, p TimestepParams) []float32 {
	half := p.Dim / 2
	out := make([]float32, len(ts)*p.Dim)
	scale := p.Scale
	if scale == 0 {
		scale = 1
	}
	for i, t := range ts {
		row := out[i*p.Dim : (i+1)*p.Dim]
		for j := range half {
			exponent := float32(-math.Log(float64(p.MaxPeriod))) * float32(j) / (float32(half) - p.DownscaleFreqShift)
			freq := float32(math.Exp(float64(exponent)))
			arg := t * scale * freq
			s, c := float32(math.Sin(float64(arg))), float32(math.Cos(float64(arg)))
			if p.FlipSinToCos {
				row[j], row[half+j] = c, s
			} else {
				row[j], row[half+j] = s, c
			}
		}
	}
	return out
}

// IsHalf reports whether dev stores tensors in float16 (devices that do
// not say store float32): the models that outgrow float16's range clamp
// their activations there, as their peers do.
func IsHalf(dev Device) bool {
	p, ok := dev.(interface{ Precision() tensor.DType })
	return ok && p.Precision() == tensor.F16
}
