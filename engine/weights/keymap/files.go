package keymap

import (
	"fmt"
	"sort"
	"strings"
)

// Canonical names of the CLIP-L (and ViT-H) text encoder tensors that sit
// beside the text model: the projection of CLIPTextModelWithProjection (a
// Linear weight [proj, width], no bias) and CLIP's contrastive temperature
// (a scalar). The SD1 text encoder uses neither; they are kept so that
// nothing stored is dropped. bigG's are under CLIPGPrefix (see Slots).
const (
	TextProjection = "cond_stage_model.transformer.text_projection.weight"
	LogitScale     = "cond_stage_model.logit_scale"
)

// Component is what the tensors of one weight file hold: the kind of a
// separate component file, or a whole checkpoint, or unknown.
type Component string

// Components DetectComponent reports.
const (
	// ComponentUnknown is a file of no layout keymap converts (a Flux or
	// SD3 transformer, T5, ...): its names are left as they are for the
	// caller to report.
	ComponentUnknown Component = "unknown"
	// ComponentCheckpoint is a single-file checkpoint holding several
	// components under the canonical prefixes.
	ComponentCheckpoint Component = "checkpoint"
	// ComponentDiffusionModel is a UNet alone: bare LDM names
	// ("input_blocks.0.0.weight", as ComfyUI's diffusion_models/ files
	// store them), diffusers names, or canonical "model.diffusion_model."
	// names.
	ComponentDiffusionModel Component = "diffusion model"
	// ComponentVAE is an autoencoder alone: bare LDM names
	// ("encoder.down.0...", "quant_conv.weight"), diffusers names, or
	// "first_stage_model." names.
	ComponentVAE Component = "vae"
	// ComponentTextEncoder is a CLIP text encoder alone: in the
	// transformers layout ("text_model.*" or the same names without
	// "text_model.", with an optional "text_projection.weight" and
	// "logit_scale"), bare or under "transformer.", a checkpoint's or
	// ComfyUI's prefix ("cond_stage_model.transformer.",
	// "conditioner.embedders.0.transformer.", "clip_l.transformer.",
	// "text_encoders.clip_g.transformer.", ...); or an OpenCLIP text tower
	// ("transformer.resblocks.*", "token_embedding.weight", ...), bare or
	// under a checkpoint's prefix. Its width picks its Slot.
	ComponentTextEncoder Component = "text encoder"
)

// Markers are empty or scalar tensors that ComfyUI's checkpoint savers
// write beside the weights to say how the model predicts (v-prediction,
// zero terminal SNR, EDM sigmas). They keep their names in every layout (a
// wrapper prefix is stripped from them too) so that family and prediction
// probes find them.
var markers = map[string]bool{
	"v_pred":              true,
	"ztsnr":               true,
	"edm_vpred.sigma_max": true,
	"edm_vpred.sigma_min": true,
	"edm_mean":            true,
	"edm_std":             true,
}

// IsMarker reports whether a name is one of ComfyUI's prediction markers
// ("v_pred", "ztsnr", "edm_vpred.sigma_max", ...).
func IsMarker(name string) bool { return markers[name] }

// wrappers are prefixes that training code puts in front of every name of
// a state dict: torch DDP ("module."), torch.compile ("_orig_mod.") and
// wrapper modules ("model.", as in "model.model.diffusion_model.*" EMA
// exports). One is stripped only when every name of the file carries it
// and the names below it have a known layout.
var wrappers = []string{"module.", "_orig_mod.", "model."}

// comfyTextEncoders are the per-model prefixes ComfyUI gives text encoders
// in its own state dicts. "clip_l." is read as the SD1 text encoder only
// when no other of them is present (with "clip_g." it is SDXL's first one).
var comfyTextEncoders = []string{"clip_l.", "clip_g.", "clip_h.", "t5xxl.", "t5xl.", "pile_t5xl.", "mt5xl.", "umt5xxl.", "t5base.", "byt5_small.", "gemma2_2b.", "llama.", "hydit_clip."}

// form is how the names of a file are converted.
type form int

const (
	formNone          form = iota // unknown: NormalizeLDM only (names kept)
	formLDM                       // canonical prefixes: NormalizeLDM, clip_l mapped
	formBareUNet                  // LDM UNet without prefix
	formDiffusersUNet             // diffusers UNet2DConditionModel
	formBareVAE                   // LDM autoencoder without prefix
	formDiffusersVAE              // diffusers AutoencoderKL
	formTextEncoder               // transformers CLIP text encoder
	formOpenCLIP                  // OpenCLIP text tower
)

// layout is what detect found in one file.
type layout struct {
	kind    Component
	wrapper string // stripped from every name
	form    form
	clipL   bool   // formLDM: "clip_l." is the SD1 text encoder
	te      teForm // formTextEncoder
	outer   string // formOpenCLIP: the prefix of the tower's names
}

// DetectComponent tells what one weight file holds from its tensor names,
// and the wrapper prefix every name carries ("module.", "_orig_mod.",
// "model.", or several in a row such as "module._orig_mod."), which
// ComponentFile and SingleFile strip; it is "" when there is none or the
// kind is unknown. A wrapper is recognised only when all names share it,
// never name by name.
func DetectComponent(names []string) (Component, string) {
	l := detect(names)
	return l.kind, l.wrapper
}

// ComponentFile converts the names of one file that should hold kind (a
// --vae, --text-encoder or UNet-only file) to canonical names: one Rename
// per name, in order, with the wrapper prefix stripped and the component
// placed under the canonical prefix of its Slot, which is returned too (a
// text encoder's by its width, read through shapes). Markers keep their
// names. A file of another kind, or with names no layout of kind explains,
// is an error naming them; an OpenCLIP text tower of no slot's width is
// an error matching ErrNoSlot.
func ComponentFile(kind Component, names []string, shapes Shapes) ([]Rename, Slot, error) {
	comp := componentName[kind]
	if comp == "" && kind != ComponentCheckpoint {
		return nil, Slot{}, fmt.Errorf("keymap: no layout of kind %q to convert to", kind)
	}
	l := detect(names)
	if l.kind == kind {
		out, slot, err := convertFile(l, names, shapes)
		if err != nil {
			return nil, Slot{}, err
		}
		if kind == ComponentTextEncoder && slot.Name == "" {
			return nil, Slot{}, fmt.Errorf("not a text encoder darkroom places: an OpenCLIP text model %d wide (bigG is %d, ViT-H %d): %w",
				textWidth(names, shapes), SlotNamed("clip_g").Width, SlotNamed("clip_h").Width, ErrNoSlot)
		}
		return out, slot, nil
	}
	if l.kind != ComponentUnknown || kind == ComponentCheckpoint {
		return nil, Slot{}, fmt.Errorf("not a %s file: it holds %s (e.g. %q)", kind, l.kind.phrase(), firstNonMarker(names))
	}
	stripped := stripShared(names)
	var misfits []string
	for i, s := range stripped {
		if !fits(kind, s) {
			misfits = append(misfits, names[i])
		}
	}
	if len(misfits) == 0 {
		// Every name fits some layout of kind, but not one layout together
		// (bare and prefixed names mixed, or a required part missing).
		return nil, Slot{}, fmt.Errorf("not a %s file: its %d tensor names mix layouts or lack the main blocks (e.g. %q)", kind, len(names), firstNonMarker(names))
	}
	sort.Strings(misfits)
	return nil, Slot{}, fmt.Errorf("not a %s file: %w", kind, &UnknownKeysError{Component: comp, Keys: misfits})
}

// phrase describes what a file of kind k holds, in a sentence.
func (k Component) phrase() string {
	switch k {
	case ComponentCheckpoint:
		return "a whole checkpoint"
	case ComponentDiffusionModel:
		return "a diffusion model"
	case ComponentVAE:
		return "a VAE"
	case ComponentTextEncoder:
		return "a text encoder"
	}
	return "tensors of no layout darkroom converts"
}

// componentName names each kind in UnknownKeysError.
var componentName = map[Component]string{
	ComponentDiffusionModel: "UNet",
	ComponentVAE:            "VAE",
	ComponentTextEncoder:    "text encoder",
}

// SingleFile converts the names of a single .safetensors file opened as a
// model: a checkpoint in the canonical layout (A1111, ComfyUI's
// CheckpointSave: "model.diffusion_model.*", "first_stage_model.*",
// "cond_stage_model.*", markers and training leftovers such as
// "alphas_cumprod" kept), with ComfyUI's "clip_l." text encoder names and
// wrapper prefixes handled, or one component alone (see ComponentFile). A
// file of unknown layout keeps its names (NormalizeLDM), so that family
// detection can name what it is; so does an OpenCLIP text tower of no
// slot's width. shapes gives a text encoder's width (nil: unknown). The
// result has one Rename per name.
func SingleFile(names []string, shapes Shapes) ([]Rename, error) {
	out, _, err := convertFile(detect(names), names, shapes)
	return out, err
}

func firstNonMarker(names []string) string {
	for _, n := range names {
		if !markers[n] {
			return n
		}
	}
	if len(names) > 0 {
		return names[0]
	}
	return ""
}

// detect classifies the names as they are and, failing that, below each
// wrapper prefix all of them share.
func detect(names []string) layout {
	if l := classify(names); l.kind != ComponentUnknown {
		return l
	}
	for _, w := range wrappers {
		if !allHavePrefix(names, w) {
			continue
		}
		inner := make([]string, len(names))
		for i, n := range names {
			inner[i] = n[len(w):]
		}
		if l := detect(inner); l.kind != ComponentUnknown {
			l.wrapper = w + l.wrapper
			return l
		}
	}
	return layout{kind: ComponentUnknown}
}

func allHavePrefix(names []string, p string) bool {
	for _, n := range names {
		if !strings.HasPrefix(n, p) {
			return false
		}
	}
	return len(names) > 0
}

// stripShared strips the "module." and "_orig_mod." wrappers that every
// name carries (for error messages about files detect could not place;
// "model." is left, as it starts canonical names too).
func stripShared(names []string) []string {
	out := names
	for changed := true; changed; {
		changed = false
		for _, w := range []string{"module.", "_orig_mod."} {
			if allHavePrefix(out, w) {
				next := make([]string, len(out))
				for i, n := range out {
					next[i] = n[len(w):]
				}
				out, changed = next, true
			}
		}
	}
	return out
}

// root returns the first dot-separated component of a name and the rest.
func root(name string) (first, rest string) {
	first, rest, _ = strings.Cut(name, ".")
	return first, rest
}

// LDM UNet top-level modules (label_emb: class/size-conditioned UNets), and
// the empty "scaled_fp8" tensor ComfyUI stores inside a UNet whose fp8
// weights carry scales (placed under UNetPrefix like the rest, where
// ComfyUI's savers put it).
var ldmUNetRoots = map[string]bool{"time_embed": true, "label_emb": true, "input_blocks": true, "middle_block": true, "output_blocks": true, "out": true, "scaled_fp8": true}

// Diffusers UNet2DConditionModel top-level modules that DiffusersUNet
// converts (add_embedding: SDXL's size conditioning).
var diffusersUNetRoots = map[string]bool{"conv_in": true, "time_embedding": true, "add_embedding": true, "down_blocks": true, "mid_block": true, "up_blocks": true, "conv_norm_out": true, "conv_out": true}

// Autoencoder modules below "encoder." / "decoder.": shared by both
// layouts, LDM only, diffusers only.
var (
	vaeShared    = map[string]bool{"conv_in": true, "conv_out": true}
	vaeLDM       = map[string]bool{"down": true, "up": true, "mid": true, "norm_out": true}
	vaeDiffusers = map[string]bool{"down_blocks": true, "up_blocks": true, "mid_block": true, "conv_norm_out": true}
)

// vaeSide classifies a bare autoencoder name: ok when it is one, ldm or
// diffusers when only that layout has the module.
func vaeSide(name string) (ok, ldm, diffusers bool) {
	first, rest := root(name)
	switch first {
	case "quant_conv", "post_quant_conv":
		return true, false, false
	case "encoder", "decoder":
		sub, _ := root(rest)
		if first == "encoder" && (sub == "up" || sub == "up_blocks") || first == "decoder" && (sub == "down" || sub == "down_blocks") {
			return false, false, false
		}
		return vaeShared[sub] || vaeLDM[sub] || vaeDiffusers[sub], vaeLDM[sub], vaeDiffusers[sub]
	}
	return false, false, false
}

// fits reports whether one (wrapper-free) name belongs to some layout of
// kind, ignoring the rules that bind the names of a file together.
func fits(kind Component, s string) bool {
	if markers[s] {
		return true
	}
	first, _ := root(s)
	switch kind {
	case ComponentDiffusionModel:
		return strings.HasPrefix(s, UNetPrefix) || ldmUNetRoots[first] || diffusersUNetRoots[first]
	case ComponentVAE:
		ok, _, _ := vaeSide(s)
		return strings.HasPrefix(s, VAEPrefix) || ok
	case ComponentTextEncoder:
		for _, f := range teForms {
			if rest, ok := strings.CutPrefix(s, f.outer); ok {
				if _, ok := f.canonical(rest, !strings.HasPrefix(strings.TrimPrefix(rest, f.inner), "text_model.")); ok {
					return true
				}
			}
		}
		for _, outer := range openCLIPOuters {
			if rest, ok := strings.CutPrefix(s, outer); ok && openCLIPName(rest) {
				return true
			}
		}
	}
	return false
}

// classify finds the layout of wrapper-free names.
func classify(names []string) layout {
	var unet, vae, te, other bool
	var clipL, otherComfyTE bool
	for _, n := range names {
		switch {
		case markers[n]:
		case strings.HasPrefix(n, UNetPrefix):
			unet = true
		case strings.HasPrefix(n, VAEPrefix):
			vae = true
		case strings.HasPrefix(n, "cond_stage_model.") || strings.HasPrefix(n, "conditioner."):
			te = true
		default:
			other = true
			for _, p := range comfyTextEncoders {
				if strings.HasPrefix(n, p) {
					if p == "clip_l." {
						clipL = true
					} else {
						otherComfyTE = true
					}
				}
			}
		}
	}
	// Any ComfyUI text encoder counts as a component; only a lone clip_l
	// is renamed (to the SD1 text encoder).
	te = te || clipL || otherComfyTE
	clipL = clipL && !otherComfyTE
	parts := 0
	for _, b := range []bool{unet, vae, te} {
		if b {
			parts++
		}
	}
	switch {
	case parts >= 2:
		return layout{kind: ComponentCheckpoint, form: formLDM, clipL: clipL}
	case unet:
		return layout{kind: ComponentDiffusionModel, form: formLDM}
	case vae:
		return layout{kind: ComponentVAE, form: formLDM}
	}
	if tf, ok := textEncoderForm(names); ok {
		return layout{kind: ComponentTextEncoder, form: formTextEncoder, te: tf}
	}
	if outer, ok := openCLIPForm(names); ok {
		return layout{kind: ComponentTextEncoder, form: formOpenCLIP, outer: outer}
	}
	if te || !other {
		return layout{kind: ComponentUnknown} // several text encoders, or only markers
	}

	// Bare component names: every name must fit one layout.
	bareUNet, diffUNet, vaeOK := true, true, true
	var hasInput, hasDown, hasUp, vaeLDMSeen, vaeDiffSeen, vaeSeen bool
	for _, n := range names {
		if markers[n] {
			continue
		}
		first, _ := root(n)
		bareUNet = bareUNet && ldmUNetRoots[first]
		diffUNet = diffUNet && diffusersUNetRoots[first]
		hasInput = hasInput || first == "input_blocks"
		hasDown = hasDown || first == "down_blocks"
		hasUp = hasUp || first == "up_blocks"
		ok, ldm, diff := vaeSide(n)
		vaeOK = vaeOK && ok
		vaeSeen = vaeSeen || first == "encoder" || first == "decoder"
		vaeLDMSeen = vaeLDMSeen || ldm
		vaeDiffSeen = vaeDiffSeen || diff
	}
	switch {
	case bareUNet && hasInput:
		return layout{kind: ComponentDiffusionModel, form: formBareUNet}
	case diffUNet && hasDown && hasUp:
		return layout{kind: ComponentDiffusionModel, form: formDiffusersUNet}
	case vaeOK && vaeSeen && !vaeDiffSeen:
		return layout{kind: ComponentVAE, form: formBareVAE}
	case vaeOK && vaeSeen && vaeDiffSeen && !vaeLDMSeen:
		return layout{kind: ComponentVAE, form: formDiffusersVAE}
	}
	return layout{kind: ComponentUnknown}
}

// teForm is where a transformers CLIP text encoder sits in a file: every
// name starts with outer; logit_scale directly below it; the text model
// (and text_projection.weight) below outer+inner.
type teForm struct {
	outer, inner string
}

// teForms are tried in order: a file of ComfyUI's or a checkpoint's names
// first, a transformers file ("text_model.*") last. The prefix says
// nothing about which encoder it is (the width does).
var teForms = []teForm{
	{"cond_stage_model.", "transformer."},
	{"conditioner.embedders.0.", "transformer."},
	{"clip_l.", "transformer."},
	{"clip_g.", "transformer."},
	{"clip_h.", "transformer."},
	{"text_encoders.clip_l.", "transformer."},
	{"text_encoders.clip_g.", "transformer."},
	{"", "transformer."},
	{"", ""},
}

// canonical converts a name below outer to its transformers name
// ("text_model.*", "text_projection.weight", "logit_scale"), which a Slot
// places. bare says the file's text model lacks the "text_model." base
// prefix.
func (f teForm) canonical(rest string, bare bool) (string, bool) {
	if rest == "logit_scale" {
		return rest, true
	}
	r, ok := strings.CutPrefix(rest, f.inner)
	if !ok {
		return "", false
	}
	if r == "text_projection.weight" {
		return r, true
	}
	if !bare {
		if r, ok = strings.CutPrefix(r, "text_model."); !ok {
			return "", false
		}
	}
	first, sub := root(r)
	switch first {
	case "embeddings", "final_layer_norm":
	case "encoder":
		if !strings.HasPrefix(sub, "layers.") {
			return "", false // T5 and others: encoder.block.*
		}
	default:
		return "", false
	}
	if _, _, ok := splitParam(r); !ok && r != "embeddings.position_ids" {
		return "", false
	}
	return "text_model." + r, true
}

// textEncoderForm finds the form under which every (non-marker) name is
// part of one CLIP text encoder, with or without "text_model." for the
// whole file, and at least one text model tensor.
func textEncoderForm(names []string) (teForm, bool) {
	for _, f := range teForms {
		bare := true
		for _, n := range names {
			if rest, ok := strings.CutPrefix(n, f.outer+f.inner); ok && strings.HasPrefix(rest, "text_model.") {
				bare = false
				break
			}
		}
		model, ok := 0, true
		for _, n := range names {
			if markers[n] {
				continue
			}
			rest, found := strings.CutPrefix(n, f.outer)
			if !found {
				ok = false
				break
			}
			to, good := f.canonical(rest, bare)
			if !good {
				ok = false
				break
			}
			if strings.HasPrefix(to, "text_model.") {
				model++
			}
		}
		if ok && model > 0 {
			return f, true
		}
	}
	return teForm{}, false
}

// convertFile renames names according to l and returns the slot they
// fill (the zero Slot for a checkpoint, an unknown layout, or an OpenCLIP
// tower of no slot's width, whose names are kept).
func convertFile(l layout, names []string, shapes Shapes) ([]Rename, Slot, error) {
	stripped := names
	if l.wrapper != "" {
		stripped = make([]string, len(names))
		for i, n := range names {
			stripped[i] = n[len(l.wrapper):]
		}
	}
	out := make([]Rename, len(names))
	switch l.form {
	case formDiffusersUNet, formDiffusersVAE:
		convert, slot := DiffusersUNet, SlotNamed("unet")
		if l.form == formDiffusersVAE {
			convert, slot = DiffusersVAE, SlotNamed("vae")
		}
		var idx []int
		var inner []string
		for i, s := range stripped {
			if markers[s] {
				out[i] = Rename{From: names[i], To: s}
				continue
			}
			idx = append(idx, i)
			inner = append(inner, s)
		}
		rs, err := convert(inner)
		if err != nil {
			return nil, Slot{}, err
		}
		for k, r := range rs { // in input order, one per name
			r.From = names[idx[k]]
			out[idx[k]] = r
		}
		return out, slot, nil
	case formTextEncoder:
		slot, _ := textEncoderSlot(textWidth(names, shapes), false)
		bare := true
		for _, s := range stripped {
			if rest, ok := strings.CutPrefix(s, l.te.outer+l.te.inner); ok && strings.HasPrefix(rest, "text_model.") {
				bare = false
			}
		}
		for i, s := range stripped {
			if markers[s] {
				out[i] = Rename{From: names[i], To: s}
				continue
			}
			rel, _ := l.te.canonical(strings.TrimPrefix(s, l.te.outer), bare)
			out[i] = Rename{From: names[i], To: slot.hfName(rel)}
		}
		return out, slot, nil
	case formOpenCLIP:
		slot, ok := textEncoderSlot(textWidth(names, shapes), true)
		for i, s := range stripped {
			to := names[i] // no slot: names kept
			switch {
			case markers[s]:
				to = s
			case ok:
				to = slot.OpenCLIP + strings.TrimPrefix(s, l.outer)
			}
			out[i] = Rename{From: names[i], To: to}
		}
		return out, slot, nil
	}
	var slot Slot
	switch l.kind {
	case ComponentDiffusionModel:
		slot = SlotNamed("unet")
	case ComponentVAE:
		slot = SlotNamed("vae")
	}
	for i, s := range stripped {
		switch {
		case markers[s]:
		case l.form == formBareUNet:
			s = UNetPrefix + s
		case l.form == formBareVAE:
			s = VAEPrefix + s
		case l.form == formLDM && l.clipL && strings.HasPrefix(s, "clip_l."):
			s = "cond_stage_model." + s[len("clip_l."):]
		}
		r := NormalizeLDM(s)
		r.From = names[i]
		out[i] = r
	}
	return out, slot, nil
}

// DiffusersTextEncoder converts the names of a diffusers text_encoder/ or
// text_encoder_2/ file: a transformers CLIPTextModel or
// CLIPTextModelWithProjection, with the "text_model." base prefix or
// without it (transformers loads both; the choice is made for the whole
// file), a "text_projection.weight" and position_ids buffers, placed in
// the Slot its width names (shapes; nil: CLIP-L): CLIP-L and ViT-H under
// "cond_stage_model.transformer." (TextProjection), bigG under
// CLIPGPrefix.
func DiffusersTextEncoder(names []string, shapes Shapes) ([]Rename, error) {
	slot, _ := textEncoderSlot(textWidth(names, shapes), false)
	return diffusersTextEncoderIn(slot, names)
}

// DiffusersTextEncoderIn is DiffusersTextEncoder into the named slot
// whatever the width: an SDXL pipeline's text_encoder_2/ is bigG by its
// folder (the refiner's only encoder, and models of other widths).
func DiffusersTextEncoderIn(slot string) func(names []string, shapes Shapes) ([]Rename, error) {
	return func(names []string, _ Shapes) ([]Rename, error) {
		return diffusersTextEncoderIn(SlotNamed(slot), names)
	}
}

func diffusersTextEncoderIn(slot Slot, names []string) ([]Rename, error) {
	f := teForm{}
	bare := true
	for _, n := range names {
		if strings.HasPrefix(n, "text_model.") {
			bare = false
			break
		}
	}
	out := make([]Rename, 0, len(names))
	var unknown []string
	for _, n := range names {
		rel, ok := f.canonical(n, bare)
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		out = append(out, Rename{From: n, To: slot.hfName(rel)})
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, &UnknownKeysError{Component: "text encoder", Layout: "diffusers", Keys: unknown}
	}
	return out, nil
}
