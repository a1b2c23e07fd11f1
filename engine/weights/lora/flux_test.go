package lora

import (
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// fluxModule is a LoRA module name and the [out, in] of the ΔW it carries.
type fluxModule struct {
	name    string
	out, in int
}

// fluxConventions lists the LoRA module names of every Linear weight of
// a Flux.1 transformer in each naming convention, with their ΔW shapes:
// BFL-named ones from the BFL key list, diffusers-named ones from the
// diffusers key list; the text encoders (CLIP-L, T5) from the diffusers
// folder's names.
func fluxConventions(t *testing.T, bfl, diff *weights.Model) map[string][]fluxModule {
	t.Helper()
	conv := map[string][]fluxModule{}
	matrices := func(m *weights.Model, root string, keep func(string) bool, each func(module string, s tensor.Shape)) {
		names := m.Names()
		sort.Strings(names)
		for _, n := range names {
			rest, ok := strings.CutPrefix(n, root)
			if !ok {
				continue
			}
			module, ok := strings.CutSuffix(rest, ".weight")
			info, _ := m.Info(n)
			if ok && len(info.Shape) == 2 && keep(module) {
				each(module, info.Shape)
			}
		}
	}
	matrices(bfl, "", isBFLModule, func(m string, s tensor.Shape) {
		conv["kohya"] = append(conv["kohya"], fluxModule{"lora_unet_" + underscored(m), s[0], s[1]})
		conv["comfyui"] = append(conv["comfyui"], fluxModule{"diffusion_model." + m, s[0], s[1]})
		conv["bfl-peft"] = append(conv["bfl-peft"], fluxModule{"base_model.model." + m, s[0], s[1]})
	})
	all := func(string) bool { return true }
	matrices(diff, "transformer.", all, func(m string, s tensor.Shape) {
		conv["peft"] = append(conv["peft"], fluxModule{"transformer." + m, s[0], s[1]})
		conv["onetrainer"] = append(conv["onetrainer"], fluxModule{"lora_transformer_" + underscored(m), s[0], s[1]})
		conv["lycoris"] = append(conv["lycoris"], fluxModule{"lycoris_" + underscored(m), s[0], s[1]})
	})
	noEmbed := func(m string) bool { return strings.HasPrefix(m, "text_model.encoder.") }
	matrices(diff, "cond_stage_model.transformer.", noEmbed, func(m string, s tensor.Shape) {
		conv["kohya"] = append(conv["kohya"], fluxModule{"lora_te1_" + underscored(m), s[0], s[1]})
		conv["peft"] = append(conv["peft"], fluxModule{"text_encoder." + m, s[0], s[1]})
	})
	t5 := func(m string) bool { return strings.HasPrefix(m, "encoder.") }
	matrices(diff, "text_encoder_2.", t5, func(m string, s tensor.Shape) {
		conv["kohya"] = append(conv["kohya"], fluxModule{"lora_te3_" + underscored(m), s[0], s[1]})
		conv["onetrainer"] = append(conv["onetrainer"], fluxModule{"lora_te2_" + underscored(m), s[0], s[1]})
		conv["peft"] = append(conv["peft"], fluxModule{"text_encoder_2." + m, s[0], s[1]})
	})
	// XLabs' attention-processor modules (the projections and fused qkv),
	// named as splitKey cuts their keys.
	xlabs := func(key string, out, in int) {
		m, _, role, ok := splitKey(key)
		if !ok || role != "down" {
			t.Fatalf("splitKey(%q) = %q, %q", key, m, role)
		}
		conv["xlabs"] = append(conv["xlabs"], fluxModule{m, out, in})
	}
	const D = 3072
	for i := range 19 {
		b := "double_blocks." + strconv.Itoa(i) + ".processor."
		xlabs(b+"qkv_lora1.down.weight", 3*D, D)
		xlabs(b+"qkv_lora2.down.weight", 3*D, D)
		xlabs(b+"proj_lora1.down.weight", D, D)
		xlabs("diffusion_model."+b+"proj_lora2.down.weight", D, D)
	}
	for i := range 38 {
		b := "single_blocks." + strconv.Itoa(i) + "."
		xlabs(b+"processor.qkv_lora.down.weight", 3*D, D)
		xlabs(b+"processor.proj_lora.down.weight", D, D+4*D)
		xlabs("diffusion_model."+b+"linear1_qkv.lora_down.weight", 3*D, D)
	}
	return conv
}

// TestFluxReleasedNames: over the released FLUX.1-dev name sets
// (testdata/keyshapes), every Linear weight of the transformer and both
// text encoders, under every LoRA naming convention (kohya sd-scripts,
// ComfyUI/BFL, diffusers/peft/ai-toolkit/SimpleTuner, OneTrainer,
// LyCORIS, XLabs), finds targets in both model layouts whose row blocks
// take exactly the module's ΔW rows, with the right input width.
func TestFluxReleasedNames(t *testing.T) {
	const keyshapes = "../../../testdata/keyshapes/"
	bfl, err := weights.OpenModel(keyshapes + "flux1-dev.single.json.gz")
	if err != nil {
		t.Skip(err)
	}
	defer bfl.Close()
	diff, err := weights.OpenModel(keyshapes + "flux1-dev.diffusers.json.gz")
	if err != nil {
		t.Skip(err)
	}
	defer diff.Close()
	// The BFL transformer file with the folder's text encoders, as
	// OpenFiles gives them (CLIP-L and T5 under the same roots here).
	layouts := map[string]*index{"bfl": newIndex(bfl.Source), "diffusers": newIndex(diff.Source)}
	conv := fluxConventions(t, bfl, diff)
	if n := len(conv["kohya"]); n < 500 {
		t.Fatalf("only %d kohya modules", n)
	}
	for name, mods := range conv {
		for lname, x := range layouts {
			t.Run(name+"/"+lname, func(t *testing.T) {
				bad := 0
				for _, m := range mods {
					if lname == "bfl" && (strings.HasPrefix(m.name, "lora_te") || strings.HasPrefix(m.name, "text_encoder")) {
						continue // the BFL key list has no text encoders
					}
					if err := checkFluxTargets(x, m); err != "" {
						bad++
						if bad <= 5 {
							t.Errorf("%s: %s", m.name, err)
						}
					}
				}
				if bad > 0 {
					t.Errorf("%d of %d modules wrong", bad, len(mods))
				}
			})
		}
	}
}

// checkFluxTargets checks that m's targets take its ΔW rows exactly once
// each, into tensors of its input width; it returns what is wrong.
func checkFluxTargets(x *index, m fluxModule) string {
	ts, ok := x.targets[m.name]
	if !ok {
		return "no target"
	}
	covered := make([]int, m.out)
	for _, t := range ts {
		info, ok := x.src.Info(t.weight)
		if !ok {
			return "target " + t.weight + " missing"
		}
		if info.Shape[1] != m.in {
			return "target " + t.weight + " has the wrong input width"
		}
		rows, srcRows := t.rows, t.srcRows
		if rows == 0 {
			rows = info.Shape[0]
		}
		if srcRows == 0 {
			srcRows = rows
		}
		if srcRows != m.out || t.row0+rows > info.Shape[0] || t.src0+rows > m.out {
			return "target " + t.weight + " rows do not fit"
		}
		for r := t.src0; r < t.src0+rows; r++ {
			covered[r]++
		}
	}
	for _, c := range covered {
		if c != 1 {
			return "ΔW rows not taken exactly once"
		}
	}
	return ""
}

// TestFluxCrossTargets pins the rows the layouts exchange: diffusers'
// to_k is rows [D, 2D) of BFL's fused qkv; BFL's linear1 feeds to_q, to_k,
// to_v and proj_mlp from its row blocks; norm_out's (scale, shift) halves
// land swapped on final_layer.adaLN_modulation.1's (shift, scale).
func TestFluxCrossTargets(t *testing.T) {
	const keyshapes = "../../../testdata/keyshapes/"
	bfl, err := weights.OpenModel(keyshapes + "flux1-dev.single.json.gz")
	if err != nil {
		t.Skip(err)
	}
	defer bfl.Close()
	diff, err := weights.OpenModel(keyshapes + "flux1-dev.diffusers.json.gz")
	if err != nil {
		t.Skip(err)
	}
	defer diff.Close()
	const D, M = 3072, 12288
	bx, dx := newIndex(bfl.Source), newIndex(diff.Source)
	for _, c := range []struct {
		x     *index
		alias string
		want  []target
	}{
		{bx, "transformer.transformer_blocks.3.attn.to_k", []target{{weight: "double_blocks.3.img_attn.qkv.weight", bias: "double_blocks.3.img_attn.qkv.bias", row0: D, rows: D, srcRows: D}}},
		{bx, "transformer.single_transformer_blocks.5.proj_mlp", []target{{weight: "single_blocks.5.linear1.weight", bias: "single_blocks.5.linear1.bias", row0: 3 * D, rows: M, srcRows: M}}},
		{bx, "transformer.norm_out.linear", []target{
			{weight: "final_layer.adaLN_modulation.1.weight", bias: "final_layer.adaLN_modulation.1.bias", row0: D, rows: D, src0: 0, srcRows: 2 * D},
			{weight: "final_layer.adaLN_modulation.1.weight", bias: "final_layer.adaLN_modulation.1.bias", row0: 0, rows: D, src0: D, srcRows: 2 * D}}},
		{bx, "transformer.proj_out", []target{{weight: "final_layer.linear.weight", bias: "final_layer.linear.bias"}}},
		{bx, "lora_unet_single_blocks_7_linear1", []target{{weight: "single_blocks.7.linear1.weight", bias: "single_blocks.7.linear1.bias"}}},
		{dx, "lora_unet_single_blocks_7_linear1", []target{
			{weight: "transformer.single_transformer_blocks.7.attn.to_q.weight", bias: "transformer.single_transformer_blocks.7.attn.to_q.bias", rows: D, src0: 0, srcRows: 3*D + M},
			{weight: "transformer.single_transformer_blocks.7.attn.to_k.weight", bias: "transformer.single_transformer_blocks.7.attn.to_k.bias", rows: D, src0: D, srcRows: 3*D + M},
			{weight: "transformer.single_transformer_blocks.7.attn.to_v.weight", bias: "transformer.single_transformer_blocks.7.attn.to_v.bias", rows: D, src0: 2 * D, srcRows: 3*D + M},
			{weight: "transformer.single_transformer_blocks.7.proj_mlp.weight", bias: "transformer.single_transformer_blocks.7.proj_mlp.bias", rows: M, src0: 3 * D, srcRows: 3*D + M}}},
		{dx, "diffusion_model.single_blocks.7.linear1_qkv", []target{
			{weight: "transformer.single_transformer_blocks.7.attn.to_q.weight", bias: "transformer.single_transformer_blocks.7.attn.to_q.bias", rows: D, src0: 0, srcRows: 3 * D},
			{weight: "transformer.single_transformer_blocks.7.attn.to_k.weight", bias: "transformer.single_transformer_blocks.7.attn.to_k.bias", rows: D, src0: D, srcRows: 3 * D},
			{weight: "transformer.single_transformer_blocks.7.attn.to_v.weight", bias: "transformer.single_transformer_blocks.7.attn.to_v.bias", rows: D, src0: 2 * D, srcRows: 3 * D}}},
		{dx, "lora_unet_final_layer_adaLN_modulation_1", []target{
			{weight: "transformer.norm_out.linear.weight", bias: "transformer.norm_out.linear.bias", row0: 0, rows: D, src0: D, srcRows: 2 * D},
			{weight: "transformer.norm_out.linear.weight", bias: "transformer.norm_out.linear.bias", row0: D, rows: D, src0: 0, srcRows: 2 * D}}},
		{dx, "lora_unet_double_blocks_0_txt_mod_lin", []target{{weight: "transformer.transformer_blocks.0.norm1_context.linear.weight", bias: "transformer.transformer_blocks.0.norm1_context.linear.bias"}}},
		{dx, "lora_te3_encoder_block_0_layer_0_SelfAttention_q", []target{{weight: "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q.weight", clip: true}}},
	} {
		got := c.x.targets[c.alias]
		if len(got) != len(c.want) {
			t.Errorf("%s: %d targets %+v, want %+v", c.alias, len(got), got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: target %d is %+v, want %+v", c.alias, i, got[i], c.want[i])
			}
		}
	}
}
