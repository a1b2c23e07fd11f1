// Package lora reads LoRA files (kohya-ss / A1111, diffusers / peft,
// LyCORIS LoHa and LoKr, ComfyUI's saves) and merges them into a model's
// weights as they are built: Apply wraps a weights.Source so that every
// tensor a LoRA targets reads as W + strength·scale·ΔW, computed in float32
// (the device then stores it in its compute dtype, as any weight). Every
// family gets LoRAs this way with no code of its own: the LoRA names are
// mapped onto the canonical names of package keymap (the diffusers names
// through keymap's own tables, run backwards). Flux.1 LoRAs, named after
// either layout of the transformer (BFL's fused qkv / linear1 or
// diffusers' to_q … proj_mlp), reach either layout of the model through
// row pairs (flux.go): one module may feed row blocks of several tensors.
//
// scale is alpha/rank as ComfyUI's comfy/weight_adapter computes it (alpha
// defaults to the rank: scale 1); a key that targets nothing in the model
// is an error naming the key and the file, never skipped.
package lora

import (
	"fmt"
	"sort"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// Kind is an adapter type.
type Kind string

// Adapter kinds.
const (
	// LoRA is ΔW = up·down (kohya lora_up/lora_down, peft lora_B/lora_A),
	// with an optional Tucker core (lora_mid) on convolutions.
	LoRA Kind = "lora"
	// LoHa is LyCORIS's Hadamard product (w1a·w1b) ⊙ (w2a·w2b), with
	// optional Tucker cores hada_t1/hada_t2.
	LoHa Kind = "loha"
	// LoKr is LyCORIS's Kronecker product w1 ⊗ w2, each factor whole or a
	// low-rank product.
	LoKr Kind = "lokr"
	// Diff is a full weight difference (.diff, and .diff_b for the bias).
	Diff Kind = "diff"
)

// adapter is one LoRA module: its parts name the tensors by role: "down", "up", "mid",
// "alpha", "w1a", "w1b", "w2a", "w2b", "t1", "t2", "w1", "w2", "diff",
// "diff_b".
type adapter struct {
	module string            // the LoRA's module name (key without its suffix)
	kind   Kind              // set by classify
	parts  map[string]string // role -> stored tensor name
}

// suffixes maps a tensor-name suffix to the adapter kind and role it
// marks, longest first where one ends another.
var suffixes = []struct {
	suffix string
	kind   Kind
	role   string
}{
	{".lora_linear_layer.down.weight", LoRA, "down"}, // diffusers' old text-encoder format
	{".lora_linear_layer.up.weight", LoRA, "up"},
	{"_lora.down.weight", LoRA, "down"}, // diffusers' attention-processor format (to_q_lora)
	{"_lora.up.weight", LoRA, "up"},
	{".lora.down.weight", LoRA, "down"},
	{".lora.up.weight", LoRA, "up"},
	{".lora_down.weight", LoRA, "down"},
	{".lora_up.weight", LoRA, "up"},
	{".lora_mid.weight", LoRA, "mid"},
	{".lora_A.weight", LoRA, "down"},
	{".lora_B.weight", LoRA, "up"},
	{".down.weight", LoRA, "down"}, // XLabs' Flux processors (double_blocks.0.processor.qkv_lora1.down.weight)
	{".up.weight", LoRA, "up"},
	{".hada_w1_a", LoHa, "w1a"},
	{".hada_w1_b", LoHa, "w1b"},
	{".hada_w2_a", LoHa, "w2a"},
	{".hada_w2_b", LoHa, "w2b"},
	{".hada_t1", LoHa, "t1"},
	{".hada_t2", LoHa, "t2"},
	{".lokr_w1_a", LoKr, "w1a"},
	{".lokr_w1_b", LoKr, "w1b"},
	{".lokr_w2_a", LoKr, "w2a"},
	{".lokr_w2_b", LoKr, "w2b"},
	{".lokr_w1", LoKr, "w1"},
	{".lokr_w2", LoKr, "w2"},
	{".lokr_t2", LoKr, "t2"},
	{".diff_b", "", "diff_b"}, // with any kind: ComfyUI's extracted LoRAs carry lora_up/down and diff_b
	{".diff", Diff, "diff"},
	{".alpha", "", "alpha"},
	{".dora_scale", "", "dora"},
	{".lora_magnitude_vector", "", "dora"},
	{".lora_magnitude_vector.weight", "", "dora"},
}

// splitKey cuts a LoRA tensor name into its module name and role.
func splitKey(name string) (module string, kind Kind, role string, ok bool) {
	for _, s := range suffixes {
		if m, found := strings.CutSuffix(name, s.suffix); found && m != "" {
			return normalModule(m, s.suffix), s.kind, s.role, true
		}
	}
	return "", "", "", false
}

// normalModule undoes the spellings of diffusers' attention-processor
// format: "attn1.processor.to_q" (from to_q_lora) is the layer
// "attn1.to_q", and "to_out" is "to_out.0".
func normalModule(m, suffix string) string {
	if i := strings.Index(m, ".processor."); i >= 0 {
		m = m[:i] + m[i+len(".processor"):]
		if strings.HasSuffix(m, ".to_out") {
			m += ".0"
		}
	}
	if suffix == "_lora.down.weight" || suffix == "_lora.up.weight" {
		if strings.HasSuffix(m, ".to_out") {
			m += ".0"
		}
	}
	return m
}

// file is one opened LoRA file, its tensors grouped by module.
type file struct {
	path     string
	src      weights.Source
	adapters []*adapter // sorted by module
}

// openFile reads a LoRA file's names and groups them; it reads no data.
func openFile(path string) (*file, error) {
	m, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	f := &file{path: path, src: m}
	byModule := map[string]*adapter{}
	var strange []string
	names := m.Names()
	for _, n := range names {
		module, kind, role, ok := splitKey(n)
		if !ok {
			strange = append(strange, n)
			continue
		}
		a := byModule[module]
		if a == nil {
			a = &adapter{module: module, parts: map[string]string{}}
			byModule[module] = a
		}
		if prev, dup := a.parts[role]; dup {
			m.Close()
			return nil, fmt.Errorf("%s: LoRA keys %q and %q both give the %s of %q", path, prev, n, role, module)
		}
		a.parts[role] = n
		if kind != "" {
			if a.kind != "" && a.kind != kind {
				m.Close()
				return nil, fmt.Errorf("%s: LoRA module %q mixes %s and %s tensors (%q)", path, module, a.kind, kind, n)
			}
			a.kind = kind
		}
	}
	if len(byModule) == 0 || len(strange) == len(names) {
		m.Close()
		eg := ""
		if len(names) > 0 {
			eg = fmt.Sprintf(" (e.g. %q)", names[0])
		}
		return nil, fmt.Errorf("%s: not a LoRA file: none of its %d tensors is a LoRA weight%s; want names ending in .lora_down.weight/.lora_up.weight, .lora_A.weight/.lora_B.weight, .hada_w1_a…, .lokr_w1… or .diff", path, len(names), eg)
	}
	if len(strange) > 0 {
		m.Close()
		return nil, fmt.Errorf("%s: %d tensors are no LoRA weight, e.g. %q (want names ending in .lora_down.weight, .lora_up.weight, .alpha, .lora_A.weight, .hada_*, .lokr_*, .diff)", path, len(strange), strange[0])
	}
	for _, a := range byModule {
		if err := f.classify(a); err != nil {
			m.Close()
			return nil, err
		}
		f.adapters = append(f.adapters, a)
	}
	sort.Slice(f.adapters, func(i, j int) bool { return f.adapters[i].module < f.adapters[j].module })
	return f, nil
}

// classify checks that an adapter has the tensors its kind needs.
func (f *file) classify(a *adapter) error {
	has := func(roles ...string) bool {
		for _, r := range roles {
			if a.parts[r] == "" {
				return false
			}
		}
		return true
	}
	if has("dora") {
		return fmt.Errorf("%s: %q is a DoRA module (dora_scale / lora_magnitude_vector), which darkroom does not apply", f.path, a.module)
	}
	if a.kind == "" && has("diff_b") {
		a.kind = Diff // a bias difference alone
	}
	need := map[Kind][][]string{
		LoRA: {{"down", "up"}},
		LoHa: {{"w1a", "w1b", "w2a", "w2b"}},
		LoKr: {{"w1"}, {"w1a", "w1b"}},
		Diff: {{"diff"}, {"diff_b"}},
	}[a.kind]
	if a.kind == "" {
		return fmt.Errorf("%s: LoRA module %q has only an alpha, no weights", f.path, a.module)
	}
	ok := false
	for _, roles := range need {
		ok = ok || has(roles...)
	}
	if a.kind == LoKr {
		ok = ok && (has("w2") || has("w2a", "w2b"))
	}
	if !ok {
		var got []string
		for r := range a.parts {
			got = append(got, r)
		}
		sort.Strings(got)
		return fmt.Errorf("%s: %s module %q is incomplete (has %s)", f.path, a.kind, a.module, strings.Join(got, ", "))
	}
	return nil
}

// tensor reads one part of an adapter as float32 with its shape.
func (f *file) tensor(a *adapter, role string) ([]float32, tensor.Shape, error) {
	name := a.parts[role]
	if name == "" {
		return nil, nil, nil
	}
	info, _ := f.src.Info(name)
	v, err := f.src.Float32(name)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %q: %w", f.path, name, err)
	}
	return v, info.Shape, nil
}
