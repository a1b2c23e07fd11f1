package engine

import (
	"context"
	"math"
)

// normRescale returns the guidance hook of diffusers' true CFG with its
// norm-preserving rescale (QwenImagePipeline): the guided velocity
// comb = u + cfg·(c − u) of each token — a patch × patch block of latent
// cells over every channel, the transformer's packed token — is scaled by
// ‖c‖/‖comb‖, c the conditional half's velocity. The hook gets the guided
// denoised estimate x − σ·comb and rewrites it as x − σ·comb·‖c‖/‖comb‖.
// Blocks at the edge of a latent whose size is not a multiple of patch are
// cut short (the transformer pads them; diffusers refuses such sizes).
func normRescale(shape []int, patch int) func(context.Context, []float32, float32, []float32, []float32) error {
	B, C, H, W := shape[0], shape[1], shape[2], shape[3]
	return func(_ context.Context, x []float32, sigma float32, cond, den []float32) error {
		if sigma == 0 {
			return nil
		}
		v := make([]float32, len(x))
		for i := range v {
			v[i] = (x[i] - den[i]) / sigma
		}
		idx := make([]int, 0, C*patch*patch)
		for b := range B {
			for h0 := 0; h0 < H; h0 += patch {
				for w0 := 0; w0 < W; w0 += patch {
					idx = idx[:0]
					for c := range C {
						for h := h0; h < min(h0+patch, H); h++ {
							for w := w0; w < min(w0+patch, W); w++ {
								idx = append(idx, ((b*C+c)*H+h)*W+w)
							}
						}
					}
					var nc, ng float64
					for _, i := range idx {
						nc += float64(cond[i]) * float64(cond[i])
						ng += float64(v[i]) * float64(v[i])
					}
					if ng == 0 {
						continue
					}
					scale := float32(math.Sqrt(nc)) / float32(math.Sqrt(ng))
					for _, i := range idx {
						den[i] = x[i] - sigma*(v[i]*scale)
					}
				}
			}
		}
		return nil
	}
}
