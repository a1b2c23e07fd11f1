package lora

import (
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
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
	all := func(string) bool { return true }
	matrices(bfl, "", all, func(m string, s tensor.Shape) { // the file holds the transformer only
		conv["kohya"] = append(conv["kohya"], fluxModule{"lora_unet_" + underscored(m), s[0], s[1]})
		conv["comfyui"] = append(conv["comfyui"], fluxModule{"diffusion_model." + m, s[0], s[1]})
		conv["bfl-peft"] = append(conv["bfl-peft"], fluxModule{"base_model.model." + m, s[0], s[1]})
	})
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
	open := func(name string) *weights.Model {
		t.Helper()
		m, err := weights.OpenModel(keyshapes + name + ".json.gz")
		if err != nil {
			t.Skip(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	for _, variant := range []string{"dev", "schnell"} {
		bfl, diff := open("flux1-"+variant+".single"), open("flux1-"+variant+".diffusers")
		// BFL's transformer file (no text encoders), ComfyUI's all-in-one
		// file (model.diffusion_model., text_encoders.clip_l/t5xxl), the
		// diffusers folder.
		layouts := map[string]*index{"bfl": newIndex(bfl.Source), "diffusers": newIndex(diff.Source)}
		if variant == "dev" {
			layouts["comfy"] = newIndex(open("flux1-dev-fp8.comfy").Source)
		}
		conv := fluxConventions(t, bfl, diff)
		if n := len(conv["kohya"]); n < 500 {
			t.Fatalf("only %d kohya modules", n)
		}
		checkFluxConventions(t, variant, conv, layouts)
	}
}

// checkFluxConventions runs checkFluxTargets on every module of every
// convention in every layout.
func checkFluxConventions(t *testing.T, variant string, conv map[string][]fluxModule, layouts map[string]*index) {
	for name, mods := range conv {
		for lname, x := range layouts {
			t.Run(variant+"/"+name+"/"+lname, func(t *testing.T) {
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

// fluxLoRA is one random LoRA over every Linear of the tiny Flux
// transformer, by BFL module: down [rank, in], up [out, rank], alpha.
type fluxLoRA struct {
	rank  int
	mods  []string // BFL modules, sorted
	down  map[string][]float32
	up    map[string][]float32
	shape map[string][2]int // [out, in]
	alpha map[string]float32
}

func newFluxLoRA(t *testing.T, bfl weights.Source, seed uint64) *fluxLoRA {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	l := &fluxLoRA{rank: 4, down: map[string][]float32{}, up: map[string][]float32{}, shape: map[string][2]int{}, alpha: map[string]float32{}}
	names := bfl.Names()
	sort.Strings(names)
	for _, n := range names {
		m, ok := strings.CutSuffix(n, ".weight")
		info, _ := bfl.Info(n)
		if !ok || len(info.Shape) != 2 || !isBFLModule(m) {
			continue
		}
		out, in := info.Shape[0], info.Shape[1]
		l.mods = append(l.mods, m)
		l.shape[m] = [2]int{out, in}
		l.down[m], l.up[m] = randn(r, l.rank*in, 0.2), randn(r, out*l.rank, 0.2)
		l.alpha[m] = float32(1 + r.IntN(8))
	}
	return l
}

// write saves the LoRA under a naming convention: "kohya"
// (lora_unet_<bfl>, lora_down/lora_up/alpha), "comfyui"
// (diffusion_model.<bfl>.lora_A/lora_B/alpha), or, converted to the
// diffusers modules as diffusers' _convert_kohya_flux_lora_to_diffusers
// does (down copied to each piece of a fused layer, up cut by rows,
// norm_out's halves swapped, alpha/rank baked into down), "peft"
// (transformer.<diffusers>.lora_A/lora_B) or "onetrainer"
// (lora_transformer_<diffusers> lora_down/lora_up).
func (l *fluxLoRA) write(t *testing.T, convention string) string {
	t.Helper()
	ts := map[string]safetensors.Tensor{}
	switch convention {
	case "kohya", "comfyui":
		for _, m := range l.mods {
			s := l.shape[m]
			key, down, up := "lora_unet_"+underscored(m), ".lora_down.weight", ".lora_up.weight"
			if convention == "comfyui" {
				key, down, up = "diffusion_model."+m, ".lora_A.weight", ".lora_B.weight"
			}
			ts[key+down] = f32(l.down[m], l.rank, s[1])
			ts[key+up] = f32(l.up[m], s[0], l.rank)
			ts[key+".alpha"] = f32([]float32{l.alpha[m]})
		}
	case "peft", "onetrainer":
		const D, M = 32, 128
		byDiff := map[string][]fluxPair{}
		for _, p := range fluxPairs(D, M, 2, 2) {
			if _, ok := l.shape[p.bfl]; ok {
				byDiff[p.diff] = append(byDiff[p.diff], p)
			}
		}
		for d, ps := range byDiff {
			b := ps[0].bfl
			s := l.shape[b]
			out := 0
			for _, p := range ps {
				out += max(p.rows, 0)
				if p.rows == 0 {
					out = s[0]
				}
			}
			scale := l.alpha[b] / float32(l.rank)
			down := make([]float32, len(l.down[b]))
			for i, v := range l.down[b] {
				down[i] = v * scale
			}
			up := make([]float32, out*l.rank)
			for _, p := range ps {
				rows := p.rows
				if rows == 0 {
					rows = s[0]
				}
				copy(up[p.dRow0*l.rank:(p.dRow0+rows)*l.rank], l.up[b][p.bRow0*l.rank:(p.bRow0+rows)*l.rank])
			}
			key, dn, un := "transformer."+d, ".lora_A.weight", ".lora_B.weight"
			if convention == "onetrainer" {
				key, dn, un = "lora_transformer_"+underscored(d), ".lora_down.weight", ".lora_up.weight"
			}
			ts[key+dn] = f32(down, l.rank, s[1])
			ts[key+un] = f32(up, out, l.rank)
		}
	default:
		t.Fatalf("no convention %q", convention)
	}
	return writeFile(t, ts)
}

func openFluxTiny(t *testing.T) map[string]*weights.Model {
	t.Helper()
	out := map[string]*weights.Model{}
	for layout, p := range map[string]string{
		"bfl":       testref.Path("flux-pipe", "bfl", "flux1-dev.safetensors"),
		"diffusers": testref.Path("flux-pipe", "dev", "transformer", "diffusion_pytorch_model.safetensors"),
	} {
		m, err := weights.OpenModel(p)
		if err != nil {
			t.Skipf("no tiny Flux model: %v", err)
		}
		t.Cleanup(func() { m.Close() })
		out[layout] = m
	}
	return out
}

// TestFluxMergeAcrossLayouts applies one random LoRA over every Linear of
// the tiny FLUX.1-dev transformer, written in four naming conventions
// (two BFL-named, two diffusers-named), to the transformer in both
// layouts, and checks that every pair of rows the layouts share (fused
// qkv and linear1 against to_q/…/proj_mlp, the swapped final-layer
// halves) merges to the same values (1e-5), that each convention gives the
// merge of the first (1e-6), and that BFL-named merges on the BFL model
// are W + strength·alpha/rank·up·down computed here.
func TestFluxMergeAcrossLayouts(t *testing.T) {
	models := openFluxTiny(t)
	l := newFluxLoRA(t, models["bfl"].Source, 1)
	const strength = 0.7
	merged := map[string]map[string]weights.Source{}
	for _, conv := range []string{"kohya", "comfyui", "peft", "onetrainer"} {
		path := l.write(t, conv)
		merged[conv] = map[string]weights.Source{}
		for layout, m := range models {
			src, err := Apply(m.Source, "Flux.1 (dev)", []Spec{{Path: path, Strength: strength, ClipStrength: strength}})
			if err != nil {
				t.Fatalf("%s on %s: %v", conv, layout, err)
			}
			merged[conv][layout] = src
		}
	}
	read := func(src weights.Source, name string, row0, rows int) []float32 {
		t.Helper()
		v, err := src.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := src.Info(name)
		per := len(v) / info.Shape[0]
		if rows == 0 {
			rows = info.Shape[0]
		}
		return v[row0*per : (row0+rows)*per]
	}
	pairs := 0
	for conv, by := range merged {
		for _, p := range fluxPairs(32, 128, 2, 2) {
			if _, ok := l.shape[p.bfl]; !ok {
				continue
			}
			pairs++
			for _, suffix := range []string{".weight", ".bias"} {
				b := read(by["bfl"], p.bfl+suffix, p.bRow0, p.rows)
				d := read(by["diffusers"], p.diff+suffix, p.dRow0, p.rows)
				if e := maxAbs(b, d); e > 1e-5 {
					t.Errorf("%s: %s rows %d+ and %s rows %d+ differ by %g", conv, p.bfl+suffix, p.bRow0, p.diff+suffix, p.dRow0, e)
				}
				for layout := range by {
					name, row0 := p.bfl+suffix, p.bRow0
					if layout == "diffusers" {
						name, row0 = p.diff+suffix, p.dRow0
					}
					got, want := read(by[layout], name, row0, p.rows), read(merged["kohya"][layout], name, row0, p.rows)
					if e := maxAbs(got, want); e > 1e-6 {
						t.Errorf("%s on %s: %s differs from kohya's merge by %g", conv, layout, name, e)
					}
				}
			}
		}
	}
	if pairs < 4*40 {
		t.Errorf("only %d pairs compared", pairs)
	}
	// A model build reads each tensor once: every fused ΔW shared by
	// several targets is computed once and dropped when its last target
	// has read it.
	src, err := Apply(models["diffusers"].Source, "Flux.1 (dev)", []Spec{{Path: l.write(t, "kohya"), Strength: strength}})
	if err != nil {
		t.Fatal(err)
	}
	p := src.(*patched)
	for _, n := range p.Names() {
		if _, err := p.Float32(n); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(p.shared); n != 0 {
		t.Errorf("%d shared ΔW still held after one read of every tensor", n)
	}
	// The direct formula on the BFL model.
	for _, m := range l.mods {
		base, err := models["bfl"].Float32(m + ".weight")
		if err != nil {
			t.Fatal(err)
		}
		s := l.shape[m]
		want := append([]float32(nil), base...)
		k := float64(strength) * float64(l.alpha[m]) / float64(l.rank)
		for o := range s[0] {
			for i := range s[1] {
				var acc float64
				for r := range l.rank {
					acc += float64(l.up[m][o*l.rank+r]) * float64(l.down[m][r*s[1]+i])
				}
				want[o*s[1]+i] += float32(k * acc)
			}
		}
		if e := maxAbs(read(merged["kohya"]["bfl"], m+".weight", 0, 0), want); e > 1e-6 {
			t.Errorf("%s: off the formula by %g", m, e)
		}
	}
}

// TestFluxStrengthZero: at strength 0 no tensor is patched and every
// tensor reads bit for bit as stored, in both layouts and conventions.
func TestFluxStrengthZero(t *testing.T) {
	models := openFluxTiny(t)
	l := newFluxLoRA(t, models["bfl"].Source, 2)
	for _, conv := range []string{"kohya", "peft"} {
		path := l.write(t, conv)
		for layout, m := range models {
			src, err := Apply(m.Source, "Flux.1 (dev)", []Spec{{Path: path}})
			if err != nil {
				t.Fatal(err)
			}
			if n := Patched(src); n != 0 {
				t.Errorf("%s on %s: %d tensors patched at strength 0", conv, layout, n)
			}
			for _, n := range m.Names() {
				a, err := src.Raw(n)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := m.Raw(n)
				if string(a) != string(b) {
					t.Errorf("%s on %s: %s changed", conv, layout, n)
				}
			}
		}
	}
}

// maxAbs is the largest |a−b| (+Inf when the lengths differ).
func maxAbs(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// TestFluxWrongFamily: a Flux LoRA on SD1 and an SDXL LoRA on Flux fail
// in one line naming the file and the family the file is for; a Flux
// LoRA whose shapes do not fit says which weight.
func TestFluxWrongFamily(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	flux := map[string]safetensors.Tensor{
		"lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight":   f32(randn(r, 96*4, 1), 96, 4),
		"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": f32(randn(r, 4*32, 1), 4, 32),
	}
	sdxl := map[string]safetensors.Tensor{
		"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight":   f32(randn(r, 640*4, 1), 640, 4),
		"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": f32(randn(r, 4*2048, 1), 4, 2048),
		"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight":                 f32(randn(r, 4, 1), 1, 4),
		"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight":               f32(randn(r, 4, 1), 4, 1),
	}
	peft := map[string]safetensors.Tensor{
		"transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight": f32(randn(r, 4*32, 1), 4, 32),
		"transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight": f32(randn(r, 64*4, 1), 64, 4),
	}
	sd1 := openTiny(t, "single.safetensors")
	fx := openFluxTiny(t)
	for _, c := range []struct {
		name    string
		src     weights.Source
		model   string
		tensors map[string]safetensors.Tensor
		want    string
	}{
		{"flux on sd1", sd1.Source, "SD1.x", flux, `targets nothing in this SD1.x model (the file looks like a LoRA for Flux.1)`},
		{"sdxl on flux", fx["bfl"].Source, "Flux.1 (dev)", sdxl, `modules target nothing in this Flux.1 (dev) model, e.g. "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight" (the file looks like a LoRA for SDXL)`},
		{"wrong shape", fx["bfl"].Source, "Flux.1 (dev)", peft, `changes a 64×32 weight, but "single_blocks.0.linear1.weight" is [224 32] (it takes rows [96, 224) of it: want 128×32)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, c.tensors)
			_, err := Apply(c.src, c.model, []Spec{{Path: p, Strength: 1, ClipStrength: 1}})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || !strings.HasPrefix(msg, p+": ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line starting with the file and containing %q", msg, c.want)
			}
		})
	}
}

// TestFluxBiasDiff: ComfyUI's extracted LoRAs carry lora_up/lora_down and
// a diff_b on the same module. On a fused BFL layer crossing to the
// diffusers layout, each bias takes its rows of diff_b at the strength
// alone (no alpha/rank), as ComfyUI's "diff" patch on the bias applies
// it, and the weight its rows of ΔW; both layouts agree.
func TestFluxBiasDiff(t *testing.T) {
	models := openFluxTiny(t)
	r := rand.New(rand.NewPCG(4, 4))
	up, down, db := randn(r, 224*4, 0.2), randn(r, 4*32, 0.2), randn(r, 224, 0.2)
	p := writeFile(t, map[string]safetensors.Tensor{
		"diffusion_model.single_blocks.1.linear1.lora_up.weight":   f32(up, 224, 4),
		"diffusion_model.single_blocks.1.linear1.lora_down.weight": f32(down, 4, 32),
		"diffusion_model.single_blocks.1.linear1.alpha":            f32([]float32{2}),
		"diffusion_model.single_blocks.1.linear1.diff_b":           f32(db, 224),
		"diffusion_model.img_in.diff_b":                            f32(db[:32], 32),
	})
	const strength = 0.6
	got := map[string]weights.Source{}
	for layout, m := range models {
		src, err := Apply(m.Source, "Flux.1 (dev)", []Spec{{Path: p, Strength: strength}})
		if err != nil {
			t.Fatalf("%s: %v", layout, err)
		}
		got[layout] = src
	}
	read := func(layout, name string) []float32 {
		t.Helper()
		v, err := got[layout].Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	base := func(layout, name string) []float32 {
		t.Helper()
		v, err := models[layout].Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// The BFL bias: b + strength·diff_b.
	b0, b1 := base("bfl", "single_blocks.1.linear1.bias"), read("bfl", "single_blocks.1.linear1.bias")
	for i := range b0 {
		if want := b0[i] + float32(strength)*db[i]; math.Abs(float64(b1[i]-want)) > 1e-6 {
			t.Fatalf("linear1.bias[%d] = %g, want %g", i, b1[i], want)
		}
	}
	// The diffusers pieces take its rows.
	D := 32
	for _, c := range []struct {
		name string
		row0 int
	}{{"single_transformer_blocks.1.attn.to_q", 0}, {"single_transformer_blocks.1.attn.to_k", D}, {"single_transformer_blocks.1.attn.to_v", 2 * D}, {"single_transformer_blocks.1.proj_mlp", 3 * D}} {
		bias := read("diffusers", c.name+".bias")
		if e := maxAbs(bias, b1[c.row0:c.row0+len(bias)]); e > 1e-6 {
			t.Errorf("%s.bias differs from BFL's rows by %g", c.name, e)
		}
		w, bw := read("diffusers", c.name+".weight"), read("bfl", "single_blocks.1.linear1.weight")
		if e := maxAbs(w, bw[c.row0*D:c.row0*D+len(w)]); e > 1e-5 {
			t.Errorf("%s.weight differs from BFL's rows by %g", c.name, e)
		}
	}
	if e := maxAbs(read("diffusers", "x_embedder.bias"), read("bfl", "img_in.bias")); e > 1e-6 {
		t.Errorf("a diff_b alone: x_embedder.bias and img_in.bias differ by %g", e)
	}
}
