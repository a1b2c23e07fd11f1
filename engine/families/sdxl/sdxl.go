// Package sdxl is the SDXL family, base and refiner: the SGM UNet with size
// conditioning (label_emb), CLIP-L + OpenCLIP-bigG (base) or bigG alone
// (refiner). Recognised; not runnable yet.
package sdxl

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Name is the family's name.
const Name = "SDXL"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// ADM input widths of the size-conditioning MLP (label_emb.0.0):
// pooled bigG 1280 + 6 size ids × 256 for the base, + 5 × 256 for the
// refiner (aesthetic score instead of the target size).
const (
	admBase    = 2816
	admRefiner = 2560
)

// Probe claims the single-file layout (conditioner.embedders.* with the
// UNet's label_emb), a UNet-only file (label_emb of the base or refiner
// width), or a diffusers folder (unet/ with add_embedding, text_encoder_2/).
func Probe(k *family.Keys) (family.Detection, bool) {
	u := keymap.UNetPrefix
	if lab := u + "label_emb.0.0.weight"; k.Has(lab) && k.Has(u+"input_blocks.") {
		adm := k.Dim(lab, 1)
		ev := []string{k.Key(lab)}
		if adm > 0 {
			ev[0] += fmt.Sprintf(" (adm %d)", adm)
		}
		switch {
		case k.Has("conditioner.embedders.1."):
			return family.Detection{Variant: "base", Evidence: append([]string{k.Key(k.First("conditioner.embedders.1."))}, ev...)}, true
		case k.Has("conditioner.embedders.0.model."):
			return family.Detection{Variant: "refiner", Evidence: append([]string{k.Key(k.First("conditioner.embedders.0.model."))}, ev...)}, true
		case adm == admBase && !k.Has("conditioner."):
			return family.Detection{Variant: "base", Evidence: ev}, true
		case adm == admRefiner && !k.Has("conditioner."):
			return family.Detection{Variant: "refiner", Evidence: ev}, true
		}
		return family.Detection{}, false
	}
	if emb := "unet.add_embedding.linear_1.weight"; k.Has(emb) && k.Has("text_encoder_2.") {
		ev := []string{k.Key(emb) + fmt.Sprintf(" (adm %d)", k.Dim(emb, 1))}
		if k.Has(keymap.CLIPPrefix) || k.Has("text_encoder.") {
			return family.Detection{Variant: "base", Evidence: ev}, true
		}
		return family.Detection{Variant: "refiner", Evidence: ev}, true
	}
	return family.Detection{}, false
}
