package family

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// Keys is what a probe reads: the model's tensor names (canonical where a
// converter knows them, see package keymap), their shapes, the
// safetensors metadata and a diffusers folder's JSON files. It answers
// prefix questions over the sorted names.
type Keys struct {
	src    weights.Source
	stored func(string) string
	names  []string
	layout weights.Layout
	meta   map[string]string
	json   map[string][]byte
	parsed map[string]map[string]any
}

// NewKeys wraps an opened model for probing.
func NewKeys(m *weights.Model) *Keys {
	return &Keys{src: m, stored: m.StoredName, names: m.Names(), layout: m.Layout, meta: m.Metadata, json: m.JSON}
}

// Key is the evidence string for a canonical tensor name, naming the
// tensor as the user's file stores it: `key "text_model.embeddings.…" (in
// text_encoder/model.safetensors)` for a renamed tensor of a diffusers
// folder, `key "name"` otherwise.
func (k *Keys) Key(name string) string {
	if k.stored == nil {
		return Key(name)
	}
	stored := k.stored(name)
	if stored == name {
		return Key(name)
	}
	file := ""
	if info, ok := k.src.Info(name); ok && info.File != "" {
		// The component folder and file: "text_encoder/model.safetensors".
		file = " (in " + filepath.Join(filepath.Base(filepath.Dir(info.File)), filepath.Base(info.File)) + ")"
	}
	return Key(stored) + file
}

// Names returns every tensor name, sorted.
func (k *Keys) Names() []string { return k.names }

// Layout is how the model is stored.
func (k *Keys) Layout() weights.Layout { return k.layout }

// First returns the first name with the prefix, or "".
func (k *Keys) First(prefix string) string {
	i := sort.SearchStrings(k.names, prefix)
	if i < len(k.names) && strings.HasPrefix(k.names[i], prefix) {
		return k.names[i]
	}
	return ""
}

// Has reports whether some name has the prefix.
func (k *Keys) Has(prefix string) bool { return k.First(prefix) != "" }

// HasAll reports whether every prefix is present.
func (k *Keys) HasAll(prefixes ...string) bool {
	for _, p := range prefixes {
		if !k.Has(p) {
			return false
		}
	}
	return true
}

// Count returns how many names have the prefix.
func (k *Keys) Count(prefix string) int {
	i := sort.SearchStrings(k.names, prefix)
	n := 0
	for ; i < len(k.names) && strings.HasPrefix(k.names[i], prefix); i++ {
		n++
	}
	return n
}

// Shape returns a tensor's shape.
func (k *Keys) Shape(name string) (tensor.Shape, bool) {
	info, ok := k.src.Info(name)
	return info.Shape, ok
}

// Dim returns dimension i of a tensor's shape, or -1.
func (k *Keys) Dim(name string, i int) int {
	s, ok := k.Shape(name)
	if !ok || i >= len(s) {
		return -1
	}
	return s[i]
}

// Meta returns a safetensors metadata value ("" when absent).
func (k *Keys) Meta(key string) string { return k.meta[key] }

// JSON returns a field of one of a diffusers folder's JSON files
// ("model_index.json", "scheduler/scheduler_config.json"), or nil.
func (k *Keys) JSON(file, field string) any {
	if k.parsed == nil {
		k.parsed = map[string]map[string]any{}
	}
	obj, ok := k.parsed[file]
	if !ok {
		if b, has := k.json[file]; has {
			_ = json.Unmarshal(b, &obj)
		}
		k.parsed[file] = obj
	}
	return obj[field]
}

// JSONString is JSON for string fields ("" when absent or not a string).
func (k *Keys) JSONString(file, field string) string {
	s, _ := k.JSON(file, field).(string)
	return s
}

// Pipeline returns model_index.json's _class_name ("" for single files).
func (k *Keys) Pipeline() string { return k.JSONString("model_index.json", "_class_name") }

// PipelineEvidence is the evidence string for the pipeline class.
func (k *Keys) PipelineEvidence() string {
	return fmt.Sprintf("model_index.json _class_name=%q", k.Pipeline())
}

// Prefixes returns the distinct name prefixes of up to depth segments
// (never a name's last segment), with their counts, for messages
// ("model.diffusion_model. (1680)").
func (k *Keys) Prefixes(depth int) []string {
	counts := map[string]int{}
	var order []string
	for _, n := range k.names {
		// Up to depth segments, never the last one (the parameter name).
		parts := strings.Split(n, ".")
		p := n
		if d := min(depth, len(parts)-1); d > 0 {
			p = strings.Join(parts[:d], ".") + "."
		}
		if counts[p] == 0 {
			order = append(order, p)
		}
		counts[p]++
	}
	out := make([]string, len(order))
	for i, p := range order {
		out[i] = fmt.Sprintf("%s (%d)", p, counts[p])
	}
	return out
}

// Summary describes the keys in one line for an "unknown family" error:
// the tensor count, the leading name prefixes, and the metadata or
// pipeline class that might help.
func (k *Keys) Summary() string {
	if len(k.names) == 0 {
		return "no tensors"
	}
	pre := k.Prefixes(2)
	more := ""
	if len(pre) > 6 {
		more = fmt.Sprintf(" and %d more", len(pre)-6)
		pre = pre[:6]
	}
	s := fmt.Sprintf("%d tensors, names starting %s%s", len(k.names), strings.Join(pre, ", "), more)
	if a := k.Meta("modelspec.architecture"); a != "" {
		s += fmt.Sprintf("; metadata modelspec.architecture=%q", a)
	}
	if p := k.Pipeline(); p != "" {
		s += "; " + k.PipelineEvidence()
	}
	if hint := k.componentHint(); hint != "" {
		s += "; " + hint
	}
	return s
}

// componentHint recognises a lone component file of a diffusers folder or
// a separate text encoder or VAE, and says what to do with it.
func (k *Keys) componentHint() string {
	switch {
	case k.HasAll("down_blocks.", "conv_in.", "time_embedding."):
		return "it looks like a diffusers UNet (unet/diffusion_pytorch_model.safetensors): open the whole diffusers folder (with vae/ and text_encoder/), or a single-file checkpoint"
	case k.Has("model.diffusion_model.input_blocks.") && len(k.Prefixes(1)) == 1:
		return "it looks like a UNet on its own, whose context width names no family: open it with its checkpoint, or give its VAE and text encoder with --vae and --text-encoder"
	case k.HasAll("encoder.down_blocks.", "decoder.up_blocks."), k.HasAll("first_stage_model.encoder.", "first_stage_model.decoder.") && len(k.Prefixes(1)) == 1:
		return "it looks like a VAE on its own: pass it with --vae beside a checkpoint or diffusion-model file"
	case k.Has("cond_stage_model.transformer.text_model.") && len(k.Prefixes(1)) == 1,
		k.Has("cond_stage_model.model.") && len(k.Prefixes(1)) == 1,
		k.Has("text_encoders.") && len(k.Prefixes(1)) == 1,
		k.Has("conditioner.embedders.") && len(k.Prefixes(1)) == 1,
		k.Has("encoder.block.") && k.Has("shared."):
		return "it looks like a text encoder on its own: pass it with --text-encoder beside a diffusion-model file"
	}
	return ""
}

// Native and diffusers name roots of a diffusion transformer: bare names
// (a diffusion-model file as BFL, ComfyUI and the trainers ship it), under
// the checkpoint prefix "model.diffusion_model.", or a diffusers folder's
// "transformer." component.
var (
	NativeRoots    = []string{"", "model.diffusion_model."}
	DiffusersRoots = []string{"transformer."}
)

// FindUnder returns, for the first root under which every one of the
// prefixes is present, that root and the first key of prefixes[0]; ok is
// false when no root has them all.
func (k *Keys) FindUnder(roots []string, prefixes ...string) (root, key string, ok bool) {
	for _, r := range roots {
		all := true
		for _, p := range prefixes {
			if !k.Has(r + p) {
				all = false
				break
			}
		}
		if all {
			return r, k.First(r + prefixes[0]), true
		}
	}
	return "", "", false
}

// CountBlocks returns the number of numbered blocks under prefix (the
// highest index + 1 of "prefix<N>.").
func (k *Keys) CountBlocks(prefix string) int {
	n := 0
	i := sort.SearchStrings(k.names, prefix)
	for ; i < len(k.names) && strings.HasPrefix(k.names[i], prefix); i++ {
		rest := k.names[i][len(prefix):]
		num, _, _ := strings.Cut(rest, ".")
		var v int
		if _, err := fmt.Sscanf(num, "%d", &v); err == nil && v+1 > n {
			n = v + 1
		}
	}
	return n
}

// LDMContextWidth returns the cross-attention context width of an LDM
// UNet (the input width of its first attn2.to_k under
// "model.diffusion_model.") and the key it was read from; SD1 has 768,
// SD2 1024.
func LDMContextWidth(k *Keys) (int, string) {
	const unet = "model.diffusion_model."
	for _, name := range k.Names() {
		if strings.HasPrefix(name, unet) && strings.HasSuffix(name, ".attn2.to_k.weight") {
			if s, ok := k.Shape(name); ok && len(s) == 2 {
				return s[1], name
			}
		}
	}
	return 0, ""
}

// LDMUNet reports the LDM UNet of SD1/SD2: input blocks under
// "model.diffusion_model.", no class/size embedding (label_emb) and no
// SDXL conditioner.
func LDMUNet(k *Keys) bool {
	const unet = "model.diffusion_model."
	return k.Has(unet+"input_blocks.") && !k.Has(unet+"label_emb.") && !k.Has("conditioner.")
}

// LDMLinearProjection reports whether the LDM UNet's spatial transformers
// project with linear layers (SD2.x, SDXL: use_linear_in_transformer)
// rather than SD1's 1×1 convolutions, and names the tensor that says so.
func LDMLinearProjection(k *Keys) (bool, string) {
	const unet = "model.diffusion_model."
	for _, name := range k.Names() {
		if strings.HasPrefix(name, unet) && strings.HasSuffix(name, ".proj_in.weight") {
			s, ok := k.Shape(name)
			return ok && len(s) == 2, name
		}
	}
	return false, ""
}
