// Package hunyuanvideo is the HunyuanVideo family: FLUX-style double- and
// single-stream blocks over 3-D patches, with a token refiner over the
// LLaVA-Llama-3 text states. Recognised; not runnable yet.
package hunyuanvideo

import "github.com/darkroom-ai/darkroom/engine/family"

// Name is the family's name.
const Name = "HunyuanVideo"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims double-stream blocks beside the text token refiner, in the
// original names (txt_in.individual_token_refiner) or diffusers'
// (context_embedder.token_refiner).
func Probe(k *family.Keys) (family.Detection, bool) {
	if _, key, ok := k.FindUnder(family.NativeRoots, "txt_in.individual_token_refiner.", "double_blocks."); ok {
		return family.Detection{Evidence: []string{k.Key(key)}}, true
	}
	if _, key, ok := k.FindUnder(family.DiffusersRoots, "context_embedder.token_refiner.", "transformer_blocks."); ok {
		return family.Detection{Evidence: []string{k.Key(key)}}, true
	}
	return family.Detection{}, false
}
