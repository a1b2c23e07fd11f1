// Package auraflow is the AuraFlow family: an MMDiT with register tokens
// and Pile-T5 conditioning. Recognised; not runnable yet.
package auraflow

import "github.com/darkroom-ai/darkroom/engine/family"

// Name is the family's name.
const Name = "AuraFlow"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims AuraFlow's original names (double_layers, single_layers,
// register_tokens) or diffusers' AuraFlowTransformer2DModel
// (joint_transformer_blocks, single_transformer_blocks, register_tokens).
func Probe(k *family.Keys) (family.Detection, bool) {
	if _, key, ok := k.FindUnder(family.NativeRoots, "double_layers.", "register_tokens"); ok {
		return family.Detection{Evidence: []string{k.Key(key)}}, true
	}
	if _, key, ok := k.FindUnder(family.DiffusersRoots, "joint_transformer_blocks.", "register_tokens"); ok {
		d := family.Detection{Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}
