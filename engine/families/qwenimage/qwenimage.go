// Package qwenimage is the Qwen-Image family: a dual-stream MMDiT
// conditioned by Qwen2.5-VL-7B, with a Wan-style VAE. Recognised; not
// runnable yet.
package qwenimage

import "github.com/darkroom-ai/darkroom/engine/family"

// Name is the family's name.
const Name = "Qwen-Image"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims transformer blocks with image and text modulation
// (img_mod, txt_mod) and a text RMS norm (txt_norm), bare, under
// model.diffusion_model. or in a diffusers transformer/.
func Probe(k *family.Keys) (family.Detection, bool) {
	roots := append(append([]string{}, family.NativeRoots...), family.DiffusersRoots...)
	if _, key, ok := k.FindUnder(roots, "transformer_blocks.0.img_mod.", "transformer_blocks.0.txt_mod.", "txt_norm."); ok {
		d := family.Detection{Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}
