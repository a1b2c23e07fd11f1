package lora

import (
	"fmt"
	"strings"
)

// zimageBlockRenames are the module names of a Z-Image block that differ
// between diffusers' layout and ComfyUI's (under "layers.N.",
// "noise_refiner.N.", "context_refiner.N."); the rest (feed_forward.w1–3,
// adaLN_modulation.0) are the same in both.
var zimageBlockRenames = map[string]string{"attention.to_out.0": "attention.out"}

// zimageTopRenames are the top-level modules that differ, diffusers →
// ComfyUI (cap_embedder.1 and t_embedder.mlp.* are the same in both).
var zimageTopRenames = map[string]string{
	"all_x_embedder.2-1":                     "x_embedder",
	"all_final_layer.2-1.linear":             "final_layer.linear",
	"all_final_layer.2-1.adaLN_modulation.1": "final_layer.adaLN_modulation.1",
}

// addZImage registers a Z-Image transformer's layers, when src has one,
// under the LoRA names of both layouts and every trainer's prefixes
// (bflAliases, diffusersAliases): the model's own names map name for
// name; diffusers' separate to_q, to_k and to_v reach ComfyUI's fused
// attention.qkv as row blocks of it, and a LoRA on the fused qkv feeds a
// diffusers-layout model's three projections with its ΔW's row blocks.
func (x *index) addZImage() {
	has := func(n string) bool { _, ok := x.src.Info(n); return ok }
	root, found := "", false
	for _, r := range []string{"", "model.diffusion_model.", "transformer."} {
		if has(r+"x_pad_token") && has(r+"cap_embedder.1.weight") {
			root, found = r, true
			break
		}
	}
	if !found {
		return
	}
	comfy := has(root + "x_embedder.weight")
	rowsOf := func(module string) int {
		if i, ok := x.src.Info(root + module + ".weight"); ok && len(i.Shape) == 2 {
			return i.Shape[0]
		}
		return 0
	}
	whole := func(module string) target {
		t := target{weight: root + module + ".weight"}
		if b := root + module + ".bias"; has(b) {
			t.bias = b
		}
		return t
	}
	aliases := func(m string) []string { return append(bflAliases(m), diffusersAliases(m)...) }
	// The model's own names.
	for _, n := range x.src.Names() {
		rest, ok := strings.CutPrefix(n, root)
		if !ok {
			continue
		}
		if module, ok := strings.CutSuffix(rest, ".weight"); ok && rowsOf(module) > 0 && isZImageModule(module) {
			x.add(whole(module), aliases(module)...)
		}
	}
	// The other layout's names.
	other := func(diff, comfyName string) {
		if comfy {
			if rowsOf(comfyName) > 0 {
				x.add(whole(comfyName), aliases(diff)...)
			}
		} else if rowsOf(diff) > 0 {
			x.add(whole(diff), aliases(comfyName)...)
		}
	}
	for d, c := range zimageTopRenames {
		other(d, c)
	}
	for _, stack := range []string{"layers", "noise_refiner", "context_refiner"} {
		for i := 0; ; i++ {
			p := fmt.Sprintf("%s.%d.", stack, i)
			if rowsOf(p+"feed_forward.w1") == 0 {
				break
			}
			for d, c := range zimageBlockRenames {
				other(p+d, p+c)
			}
			qkv := p + "attention.qkv"
			if comfy {
				D := rowsOf(qkv) / 3
				for j, n := range []string{"to_q", "to_k", "to_v"} {
					t := whole(qkv)
					t.row0, t.rows = j*D, D
					x.add(t, aliases(p+"attention."+n)...)
				}
				continue
			}
			D := rowsOf(p + "attention.to_q")
			var ts []target
			for j, n := range []string{"to_q", "to_k", "to_v"} {
				t := whole(p + "attention." + n)
				t.rows, t.src0, t.srcRows = D, j*D, 3*D
				ts = append(ts, t)
			}
			x.addSplit(ts, aliases(qkv)...)
		}
	}
}

// isZImageModule reports whether module is a Z-Image transformer name of
// either layout.
func isZImageModule(module string) bool {
	for _, t := range []string{"layers.", "noise_refiner.", "context_refiner.", "cap_embedder.", "t_embedder.", "x_embedder.", "final_layer.", "all_x_embedder.", "all_final_layer."} {
		if strings.HasPrefix(module+".", t) {
			return true
		}
	}
	return false
}

// addQwenImage registers a Qwen-Image transformer's layers, when src has
// one: its names are diffusers' in every layout (ComfyUI keeps them), so
// each module maps name for name, under every trainer's prefixes.
func (x *index) addQwenImage() {
	has := func(n string) bool { _, ok := x.src.Info(n); return ok }
	for _, root := range []string{"", "model.diffusion_model.", "transformer."} {
		if !has(root+"txt_norm.weight") || !has(root+"img_in.weight") {
			continue
		}
		for _, n := range x.src.Names() {
			rest, ok := strings.CutPrefix(n, root)
			if !ok {
				continue
			}
			module, ok := strings.CutSuffix(rest, ".weight")
			info, _ := x.src.Info(n)
			if !ok || len(info.Shape) != 2 || !isQwenImageModule(module) {
				continue
			}
			t := target{weight: n}
			if b := root + module + ".bias"; has(b) {
				t.bias = b
			}
			x.add(t, append(bflAliases(module), diffusersAliases(module)...)...)
		}
		return
	}
}

// isQwenImageModule reports whether module is a Qwen-Image transformer
// name.
func isQwenImageModule(module string) bool {
	for _, t := range []string{"transformer_blocks.", "img_in.", "txt_in.", "time_text_embed.", "norm_out.", "proj_out."} {
		if strings.HasPrefix(module+".", t) {
			return true
		}
	}
	return false
}
