package keymap

import (
	"errors"
	"strconv"
	"strings"
)

// Canonical prefixes of the SDXL and SD2 text encoders besides CLIPPrefix.
const (
	// CLIPGPrefix is the root of OpenCLIP bigG (SDXL's second text
	// encoder) in the transformers layout of CLIPTextModelWithProjection:
	// "text_model.*" and "text_projection.weight" below it (a diffusers
	// text_encoder_2/, a separate clip_g file). The name SD3 checkpoints
	// use for it.
	CLIPGPrefix = "text_encoders.clip_g.transformer."
	// OpenCLIPGPrefix is bigG in the OpenCLIP layout ("transformer.resblocks.*"
	// with fused attention, "text_projection" [width, proj]), as the SDXL
	// base checkpoint stores it; the refiner checkpoint keeps it at
	// "conditioner.embedders.0.model.", a separate file lands here.
	OpenCLIPGPrefix = "conditioner.embedders.1.model."
	// OpenCLIPHPrefix is OpenCLIP ViT-H (SD2) in the OpenCLIP layout, as SD2
	// checkpoints store it.
	OpenCLIPHPrefix = "cond_stage_model.model."
)

// Slot is one component of a model that a separate file fills (ComfyUI's
// VAE and CLIP loaders): where that file's tensors land, and which tensors
// of the checkpoint it replaces.
type Slot struct {
	// Name is "unet", "vae", "clip_l", "clip_g" or "clip_h".
	Name string
	// Width is a text encoder's token-embedding width, which tells it from
	// the others (0 for the UNet and VAE).
	Width int
	// Prefix is the canonical prefix of the UNet or VAE; for a text encoder
	// the root of its transformers-layout names ("text_model.*",
	// "text_projection.weight").
	Prefix string
	// LogitScale is the canonical name of a transformers-layout text
	// encoder's "logit_scale".
	LogitScale string
	// OpenCLIP is the canonical prefix of the text encoder in the OpenCLIP
	// layout, "" when it has none.
	OpenCLIP string
	// Replaces are the name prefixes of a checkpoint's tensors that a
	// separate file for the slot removes, in every layout the checkpoint
	// may hold them.
	Replaces []string
}

// Slots is the table of component slots. Text encoders are told apart by
// their token-embedding width, never by file name; a transformers-layout
// text encoder of another width (a test model) is read as CLIP-L, as SD1
// files always were.
var Slots = []Slot{
	{Name: "unet", Prefix: UNetPrefix, Replaces: []string{UNetPrefix}},
	{Name: "vae", Prefix: VAEPrefix, Replaces: []string{VAEPrefix}},
	{Name: "clip_l", Width: 768, Prefix: "cond_stage_model.transformer.", LogitScale: LogitScale,
		Replaces: []string{"cond_stage_model.transformer.", LogitScale, "conditioner.embedders.0.transformer.", "text_encoders.clip_l."}},
	{Name: "clip_g", Width: 1280, Prefix: CLIPGPrefix, LogitScale: "text_encoders.clip_g.logit_scale", OpenCLIP: OpenCLIPGPrefix,
		Replaces: []string{OpenCLIPGPrefix, "conditioner.embedders.0.model.", "text_encoders.clip_g."}},
	{Name: "clip_h", Width: 1024, Prefix: "cond_stage_model.transformer.", LogitScale: LogitScale, OpenCLIP: OpenCLIPHPrefix,
		Replaces: []string{"cond_stage_model."}},
}

// SlotNamed returns the slot of that name (the zero Slot when none).
func SlotNamed(name string) Slot {
	for _, s := range Slots {
		if s.Name == name {
			return s
		}
	}
	return Slot{}
}

// ErrNoSlot is matched (errors.Is) by ComponentFile's error for a text
// encoder of a known layout whose width fills no slot (an OpenCLIP model
// that is neither bigG nor ViT-H).
var ErrNoSlot = errors.New("no text encoder slot")

// textEncoderSlot returns the slot of a text encoder width wide; openCLIP
// says the file is in the OpenCLIP layout, which only bigG and ViT-H have.
func textEncoderSlot(width int, openCLIP bool) (Slot, bool) {
	for _, s := range Slots {
		if s.Width != 0 && s.Width == width && (!openCLIP || s.OpenCLIP != "") {
			return s, true
		}
	}
	if openCLIP {
		return Slot{}, false
	}
	return SlotNamed("clip_l"), true
}

// hfName places a transformers-layout name ("text_model.*",
// "text_projection.weight", "logit_scale") in the slot.
func (s Slot) hfName(rel string) string {
	if rel == "logit_scale" {
		return s.LogitScale
	}
	return s.Prefix + rel
}

// Shapes gives the stored shape of a tensor by its stored name, nil when
// unknown. The text-encoder conversions use it to read the width; a nil
// Shapes knows no width.
type Shapes func(name string) []int

// textWidth is the width of a text encoder file: the second dimension of
// its token embedding, else the size of its final norm; 0 when unknown.
func textWidth(names []string, shapes Shapes) int {
	if shapes == nil {
		return 0
	}
	for _, n := range names {
		if strings.HasSuffix(n, "token_embedding.weight") {
			if s := shapes(n); len(s) == 2 {
				return s[1]
			}
		}
	}
	for _, n := range names {
		if strings.HasSuffix(n, "final_layer_norm.weight") || strings.HasSuffix(n, "ln_final.weight") {
			if s := shapes(n); len(s) == 1 {
				return s[0]
			}
		}
	}
	return 0
}

// openCLIPOuters are the prefixes an OpenCLIP text tower is found under in
// a file of its own: bare, or as a checkpoint stores it.
var openCLIPOuters = []string{"", OpenCLIPGPrefix, "conditioner.embedders.0.model.", OpenCLIPHPrefix}

// openCLIPName reports whether a name below the outer prefix belongs to an
// OpenCLIP text tower (open_clip's TextTransformer state dict).
func openCLIPName(rest string) bool {
	switch rest {
	case "token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias", "text_projection", "logit_scale":
		return true
	}
	r, ok := strings.CutPrefix(rest, "transformer.resblocks.")
	if !ok {
		return false
	}
	idx, sub, _ := strings.Cut(r, ".")
	if _, err := strconv.Atoi(idx); err != nil {
		return false
	}
	switch sub {
	case "ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias",
		"attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
		"mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias":
		return true
	}
	return false
}

// openCLIPForm finds the outer prefix under which every (non-marker) name
// is part of one OpenCLIP text tower with at least one residual block.
func openCLIPForm(names []string) (string, bool) {
	for _, outer := range openCLIPOuters {
		ok, blocks := true, false
		for _, n := range names {
			if markers[n] {
				continue
			}
			rest, found := strings.CutPrefix(n, outer)
			if !found || !openCLIPName(rest) {
				ok = false
				break
			}
			blocks = blocks || strings.HasPrefix(rest, "transformer.resblocks.")
		}
		if ok && blocks {
			return outer, true
		}
	}
	return "", false
}
