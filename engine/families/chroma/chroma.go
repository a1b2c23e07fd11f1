// Package chroma is the Chroma family: a FLUX.1-schnell derivative whose
// per-block modulation is replaced by one distilled guidance network, T5
// only. Recognised; not runnable yet.
package chroma

import "github.com/darkroom-ai/darkroom/engine/family"

// Name is the family's name.
const Name = "Chroma"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims a distilled_guidance_layer beside double-stream blocks.
func Probe(k *family.Keys) (family.Detection, bool) {
	if _, key, ok := k.FindUnder(family.NativeRoots, "distilled_guidance_layer.", "double_blocks."); ok {
		return family.Detection{Evidence: []string{k.Key(key)}}, true
	}
	if _, key, ok := k.FindUnder(family.DiffusersRoots, "distilled_guidance_layer.", "transformer_blocks."); ok {
		d := family.Detection{Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}
