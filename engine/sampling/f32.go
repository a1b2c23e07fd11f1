package sampling

import "math"

// Scalar float32 arithmetic as PyTorch does it on 0-dimensional float32
// tensors: every operation rounds to float32. Transcendental functions are
// evaluated in float64 and rounded, which is within one ulp of torch's
// float32 kernels. Explicit float32 conversions keep the compiler from fusing
// a multiply and an add into one FMA (the Go spec allows fusion otherwise).

func log32(v float32) float32    { return float32(math.Log(float64(v))) }
func exp32(v float32) float32    { return float32(math.Exp(float64(v))) }
func expm132(v float32) float32  { return float32(math.Expm1(float64(v))) }
func sqrt32(v float32) float32   { return float32(math.Sqrt(float64(v))) }
func mul32(a, b float32) float32 { return float32(a * b) }
func div32(a, b float32) float32 { return float32(a / b) }
func sq32(a float32) float32     { return float32(a * a) }
func pow32(a, p float32) float32 { return float32(math.Pow(float64(a), float64(p))) }
func min32(a, b float32) float32 { return min(a, b) }

// toD returns (x - denoised) / sigma elementwise, k-diffusion's to_d.
func toD(x, denoised []float32, sigma float32) []float32 {
	d := make([]float32, len(x))
	for i := range x {
		d[i] = float32(x[i]-denoised[i]) / sigma
	}
	return d
}

// axpy returns x + d*dt elementwise (the product rounded first).
func axpy(x, d []float32, dt float32) []float32 {
	out := make([]float32, len(x))
	for i := range x {
		out[i] = x[i] + float32(d[i]*dt)
	}
	return out
}

// linsub returns a*x - b*y elementwise, each product rounded first, as the
// torch expression a * x - b * y evaluates.
func linsub(a float32, x []float32, b float32, y []float32) []float32 {
	out := make([]float32, len(x))
	for i := range x {
		out[i] = float32(a*x[i]) - float32(b*y[i])
	}
	return out
}

// lerp32 is torch.lerp on float32 scalars: start + w*(end-start) for
// |w| < 0.5, end - (end-start)*(1-w) otherwise.
func lerp32(start, end, w float32) float32 {
	diff := float32(end - start)
	if w < 0.5 && w > -0.5 {
		return start + float32(w*diff)
	}
	return end - float32(diff*float32(1-w))
}
