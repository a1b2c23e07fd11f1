package lora

import (
	"fmt"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// target is the weight a LoRA module changes: a canonical tensor, or a
// block of rows of one (q, k or v of OpenCLIP's fused in_proj_weight, of
// Flux's fused qkv and linear1). A module may have several targets, each
// taking its own block of the module's ΔW rows: a LoRA on Flux's fused
// qkv feeds a diffusers-layout model's to_q, to_k and to_v.
type target struct {
	weight, bias string
	// row0 and rows select rows of weight (and bias); rows 0 is the whole
	// tensor.
	row0, rows int
	// src0 is the first row of the module's ΔW this target takes, and
	// srcRows the number of rows that ΔW has; srcRows 0 means the ΔW is
	// exactly the target's rows (src0 0).
	src0, srcRows int
	// clip marks a text-encoder weight (ClipStrength applies).
	clip bool
	// transposed marks a weight stored as the transpose of the Linear
	// layer's (OpenCLIP's text_projection [width, proj]).
	transposed bool
}

// index maps every name a LoRA file may give a layer of the model to the
// layer's targets (one, or several row blocks of ΔW for a fused layer
// crossing layouts).
type index struct {
	src     weights.Source
	targets map[string][]target
	// ctxWidth is the UNet's cross-attention context width (0 when none).
	ctxWidth int
	// encoders are the text encoders found ("clip_l", "clip_g", "clip_h").
	encoders []string
}

// underscored is a module name as kohya-ss spells it ("down_blocks_0_…").
func underscored(s string) string { return strings.ReplaceAll(s, ".", "_") }

// add registers one whole target under every alias not yet taken.
func (x *index) add(t target, aliases ...string) { x.addSplit([]target{t}, aliases...) }

// addSplit registers a module whose ΔW feeds several targets.
func (x *index) addSplit(ts []target, aliases ...string) {
	for _, a := range aliases {
		if _, dup := x.targets[a]; !dup {
			x.targets[a] = ts
		}
	}
}

// encoderRoot is where a text encoder may sit in the canonical namespace
// (an HF layout's names are root + "text_model.*") and which one it is
// there; slot "" is told by the width (CLIP-L, or SD2's ViT-H from a
// diffusers folder).
type encoderRoot struct {
	root, slot string
}

// hfRoots are the transformers-layout places.
var hfRoots = []encoderRoot{
	{"cond_stage_model.transformer.", ""},              // SD1, a diffusers SD2 or SDXL CLIP-L, separate files
	{"conditioner.embedders.0.transformer.", "clip_l"}, // SDXL checkpoints' CLIP-L
	{keymap.CLIPGPrefix, "clip_g"},                     // a diffusers SDXL bigG, a separate clip_g file
	{"text_encoders.clip_l.transformer.", "clip_l"},
}

// openCLIPRoots are the OpenCLIP-layout places.
var openCLIPRoots = []encoderRoot{
	{keymap.OpenCLIPGPrefix, "clip_g"},
	{"conditioner.embedders.0.model.", "clip_g"}, // the SDXL refiner
	{keymap.OpenCLIPHPrefix, "clip_h"},
}

// slotOf names the text encoder at r of the given width.
func (r encoderRoot) slotOf(width int) string {
	switch {
	case r.slot != "":
		return r.slot
	case width == 1024:
		return "clip_h"
	}
	return "clip_l"
}

// teAliases are the LoRA prefixes of a text encoder: kohya's, diffusers',
// and ComfyUI's. bigG is SDXL's second encoder (te2, text_encoder_2); the
// others are the first (te, te1, text_encoder).
func teAliases(slot string) (kohya, diffusers []string) {
	if slot == "clip_g" {
		return []string{"lora_te2_"}, []string{"text_encoder_2."}
	}
	return []string{"lora_te_", "lora_te1_"}, []string{"text_encoder."}
}

// newIndex lists the LoRA names of every Linear and convolution weight of
// src: the UNet under the LDM names (kohya "lora_unet_input_blocks_…",
// ComfyUI "diffusion_model.…") and the diffusers names (kohya
// "lora_unet_down_blocks_…", peft "unet.…"); the text encoders under their
// transformers names (kohya "lora_te_text_model_…", peft
// "text_encoder.text_model.…" with or without "text_model.") and the
// canonical ones; an OpenCLIP tower's fused in_proj under the q/k/v names
// of the transformers layout.
func newIndex(src weights.Source) *index {
	x := &index{src: src, targets: map[string][]target{}}
	names := src.Names()
	has := func(n string) bool { _, ok := src.Info(n); return ok }
	shape := func(n string) tensor.Shape { i, _ := src.Info(n); return i.Shape }
	diffusers := keymap.UNetDiffusersNames(names)
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, keymap.UNetPrefix)
		if !ok {
			continue
		}
		module, ok := strings.CutSuffix(rest, ".weight")
		if !ok || len(shape(n)) < 2 {
			continue
		}
		t := target{weight: n}
		if b := keymap.UNetPrefix + module + ".bias"; has(b) {
			t.bias = b
		}
		x.add(t, "lora_unet_"+underscored(module), "diffusion_model."+module, keymap.UNetPrefix+module)
		if d, ok := diffusers[n]; ok {
			dm := strings.TrimSuffix(d, ".weight")
			x.add(t, "lora_unet_"+underscored(dm), "unet."+dm, dm, "base_model.model."+dm)
		}
		if strings.HasSuffix(module, "attn2.to_k") && x.ctxWidth == 0 {
			if s := shape(n); len(s) == 2 {
				x.ctxWidth = s[1]
			}
		}
	}
	for _, er := range hfRoots {
		root := er.root
		tok := root + "text_model.embeddings.token_embedding.weight"
		if !has(tok) {
			continue
		}
		slot := er.slotOf(shape(tok)[len(shape(tok))-1])
		x.encoders = append(x.encoders, slot)
		kohya, diff := teAliases(slot)
		for _, n := range names {
			rest, ok := strings.CutPrefix(n, root)
			if !ok || !strings.HasPrefix(rest, "text_model.encoder.") {
				continue
			}
			module, ok := strings.CutSuffix(rest, ".weight")
			if !ok || len(shape(n)) != 2 {
				continue
			}
			t := target{weight: n, clip: true}
			if b := root + module + ".bias"; has(b) {
				t.bias = b
			}
			x.addTE(t, module, slot, kohya, diff, root+module)
		}
		if p := root + "text_projection.weight"; has(p) && len(shape(p)) == 2 {
			x.addProjection(target{weight: p, clip: true}, slot, kohya, diff, root+"text_projection")
		}
	}
	for _, er := range openCLIPRoots {
		root := er.root
		tok := root + "token_embedding.weight"
		if !has(tok) {
			continue
		}
		width := shape(tok)[1]
		slot := er.slotOf(width)
		x.encoders = append(x.encoders, slot)
		kohya, diff := teAliases(slot)
		for l := 0; ; l++ {
			p := fmt.Sprintf("%stransformer.resblocks.%d.", root, l)
			if !has(p + "attn.in_proj_weight") {
				break
			}
			hf := fmt.Sprintf("text_model.encoder.layers.%d.", l)
			for i, qkv := range []string{"q_proj", "k_proj", "v_proj"} {
				t := target{weight: p + "attn.in_proj_weight", row0: i * width, rows: width, clip: true}
				if has(p + "attn.in_proj_bias") {
					t.bias = p + "attn.in_proj_bias"
				}
				x.addTE(t, hf+"self_attn."+qkv, slot, kohya, diff)
			}
			for hfName, oc := range map[string]string{"self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"} {
				t := target{weight: p + oc + ".weight", clip: true}
				if has(p + oc + ".bias") {
					t.bias = p + oc + ".bias"
				}
				x.addTE(t, hf+hfName, slot, kohya, diff, p+oc)
			}
		}
		if p := root + "text_projection"; has(p) && len(shape(p)) == 2 {
			x.addProjection(target{weight: p, clip: true, transposed: true}, slot, kohya, diff)
		}
	}
	x.addT5()
	x.addFlux()
	x.addZImage()
	x.addQwenImage()
	return x
}

// addProjection registers a text encoder's text_projection (kohya
// "lora_te2_text_projection", diffusers "text_encoder_2.text_projection").
func (x *index) addProjection(t target, slot string, kohya, diff []string, extra ...string) {
	aliases := append([]string{}, extra...)
	for _, k := range kohya {
		aliases = append(aliases, k+"text_projection")
	}
	for _, d := range diff {
		aliases = append(aliases, d+"text_projection")
	}
	aliases = append(aliases, slot+".transformer.text_projection", "text_encoders."+slot+".transformer.text_projection")
	x.add(t, aliases...)
}

// addTE registers a text-encoder layer under its transformers module name
// hf ("text_model.encoder.layers.0.self_attn.q_proj").
func (x *index) addTE(t target, hf, slot string, kohya, diff []string, extra ...string) {
	bare := strings.TrimPrefix(hf, "text_model.")
	aliases := append([]string{}, extra...)
	for _, k := range kohya {
		aliases = append(aliases, k+underscored(hf))
	}
	for _, d := range diff {
		aliases = append(aliases, d+hf, d+bare)
	}
	aliases = append(aliases, slot+".transformer."+hf, "text_encoders."+slot+".transformer."+hf)
	x.add(t, aliases...)
}

// familyOf guesses the family a LoRA file was made for from its names and
// shapes: Flux.1's block names (BFL's double_blocks / single_blocks /
// img_attn / txt_attn, diffusers' single_transformer_blocks, OneTrainer's
// lora_transformer_transformer_blocks) mean Flux.1; a second text encoder
// (with no Flux name) means SDXL; otherwise the cross-attention
// context width its to_k/to_v layers take (768 SD1.x, 1024 SD2.x, 2048
// SDXL, 1280 the SDXL refiner). It returns "" when it cannot tell.
func (f *file) familyOf() (name string, ctx int) {
	te2 := false
	for _, a := range f.adapters {
		m := a.module
		if isFluxModule(m) {
			return "Flux.1", 0
		}
		if strings.HasPrefix(m, "lora_te2_") || strings.HasPrefix(m, "text_encoder_2.") {
			te2 = true
		}
		if ctx == 0 && (strings.HasSuffix(m, "attn2_to_k") || strings.HasSuffix(m, "attn2.to_k")) {
			for _, role := range []string{"down", "w1b", "diff"} {
				if n := a.parts[role]; n != "" {
					if info, ok := f.src.Info(n); ok && len(info.Shape) >= 2 {
						ctx = info.Shape[1]
					}
					break
				}
			}
		}
	}
	switch {
	case te2 || ctx == 2048:
		return "SDXL", ctx
	case ctx == 768:
		return "SD1.x", ctx
	case ctx == 1024:
		return "SD2.x", ctx
	case ctx == 1280:
		return "the SDXL refiner", ctx
	}
	return "", ctx
}

// fluxMarks are parts of LoRA module names only Flux.1 LoRAs have.
var fluxMarks = []string{"double_blocks", "single_blocks", "single_transformer_blocks", "img_attn", "txt_attn", "lora_transformer_transformer_blocks"}

// isFluxModule reports whether a LoRA module name is a Flux.1 layer's.
func isFluxModule(m string) bool {
	for _, k := range fluxMarks {
		if strings.Contains(m, k) {
			return true
		}
	}
	return false
}
