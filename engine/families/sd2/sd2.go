// Package sd2 is the Stable Diffusion 2.x family (512 ε and 768 v): the SD1
// UNet layout with linear projections and a 1024-wide OpenCLIP-H context.
// Recognised; not runnable yet.
package sd2

import (
	"github.com/darkroom-ai/darkroom/engine/family"
)

// Name is the family's name.
const Name = "SD2.x"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims an LDM UNet (input blocks, no label_emb, no SDXL
// conditioner) with an OpenCLIP text model or a 1024-wide context, and
// names the prediction type where the file says it.
func Probe(k *family.Keys) (family.Detection, bool) {
	if !family.LDMUNet(k) {
		return family.Detection{}, false
	}
	var d family.Detection
	if key := k.First("cond_stage_model.model."); key != "" {
		d.Evidence = []string{k.Key(key)}
	} else if w, key := family.LDMContextWidth(k); w == 1024 {
		d.Evidence = []string{k.Key(key) + " (context 1024)"}
	} else {
		return family.Detection{}, false
	}
	switch {
	case k.Has("v_pred"):
		d.Variant, d.Evidence = "v-prediction", append(d.Evidence, k.Key("v_pred"))
	case k.JSONString("scheduler/scheduler_config.json", "prediction_type") == "v_prediction":
		d.Variant = "v-prediction"
		d.Evidence = append(d.Evidence, `scheduler/scheduler_config.json prediction_type="v_prediction"`)
	case k.JSONString("scheduler/scheduler_config.json", "prediction_type") == "epsilon":
		d.Variant = "ε-prediction"
		d.Evidence = append(d.Evidence, `scheduler/scheduler_config.json prediction_type="epsilon"`)
	case k.Meta("modelspec.prediction_type") != "":
		pt := k.Meta("modelspec.prediction_type")
		d.Variant = pt + "-prediction"
		d.Evidence = append(d.Evidence, family.Meta("modelspec.prediction_type", pt))
	}
	return d, true
}
