// Package flux2 is the FLUX.2 family: double- and single-stream blocks with
// modulation shared across blocks, a Mistral text encoder and a new
// 32-channel VAE. Recognised; not runnable yet.
package flux2

import "github.com/darkroom-ai/darkroom/engine/family"

// Name is the family's name.
const Name = "Flux.2"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims double-stream blocks with modulation shared across blocks
// (BFL's double_stream_modulation_img, or diffusers' Flux2Transformer2DModel
// equivalents).
func Probe(k *family.Keys) (family.Detection, bool) {
	if _, key, ok := k.FindUnder(family.NativeRoots, "double_stream_modulation_img.", "double_blocks."); ok {
		return family.Detection{Evidence: []string{k.Key(key)}}, true
	}
	if _, key, ok := k.FindUnder(family.DiffusersRoots, "double_stream_modulation_img.", "single_transformer_blocks."); ok {
		d := family.Detection{Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}
