package flux

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend"
)

// Pack cuts a latent [B, C, H, W] (H, W even) into 2×2 patches, the image
// tokens [B, H/2·W/2, 4C] of FluxPipeline._pack_latents: token (r, c) holds
// channel-major values x[b, ch, 2r+i, 2c+j] at index ch·4 + i·2 + j.
func Pack(dev backend.Device, latent *backend.Tensor) (*backend.Tensor, error) {
	if len(latent.Shape) != 4 || latent.Shape[2]%2 != 0 || latent.Shape[3]%2 != 0 || latent.Len() == 0 {
		return nil, fmt.Errorf("flux: latent has shape %v, want [B, C, H, W] with even H and W", latent.Shape)
	}
	B, C, H, W := latent.Shape[0], latent.Shape[1], latent.Shape[2], latent.Shape[3]
	out := dev.Alloc(B, H/2, W/2, C, 2, 2)
	dev.Permute(out, latent.Reshape(B, C, H/2, 2, W/2, 2), 0, 2, 4, 1, 3, 5)
	return out.Reshape(B, H/2*W/2, 4*C), nil
}

// Unpack is the inverse of Pack: tokens [B, H/2·W/2, 4C] back to a latent
// [B, C, H, W] (FluxPipeline._unpack_latents for a latent of H×W).
func Unpack(dev backend.Device, tokens *backend.Tensor, h, w int) (*backend.Tensor, error) {
	if len(tokens.Shape) != 3 || h <= 0 || w <= 0 || h%2 != 0 || w%2 != 0 || tokens.Shape[1] != h/2*w/2 || tokens.Shape[2]%4 != 0 {
		return nil, fmt.Errorf("flux: tokens of shape %v do not unpack to a %d×%d latent", tokens.Shape, h, w)
	}
	B, C := tokens.Shape[0], tokens.Shape[2]/4
	out := dev.Alloc(B, C, h, w)
	dev.Permute(out.Reshape(B, C, h/2, 2, w/2, 2), tokens.Reshape(B, h/2, w/2, C, 2, 2), 0, 3, 1, 4, 2, 5)
	return out, nil
}

// ImageIDs returns the RoPE positions of the tokens of an h×w latent
// (FluxPipeline._prepare_latent_image_ids of h/2, w/2): (0, row, col) in
// row-major token order.
func ImageIDs(h, w int) [][3]float32 {
	ids := make([][3]float32, 0, (h/2)*(w/2))
	for r := range h / 2 {
		for c := range w / 2 {
			ids = append(ids, [3]float32{0, float32(r), float32(c)})
		}
	}
	return ids
}

// TextIDs returns the RoPE positions of n text tokens: all zero, as the
// Flux pipelines pass them.
func TextIDs(n int) [][3]float32 { return make([][3]float32, n) }
