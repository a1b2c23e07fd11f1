// Package wan is the Wan 2.x video family (text- and image-to-video): a DiT
// over 3-D patches with self- and cross-attention per block, conditioned by
// UMT5-XXL. Recognised; not runnable yet.
package wan

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/family"
)

// Name is the family's name.
const Name = "Wan"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims Wan's original names (blocks.N.self_attn, blocks.N.cross_attn,
// patch_embedding) or diffusers' WanTransformer3DModel (blocks.N.attn1,
// condition_embedder, patch_embedding); the width tells 1.3B from 14B.
func Probe(k *family.Keys) (family.Detection, bool) {
	if root, key, ok := k.FindUnder(family.NativeRoots, "blocks.0.self_attn.", "blocks.0.cross_attn.", "patch_embedding."); ok {
		return family.Detection{Variant: size(k.Dim(root+"patch_embedding.weight", 0)), Evidence: []string{k.Key(key)}}, true
	}
	if root, key, ok := k.FindUnder(family.DiffusersRoots, "blocks.0.attn1.", "condition_embedder.", "patch_embedding."); ok {
		d := family.Detection{Variant: size(k.Dim(root+"patch_embedding.weight", 0)), Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}

func size(width int) string {
	switch width {
	case 1536:
		return "1.3B"
	case 3072:
		return "5B"
	case 5120:
		return "14B"
	}
	if width > 0 {
		return fmt.Sprintf("width %d", width)
	}
	return ""
}
