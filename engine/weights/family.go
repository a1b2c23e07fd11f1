package weights

import (
	"fmt"
	"sort"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// Family is a model architecture family.
type Family string

// Families DetectFamily can recognise.
const (
	FamilyUnknown     Family = "unknown"
	FamilySD1         Family = "SD1.x"
	FamilySD2         Family = "SD2.x"
	FamilySDXL        Family = "SDXL"
	FamilySDXLRefiner Family = "SDXL refiner"
	FamilySD3         Family = "SD3"
	FamilyFlux        Family = "Flux"
)

// Detection is the result of DetectFamily.
type Detection struct {
	Family Family
	// Key is the canonical tensor name that decided the family (empty when
	// the family is unknown).
	Key string
	// Reason explains an unknown result ("no probe matched", or the
	// families that matched at once).
	Reason string
}

// String describes the detection, e.g.
// `SDXL (found key "conditioner.embedders.1.model.ln_final.weight")`.
func (d Detection) String() string {
	if d.Family == FamilyUnknown {
		return fmt.Sprintf("unknown family (%s)", d.Reason)
	}
	return fmt.Sprintf("%s (found key %q)", d.Family, d.Key)
}

// Supported returns nil for families darkroom can run, and otherwise an
// error such as `looks like SDXL (found key "..."); SDXL is not supported yet`.
func (d Detection) Supported() error {
	switch d.Family {
	case FamilySD1:
		return nil
	case FamilyUnknown:
		return fmt.Errorf("unknown model family: %s", d.Reason)
	}
	return fmt.Errorf("looks like %s (found key %q); %s is not supported yet", d.Family, d.Key, d.Family)
}

// keySet answers prefix questions over sorted canonical names.
type keySet struct {
	src   Source
	names []string
}

// first returns the first name with the prefix, or "".
func (k keySet) first(prefix string) string {
	i := sort.SearchStrings(k.names, prefix)
	if i < len(k.names) && strings.HasPrefix(k.names[i], prefix) {
		return k.names[i]
	}
	return ""
}

func (k keySet) has(prefix string) bool { return k.first(prefix) != "" }

// contextWidth returns the cross-attention context width of the UNet (the
// input width of the first attn2.to_k) and the key it was read from.
func (k keySet) contextWidth() (int, string) {
	for _, name := range k.names {
		if strings.HasPrefix(name, keymap.UNetPrefix) && strings.HasSuffix(name, ".attn2.to_k.weight") {
			if info, ok := k.src.Info(name); ok && len(info.Shape) == 2 {
				return info.Shape[1], name
			}
		}
	}
	return 0, ""
}

const (
	unetInput = keymap.UNetPrefix + "input_blocks."
	labelEmb  = keymap.UNetPrefix + "label_emb."
	openCLIP  = "cond_stage_model.model."
	hfCLIP    = "cond_stage_model.transformer."
)

// probe decides whether the keys belong to one family and names the key
// that decided it. Probes are independent of each other: DetectFamily runs
// all of them, and more than one match is reported as ambiguous.
type probe struct {
	family Family
	match  func(k keySet) (key string, ok bool)
}

var probes = []probe{
	{FamilySD1, probeSD1},
	{FamilySD2, probeSD2},
	{FamilySDXL, probeSDXL},
	{FamilySDXLRefiner, probeSDXLRefiner},
	{FamilySD3, probeSD3},
	{FamilyFlux, probeFlux},
}

// ldmUNet reports the LDM UNet of SD1/SD2: input blocks, no class/size
// embedding (label_emb) and no SDXL conditioner.
func ldmUNet(k keySet) bool {
	return k.has(unetInput) && !k.has(labelEmb) && !k.has("conditioner.")
}

// probeSD1: LDM UNet + HF CLIP text model, no OpenCLIP, context not 1024.
func probeSD1(k keySet) (string, bool) {
	if !ldmUNet(k) || k.has(openCLIP) {
		return "", false
	}
	if w, _ := k.contextWidth(); w == 1024 {
		return "", false
	}
	key := k.first(keymap.CLIPPrefix + "embeddings.token_embedding.")
	if key == "" {
		key = k.first(hfCLIP)
	}
	return key, key != ""
}

// probeSD2: LDM UNet + OpenCLIP text model, or a 1024-wide context.
func probeSD2(k keySet) (string, bool) {
	if !ldmUNet(k) {
		return "", false
	}
	if key := k.first(openCLIP); key != "" {
		return key, true
	}
	if w, key := k.contextWidth(); w == 1024 {
		return key, true
	}
	return "", false
}

// probeSDXL: two conditioner embedders (CLIP-L and OpenCLIP bigG) and the
// size embedding label_emb.
func probeSDXL(k keySet) (string, bool) {
	key := k.first("conditioner.embedders.1.")
	return key, key != "" && k.has(labelEmb)
}

// probeSDXLRefiner: a single OpenCLIP conditioner embedder and label_emb.
func probeSDXLRefiner(k keySet) (string, bool) {
	key := k.first("conditioner.embedders.0.model.")
	return key, key != "" && !k.has("conditioner.embedders.1.") && k.has(labelEmb)
}

// probeSD3: MMDiT joint blocks.
func probeSD3(k keySet) (string, bool) {
	key := k.first(keymap.UNetPrefix + "joint_blocks.")
	return key, key != ""
}

// probeFlux: double- and single-stream blocks, with or without the
// "model.diffusion_model." prefix.
func probeFlux(k keySet) (string, bool) {
	for _, p := range []string{"", keymap.UNetPrefix} {
		if key := k.first(p + "double_blocks."); key != "" && k.has(p+"single_blocks.") {
			return key, true
		}
	}
	return "", false
}

// DetectFamily identifies the model family from canonical tensor names
// (and, for SD2, one shape). It never guesses: when no probe or several
// probes match, the family is FamilyUnknown.
func DetectFamily(src Source) Detection {
	k := keySet{src: src, names: src.Names()}
	var hits []Detection
	for _, p := range probes {
		if key, ok := p.match(k); ok {
			hits = append(hits, Detection{Family: p.family, Key: key})
		}
	}
	switch len(hits) {
	case 0:
		return Detection{Family: FamilyUnknown, Reason: "no known key pattern"}
	case 1:
		return hits[0]
	}
	parts := make([]string, len(hits))
	for i, h := range hits {
		parts[i] = h.String()
	}
	return Detection{Family: FamilyUnknown, Reason: "ambiguous: " + strings.Join(parts, ", ")}
}
