// Package ltx is the LTX-Video family: a video DiT with a 1:192
// compression VAE and T5-XXL conditioning. Recognised; not runnable yet.
package ltx

import "github.com/darkroom-ai/darkroom/engine/family"

// Name is the family's name.
const Name = "LTX-Video"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims LTX's original names (patchify_proj, adaln_single,
// caption_projection beside transformer_blocks) or diffusers'
// LTXVideoTransformer3DModel (proj_in, time_embed, caption_projection,
// scale_shift_table).
func Probe(k *family.Keys) (family.Detection, bool) {
	if _, key, ok := k.FindUnder(family.NativeRoots, "adaln_single.", "patchify_proj.", "transformer_blocks."); ok {
		return family.Detection{Evidence: []string{k.Key(key)}}, true
	}
	if _, key, ok := k.FindUnder(family.DiffusersRoots, "caption_projection.", "scale_shift_table", "transformer_blocks.0.attn1.", "proj_in."); ok {
		d := family.Detection{Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}
