package lora

import (
	"fmt"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Flux.1 LoRAs come named after either layout of the transformer: BFL's
// (double_blocks.N.img_attn.qkv fused q‖k‖v, single_blocks.N.linear1
// fused q‖k‖v‖mlp, final_layer.adaLN_modulation.1 stored (shift, scale))
// or diffusers' (transformer_blocks.N.attn.to_q, single_transformer_blocks
// .N.proj_mlp, norm_out.linear stored (scale, shift)), and the model is
// in one of the two. A fluxPair ties a block of rows of a diffusers
// tensor to the same rows of a BFL tensor, as ComfyUI's
// comfy/utils.py flux_to_diffusers does; a LoRA named in the other layout
// reaches the model through these pairs, one target per pair, each taking
// its rows of the LoRA's ΔW.
type fluxPair struct {
	diff  string // the diffusers module ("transformer_blocks.0.attn.to_q")
	dRow0 int    // its first row in the pair
	bfl   string // the BFL module ("double_blocks.0.img_attn.qkv")
	bRow0 int    // its first row in the pair
	rows  int    // 0: both whole tensors of the same size
}

// fluxPairs lists the pairs of a transformer of width D and MLP width M
// with the given numbers of double and single blocks.
func fluxPairs(D, M, double, single int) []fluxPair {
	whole := func(d, b string) fluxPair { return fluxPair{diff: d, bfl: b} }
	ps := []fluxPair{
		whole("x_embedder", "img_in"),
		whole("context_embedder", "txt_in"),
		whole("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
		whole("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
		whole("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
		whole("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
		whole("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
		whole("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
		whole("proj_out", "final_layer.linear"),
		// diffusers' (scale, shift) are BFL's (shift, scale) swapped.
		{diff: "norm_out.linear", dRow0: 0, bfl: "final_layer.adaLN_modulation.1", bRow0: D, rows: D},
		{diff: "norm_out.linear", dRow0: D, bfl: "final_layer.adaLN_modulation.1", bRow0: 0, rows: D},
	}
	for i := range double {
		d, b := fmt.Sprintf("transformer_blocks.%d.", i), fmt.Sprintf("double_blocks.%d.", i)
		for j, qkv := range []string{"to_q", "to_k", "to_v"} {
			ps = append(ps, fluxPair{diff: d + "attn." + qkv, bfl: b + "img_attn.qkv", bRow0: j * D, rows: D})
		}
		for j, qkv := range []string{"add_q_proj", "add_k_proj", "add_v_proj"} {
			ps = append(ps, fluxPair{diff: d + "attn." + qkv, bfl: b + "txt_attn.qkv", bRow0: j * D, rows: D})
		}
		ps = append(ps,
			whole(d+"attn.to_out.0", b+"img_attn.proj"),
			whole(d+"attn.to_add_out", b+"txt_attn.proj"),
			whole(d+"ff.net.0.proj", b+"img_mlp.0"),
			whole(d+"ff.net.2", b+"img_mlp.2"),
			whole(d+"ff_context.net.0.proj", b+"txt_mlp.0"),
			whole(d+"ff_context.net.2", b+"txt_mlp.2"),
			whole(d+"norm1.linear", b+"img_mod.lin"),
			whole(d+"norm1_context.linear", b+"txt_mod.lin"),
		)
	}
	for i := range single {
		d, b := fmt.Sprintf("single_transformer_blocks.%d.", i), fmt.Sprintf("single_blocks.%d.", i)
		for j, qkv := range []string{"to_q", "to_k", "to_v"} {
			ps = append(ps, fluxPair{diff: d + "attn." + qkv, bfl: b + "linear1", bRow0: j * D, rows: D})
		}
		ps = append(ps,
			fluxPair{diff: d + "proj_mlp", bfl: b + "linear1", bRow0: 3 * D, rows: M},
			whole(d+"proj_out", b+"linear2"),
			whole(d+"norm.linear", b+"modulation.lin"),
		)
	}
	return ps
}

// fluxWindow is a LoRA module on some rows of a BFL tensor: ComfyUI's
// "single_blocks.N.linear1_qkv" (q‖k‖v of linear1, no mlp) and XLabs'
// attention-processor modules (double_blocks.N.processor.qkv_lora1 for
// img_attn.qkv, qkv_lora2 for txt_attn.qkv, proj_lora1/2 for the
// projections; single_blocks.N.processor.qkv_lora for linear1's q‖k‖v,
// proj_lora for linear2), as splitKey names them: without ".processor",
// and the single blocks' "_lora" cut as diffusers' to_q_lora is
// ("single_blocks.N.qkv", "single_blocks.N.proj").
type fluxWindow struct {
	alias, bfl string
	rows       int // rows [0, rows) of bfl; 0: the whole tensor
}

func fluxWindows(D, double, single int) []fluxWindow {
	var ws []fluxWindow
	for i := range double {
		b := fmt.Sprintf("double_blocks.%d.", i)
		ws = append(ws,
			fluxWindow{alias: b + "qkv_lora1", bfl: b + "img_attn.qkv"},
			fluxWindow{alias: b + "qkv_lora2", bfl: b + "txt_attn.qkv"},
			fluxWindow{alias: b + "proj_lora1", bfl: b + "img_attn.proj"},
			fluxWindow{alias: b + "proj_lora2", bfl: b + "txt_attn.proj"},
		)
	}
	for i := range single {
		b := fmt.Sprintf("single_blocks.%d.", i)
		ws = append(ws,
			fluxWindow{alias: b + "linear1_qkv", bfl: b + "linear1", rows: 3 * D},
			fluxWindow{alias: b + "qkv", bfl: b + "linear1", rows: 3 * D},
			fluxWindow{alias: b + "proj", bfl: b + "linear2"},
		)
	}
	return ws
}

// bflAliases are the names LoRA trainers give a BFL-named module m:
// kohya's "lora_unet_double_blocks_0_img_attn_qkv", ComfyUI's and BFL's
// "diffusion_model.…" (peft's "base_model.model.…", bare names too).
func bflAliases(m string) []string {
	return []string{"lora_unet_" + underscored(m), "diffusion_model." + m, "model.diffusion_model." + m, "base_model.model." + m, m}
}

// diffusersAliases are the names LoRA trainers give a diffusers-named
// module m: diffusers/peft, ai-toolkit and SimpleTuner
// "transformer.transformer_blocks.0.attn.to_q", OneTrainer's
// "lora_transformer_…", SimpleTuner's LyCORIS "lycoris_…", kohya-style
// "lora_unet_…" over diffusers names, and bare names.
func diffusersAliases(m string) []string {
	u := underscored(m)
	return []string{"transformer." + m, "lora_transformer_" + u, "lycoris_" + u, "lora_unet_" + u, "base_model.model." + m, m}
}

// addFlux registers a Flux.1 transformer's layers, when src has one,
// under the LoRA names of both layouts. The model's own layout maps name
// for name; the other reaches it through fluxPairs.
func (x *index) addFlux() {
	has := func(n string) bool { _, ok := x.src.Info(n); return ok }
	root, found, bfl := "", false, false
	for _, r := range []string{"", "model.diffusion_model.", "transformer."} {
		if has(r + "txt_norm.weight") {
			return // Qwen-Image's img_in is not BFL's (addQwenImage)
		}
		if has(r + "img_in.weight") {
			root, found, bfl = r, true, true
			break
		}
		if has(r+"x_embedder.weight") && (has(r+"transformer_blocks.0.attn.to_q.weight") || has(r+"single_transformer_blocks.0.attn.to_q.weight")) {
			root, found = r, true
			break
		}
	}
	if !found {
		return
	}
	rowsOf := func(module string) int {
		if i, ok := x.src.Info(root + module + ".weight"); ok && len(i.Shape) == 2 {
			return i.Shape[0]
		}
		return 0
	}
	embed := "x_embedder"
	mlp, l1 := "transformer_blocks.0.ff.net.0.proj", "single_transformer_blocks.0.proj_mlp"
	if bfl {
		embed, mlp, l1 = "img_in", "double_blocks.0.img_mlp.0", "single_blocks.0.linear1"
	}
	D := rowsOf(embed)
	M := rowsOf(mlp)
	if M == 0 && bfl && rowsOf(l1) > 3*D {
		M = rowsOf(l1) - 3*D
	} else if M == 0 {
		M = rowsOf(l1)
	}
	double, single := 0, 0
	for {
		n := fmt.Sprintf("transformer_blocks.%d.norm1.linear", double)
		if bfl {
			n = fmt.Sprintf("double_blocks.%d.img_mod.lin", double)
		}
		if rowsOf(n) == 0 {
			break
		}
		double++
	}
	for {
		n := fmt.Sprintf("single_transformer_blocks.%d.norm.linear", single)
		if bfl {
			n = fmt.Sprintf("single_blocks.%d.modulation.lin", single)
		}
		if rowsOf(n) == 0 {
			break
		}
		single++
	}
	whole := func(module string) target {
		t := target{weight: root + module + ".weight"}
		if b := root + module + ".bias"; has(b) {
			t.bias = b
		}
		return t
	}
	// The model's own names.
	own := diffusersAliases
	if bfl {
		own = bflAliases
	}
	for _, n := range x.src.Names() {
		rest, ok := strings.CutPrefix(n, root)
		if !ok {
			continue
		}
		module, ok := strings.CutSuffix(rest, ".weight")
		if !ok || rowsOf(module) == 0 || (bfl && !isBFLModule(module)) || (!bfl && root == "" && !isDiffusersModule(module)) {
			continue
		}
		x.add(whole(module), own(module)...)
	}
	// The other layout's names, through the pairs.
	pairs := fluxPairs(D, M, double, single)
	byName := map[string][]fluxPair{}
	var order []string
	for _, p := range pairs {
		name, mine := p.bfl, p.diff
		if bfl {
			name, mine = p.diff, p.bfl
		}
		if rowsOf(mine) == 0 {
			continue
		}
		if byName[name] == nil {
			order = append(order, name)
		}
		byName[name] = append(byName[name], p)
	}
	for _, name := range order {
		var ts []target
		srcRows := 0
		for _, p := range byName[name] {
			r := p.rows
			mine, mRow0, sRow0 := p.diff, p.dRow0, p.bRow0
			if bfl {
				mine, mRow0, sRow0 = p.bfl, p.bRow0, p.dRow0
			}
			t := whole(mine)
			if r == 0 {
				r = rowsOf(mine)
			}
			t.row0, t.rows, t.src0 = mRow0, r, sRow0
			ts = append(ts, t)
			srcRows = max(srcRows, sRow0+r)
		}
		for i := range ts {
			ts[i].srcRows = srcRows
			if len(ts) == 1 && ts[0].row0 == 0 && ts[0].src0 == 0 && ts[0].rows == srcRows && srcRows == rowsOf(strings.TrimSuffix(strings.TrimPrefix(ts[0].weight, root), ".weight")) {
				ts[0].rows, ts[0].srcRows = 0, 0 // whole onto whole
			}
		}
		other := bflAliases
		if bfl {
			other = diffusersAliases
		}
		x.addSplit(ts, other(name)...)
	}
	// Modules on rows of a BFL tensor.
	for _, w := range fluxWindows(D, double, single) {
		if bfl {
			if rowsOf(w.bfl) == 0 {
				continue
			}
			t := whole(w.bfl)
			t.rows = w.rows
			x.addSplit([]target{t}, bflAliases(w.alias)...)
			continue
		}
		n := w.rows
		var ts []target
		for _, p := range byName[w.bfl] {
			r := p.rows
			if r == 0 {
				r = rowsOf(p.diff)
			}
			if n != 0 && p.bRow0+r > n {
				continue
			}
			t := whole(p.diff)
			t.row0, t.rows, t.src0 = p.dRow0, r, p.bRow0
			ts = append(ts, t)
		}
		if len(ts) == 0 {
			continue
		}
		if n == 0 {
			for _, t := range ts {
				n = max(n, t.src0+t.rows)
			}
		}
		for i := range ts {
			ts[i].srcRows = n
		}
		x.addSplit(ts, bflAliases(w.alias)...)
	}
}

// bflTops are the first name parts of a BFL Flux transformer's tensors.
var bflTops = []string{"img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.", "double_blocks.", "single_blocks."}

// isBFLModule reports whether module is a BFL transformer name.
func isBFLModule(module string) bool {
	for _, t := range bflTops {
		if strings.HasPrefix(module+".", t) {
			return true
		}
	}
	return false
}

// diffusersTops are the first name parts of a diffusers Flux transformer's
// tensors.
var diffusersTops = []string{"x_embedder.", "context_embedder.", "time_text_embed.", "norm_out.", "proj_out.", "transformer_blocks.", "single_transformer_blocks."}

// isDiffusersModule reports whether module is a diffusers transformer name.
func isDiffusersModule(module string) bool {
	for _, t := range diffusersTops {
		if strings.HasPrefix(module+".", t) {
			return true
		}
	}
	return false
}

// t5Roots are where a T5 encoder sits in the canonical namespace (a
// diffusers folder's text_encoder_2, ComfyUI's all-in-one file, a
// separate text-encoder file).
func t5Roots() []string {
	roots := []string{"text_encoder_2.", "text_encoders.t5xxl.transformer."}
	for i := range 16 {
		roots = append(roots, fmt.Sprintf("%s%d.", weights.ExtraTextEncoderPrefix, i))
	}
	return roots
}

// addT5 registers a T5 encoder's Linear layers under transformers' module
// names ("encoder.block.0.layer.0.SelfAttention.q"): kohya sd-scripts'
// "lora_te3_…" (and OneTrainer's "lora_te2_…" when the model has no
// bigG), diffusers' "text_encoder_2.…" and ComfyUI's "t5xxl.transformer.…".
func (x *index) addT5() {
	has := func(n string) bool { _, ok := x.src.Info(n); return ok }
	for _, root := range t5Roots() {
		if !has(root + "encoder.block.0.layer.0.SelfAttention.q.weight") {
			continue
		}
		x.encoders = append(x.encoders, "t5xxl")
		for _, n := range x.src.Names() {
			rest, ok := strings.CutPrefix(n, root)
			if !ok || !strings.HasPrefix(rest, "encoder.") {
				continue
			}
			module, ok := strings.CutSuffix(rest, ".weight")
			if i, _ := x.src.Info(n); !ok || len(i.Shape) != 2 {
				continue
			}
			aliases := []string{"lora_te3_" + underscored(module), "text_encoder_2." + module, "t5xxl.transformer." + module, "text_encoders.t5xxl.transformer." + module}
			if !containsSlot(x.encoders, "clip_g") {
				aliases = append(aliases, "lora_te2_"+underscored(module))
			}
			x.add(target{weight: n, clip: true}, aliases...)
		}
		return
	}
}
