// Package flux1 is the FLUX.1 family (dev, schnell, Krea and fine-tunes):
// double- and single-stream blocks with per-block modulation, CLIP-L pooled
// + T5-XXL. Recognised; not runnable yet.
package flux1

import (
	"github.com/darkroom-ai/darkroom/engine/family"
)

// Name is the family's name.
const Name = "Flux.1"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims BFL's names (double_blocks with img_mod, single_blocks; bare
// or under model.diffusion_model.) or a diffusers FluxTransformer2DModel
// (transformer_blocks with norm1.linear and single_transformer_blocks);
// Chroma (no per-block modulation, a distilled guidance layer), FLUX.2
// (shared modulation) and HunyuanVideo (the same block names, with a text
// token refiner) are their own families. The guidance embedding makes
// it dev-like, its absence schnell-like.
func Probe(k *family.Keys) (family.Detection, bool) {
	if root, key, ok := k.FindUnder(family.NativeRoots, "double_blocks.0.img_mod.lin.", "single_blocks."); ok {
		if k.Has(root+"distilled_guidance_layer.") || k.Has(root+"double_stream_modulation_img.") || k.Has(root+"txt_in.individual_token_refiner.") {
			return family.Detection{}, false
		}
		return family.Detection{Variant: variant(k.Has(root + "guidance_in.")), Evidence: []string{k.Key(key)}}, true
	}
	if root, key, ok := k.FindUnder(family.DiffusersRoots, "transformer_blocks.0.norm1.linear.", "single_transformer_blocks.0.norm.linear.", "x_embedder."); ok && !k.Has(root+"context_embedder.token_refiner.") {
		d := family.Detection{Variant: variant(k.Has(root + "time_text_embed.guidance_embedder.")), Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}

func variant(guidance bool) string {
	if guidance {
		return "dev"
	}
	return "schnell"
}
