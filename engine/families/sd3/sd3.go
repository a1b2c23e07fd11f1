// Package sd3 is the Stable Diffusion 3 / 3.5 family (MMDiT with CLIP-L,
// CLIP-G and T5-XXL). Recognised; not runnable yet.
package sd3

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/family"
)

// Name is the family's name.
const Name = "SD3"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims MMDiT joint blocks (Stability's names) or a diffusers
// SD3Transformer2DModel (joint transformer blocks with a patch-embedding
// convolution and no single-stream blocks), and tells 3 Medium, 3.5 Medium
// (MMDiT-X: a second attention in the first blocks) and 3.5 Large (38
// blocks) apart.
func Probe(k *family.Keys) (family.Detection, bool) {
	if root, key, ok := k.FindUnder(family.NativeRoots, "joint_blocks.", "x_embedder."); ok {
		depth := k.CountBlocks(root + "joint_blocks.")
		return family.Detection{Variant: variant(depth, k.Has(root+"joint_blocks.0.x_block.attn2."), k.Has(root+"joint_blocks.0.x_block.attn.ln_q.")),
			Evidence: []string{k.Key(key), fmt.Sprintf("%d joint blocks", depth)}}, true
	}
	if root, key, ok := k.FindUnder(family.DiffusersRoots, "transformer_blocks.", "pos_embed.proj.", "context_embedder."); ok && !k.Has(root+"single_transformer_blocks.") {
		depth := k.CountBlocks(root + "transformer_blocks.")
		d := family.Detection{Variant: variant(depth, k.Has(root+"transformer_blocks.0.attn2."), k.Has(root+"transformer_blocks.0.attn.norm_q.")),
			Evidence: []string{k.Key(key), fmt.Sprintf("%d joint blocks", depth)}}
		return d, true
	}
	return family.Detection{}, false
}

func variant(depth int, attn2, qkNorm bool) string {
	switch {
	case attn2:
		return "3.5 Medium"
	case depth >= 38:
		return "3.5 Large"
	case qkNorm:
		return "3.5"
	}
	return "3 Medium"
}
