// Package keymap holds every tensor-name conversion darkroom knows. The
// canonical namespace is the single-file LDM layout used by A1111 and
// ComfyUI checkpoints: the UNet under "model.diffusion_model.", the VAE
// under "first_stage_model." and the CLIP text encoder under
// "cond_stage_model.transformer.text_model.". Models only ever see canonical
// names. Single-file checkpoints keep their own text-encoder names (SDXL's
// "conditioner.embedders.*", SD2's "cond_stage_model.model.*"); diffusers
// text encoders and separate text-encoder files are placed by the Slots
// table, which their token-embedding width picks (CLIP-L, bigG, ViT-H).
//
// Diffusers tables are generated in loops from the block structure found in
// the names themselves (number of levels, res blocks per level, which levels
// carry attention), never hardcoded for one model size.
//
// Single files in the other layouts found in the wild (one component alone
// with bare or diffusers names, ComfyUI's names and markers, wrapper
// prefixes such as "module.") are recognised by DetectComponent and
// converted by SingleFile and ComponentFile.
package keymap

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Canonical prefixes of the SD1.x components.
const (
	UNetPrefix = "model.diffusion_model."
	VAEPrefix  = "first_stage_model."
	CLIPPrefix = "cond_stage_model.transformer.text_model."
)

// Rename maps one stored tensor name to its canonical name.
type Rename struct {
	From, To string
	// Conv1x1 marks a weight that the canonical layout stores as a 1x1
	// convolution [out,in,1,1]. When the stored tensor is a Linear weight
	// [out,in], the loader presents it reshaped (the bytes are identical).
	Conv1x1 bool
}

// UnknownKeysError reports stored names that no table converts. Nothing is
// ever dropped silently.
type UnknownKeysError struct {
	Component string   // "UNet", "VAE", "text encoder"
	Layout    string   // "diffusers" for a diffusers component; may be empty
	Keys      []string // sorted
}

// Error lists the first few unknown names.
func (e *UnknownKeysError) Error() string {
	const show = 3
	quoted := make([]string, 0, show)
	for i, k := range e.Keys {
		if i == show {
			break
		}
		quoted = append(quoted, strconv.Quote(k))
	}
	more := ""
	if len(e.Keys) > show {
		more = fmt.Sprintf(" and %d more", len(e.Keys)-show)
	}
	what := e.Component
	if e.Layout != "" {
		what = e.Layout + " " + what
	}
	return fmt.Sprintf("%d unknown %s tensor names: %s%s", len(e.Keys), what, strings.Join(quoted, ", "), more)
}

// blockKind says how the names below a table prefix are converted.
type blockKind int

const (
	leaf      blockKind = iota // only "weight"/"bias" follow
	unetRes                    // UNet ResnetBlock2D -> LDM ResBlock
	unetAttn                   // Transformer2DModel: same names in both layouts
	vaeRes                     // VAE ResnetBlock2D
	vaeAttn                    // VAE mid-block attention
	textModel                  // HF CLIP text model: same names in both layouts
)

type target struct {
	to   string
	kind blockKind
}

// table maps stored name prefixes (ending in ".") to canonical prefixes.
type table map[string]target

// convert looks up the longest table prefix of each name and converts the
// rest according to the block kind.
func (t table) convert(component string, names []string) ([]Rename, error) {
	out := make([]Rename, 0, len(names))
	var unknown []string
	for _, name := range names {
		r, ok := t.convertOne(name)
		if !ok {
			unknown = append(unknown, name)
			continue
		}
		out = append(out, r)
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, &UnknownKeysError{Component: component, Layout: "diffusers", Keys: unknown}
	}
	return out, nil
}

func (t table) convertOne(name string) (Rename, bool) {
	for i := len(name) - 1; i > 0; i-- {
		if name[i] != '.' {
			continue
		}
		tg, ok := t[name[:i+1]]
		if !ok {
			continue
		}
		rest, conv, ok := convertRest(tg.kind, name[i+1:])
		if !ok {
			return Rename{}, false
		}
		return Rename{From: name, To: tg.to + rest, Conv1x1: conv}, true
	}
	return Rename{}, false
}

func isParam(s string) bool { return s == "weight" || s == "bias" }

// splitParam splits "conv1.weight" into "conv1" and "weight".
func splitParam(s string) (layer, param string, ok bool) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 || !isParam(s[i+1:]) {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

var unetResLayers = map[string]string{
	"norm1":         "in_layers.0",
	"conv1":         "in_layers.2",
	"time_emb_proj": "emb_layers.1",
	"norm2":         "out_layers.0",
	"conv2":         "out_layers.3",
	"conv_shortcut": "skip_connection",
}

var vaeResLayers = map[string]string{
	"norm1":         "norm1",
	"conv1":         "conv1",
	"norm2":         "norm2",
	"conv2":         "conv2",
	"conv_shortcut": "nin_shortcut",
}

// vaeAttnLayers covers current diffusers names and the pre-0.14 ones.
var vaeAttnLayers = map[string]string{
	"group_norm": "norm",
	"to_q":       "q",
	"to_k":       "k",
	"to_v":       "v",
	"to_out.0":   "proj_out",
	"query":      "q",
	"key":        "k",
	"value":      "v",
	"proj_attn":  "proj_out",
}

// transformerLayers are the first name components allowed inside a UNet
// Transformer2DModel (identical in both layouts).
var transformerLayers = map[string]bool{"norm": true, "proj_in": true, "proj_out": true, "transformer_blocks": true}

func convertRest(kind blockKind, rest string) (string, bool, bool) {
	switch kind {
	case leaf:
		return rest, false, isParam(rest)
	case unetRes, vaeRes:
		layers := unetResLayers
		if kind == vaeRes {
			layers = vaeResLayers
		}
		layer, param, ok := splitParam(rest)
		if !ok {
			return "", false, false
		}
		to, ok := layers[layer]
		return to + "." + param, false, ok
	case vaeAttn:
		layer, param, ok := splitParam(rest)
		if !ok {
			return "", false, false
		}
		to, ok := vaeAttnLayers[layer]
		return to + "." + param, to != "norm" && param == "weight", ok
	case unetAttn:
		first, _, _ := strings.Cut(rest, ".")
		if !transformerLayers[first] {
			return "", false, false
		}
		_, _, ok := splitParam(rest)
		return rest, false, ok
	case textModel:
		_, _, ok := splitParam(rest)
		if !ok && strings.HasPrefix(rest, "embeddings.") && strings.HasSuffix(rest, "position_ids") {
			ok = true // a buffer some exports keep
		}
		return rest, false, ok
	}
	return "", false, false
}

// structure counts the numbered children found in names: for a prefix like
// "down_blocks." it records, per block index, the largest index seen after
// each child name ("resnets", "attentions", ...).
type structure map[int]map[string]int

func scan(names []string, prefix string) structure {
	st := structure{}
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		parts := strings.SplitN(rest, ".", 4)
		if len(parts) < 2 {
			continue
		}
		i, err := strconv.Atoi(parts[0])
		if err != nil || i < 0 || i > 1000 {
			continue
		}
		if st[i] == nil {
			st[i] = map[string]int{}
		}
		if len(parts) >= 3 {
			if j, err := strconv.Atoi(parts[2]); err == nil && j >= 0 && j < 1000 {
				if j+1 > st[i][parts[1]] {
					st[i][parts[1]] = j + 1
				}
			}
		}
	}
	return st
}

// levels returns the number of blocks (highest index + 1) and the largest
// count of the named child over all blocks.
func (st structure) levels(child string) (n, most int) {
	for i, c := range st {
		n = max(n, i+1)
		most = max(most, c[child])
	}
	return n, most
}

// DiffusersUNet converts the names of a diffusers UNet2DConditionModel
// (SD1.x / SD2.x, and SDXL base and refiner with their "text_time" size
// embedding add_embedding -> label_emb.0) to canonical
// "model.diffusion_model." names. The block structure (levels, res blocks,
// which levels carry attention, transformer depth) is read from the names:
// SDXL's level without attention and its 2- and 10-deep transformers need
// nothing of their own, as the transformer blocks keep their names.
func DiffusersUNet(names []string) ([]Rename, error) {
	return diffusersUNetTable(names).convert("UNet", names)
}

// diffusersUNetTable is DiffusersUNet's table for the block structure
// found in names.
func diffusersUNetTable(names []string) table {
	t := table{}
	p := UNetPrefix
	t["conv_in."] = target{p + "input_blocks.0.0.", leaf}
	t["time_embedding.linear_1."] = target{p + "time_embed.0.", leaf}
	t["time_embedding.linear_2."] = target{p + "time_embed.2.", leaf}
	t["add_embedding.linear_1."] = target{p + "label_emb.0.0.", leaf}
	t["add_embedding.linear_2."] = target{p + "label_emb.0.2.", leaf}
	t["conv_norm_out."] = target{p + "out.0.", leaf}
	t["conv_out."] = target{p + "out.2.", leaf}

	// Down path: each level has nRes res blocks (each optionally followed by
	// attention) and, except the last, a downsampler; LDM numbers all of
	// them in one input_blocks sequence after conv_in.
	down := scan(names, "down_blocks.")
	nDown, nRes := down.levels("resnets")
	in := 1
	for i := range nDown {
		for j := range nRes {
			t[fmt.Sprintf("down_blocks.%d.resnets.%d.", i, j)] = target{fmt.Sprintf("%sinput_blocks.%d.0.", p, in), unetRes}
			t[fmt.Sprintf("down_blocks.%d.attentions.%d.", i, j)] = target{fmt.Sprintf("%sinput_blocks.%d.1.", p, in), unetAttn}
			in++
		}
		if down[i]["downsamplers"] > 0 {
			t[fmt.Sprintf("down_blocks.%d.downsamplers.0.conv.", i)] = target{fmt.Sprintf("%sinput_blocks.%d.0.op.", p, in), leaf}
			in++
		}
	}

	t["mid_block.resnets.0."] = target{p + "middle_block.0.", unetRes}
	t["mid_block.attentions.0."] = target{p + "middle_block.1.", unetAttn}
	t["mid_block.resnets.1."] = target{p + "middle_block.2.", unetRes}

	// Up path: nUpRes res blocks per level; the upsampler sits in the last
	// output block of its level, after the attention when there is one.
	up := scan(names, "up_blocks.")
	nUp, nUpRes := up.levels("resnets")
	out := 0
	for i := range nUp {
		for j := range nUpRes {
			t[fmt.Sprintf("up_blocks.%d.resnets.%d.", i, j)] = target{fmt.Sprintf("%soutput_blocks.%d.0.", p, out), unetRes}
			t[fmt.Sprintf("up_blocks.%d.attentions.%d.", i, j)] = target{fmt.Sprintf("%soutput_blocks.%d.1.", p, out), unetAttn}
			if j == nUpRes-1 && up[i]["upsamplers"] > 0 {
				slot := 1
				if up[i]["attentions"] > 0 {
					slot = 2
				}
				t[fmt.Sprintf("up_blocks.%d.upsamplers.0.conv.", i)] = target{fmt.Sprintf("%soutput_blocks.%d.%d.conv.", p, out, slot), leaf}
			}
			out++
		}
	}
	return t
}

// DiffusersVAE converts the names of a diffusers AutoencoderKL to canonical
// "first_stage_model." names. Decoder levels are numbered in the opposite
// order: diffusers up_blocks.0 is the deepest level, LDM decoder.up.0 the
// shallowest. Attention projections are marked Conv1x1.
func DiffusersVAE(names []string) ([]Rename, error) {
	t := table{}
	p := VAEPrefix
	for _, side := range []string{"encoder", "decoder"} {
		t[side+".conv_in."] = target{p + side + ".conv_in.", leaf}
		t[side+".conv_out."] = target{p + side + ".conv_out.", leaf}
		t[side+".conv_norm_out."] = target{p + side + ".norm_out.", leaf}
		t[side+".mid_block.resnets.0."] = target{p + side + ".mid.block_1.", vaeRes}
		t[side+".mid_block.resnets.1."] = target{p + side + ".mid.block_2.", vaeRes}
		t[side+".mid_block.attentions.0."] = target{p + side + ".mid.attn_1.", vaeAttn}
	}
	t["quant_conv."] = target{p + "quant_conv.", leaf}
	t["post_quant_conv."] = target{p + "post_quant_conv.", leaf}

	down := scan(names, "encoder.down_blocks.")
	nDown, nRes := down.levels("resnets")
	for i := range nDown {
		for j := range nRes {
			t[fmt.Sprintf("encoder.down_blocks.%d.resnets.%d.", i, j)] = target{fmt.Sprintf("%sencoder.down.%d.block.%d.", p, i, j), vaeRes}
		}
		t[fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv.", i)] = target{fmt.Sprintf("%sencoder.down.%d.downsample.conv.", p, i), leaf}
	}
	up := scan(names, "decoder.up_blocks.")
	nUp, nUpRes := up.levels("resnets")
	for i := range nUp {
		l := nUp - 1 - i
		for j := range nUpRes {
			t[fmt.Sprintf("decoder.up_blocks.%d.resnets.%d.", i, j)] = target{fmt.Sprintf("%sdecoder.up.%d.block.%d.", p, l, j), vaeRes}
		}
		t[fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv.", i)] = target{fmt.Sprintf("%sdecoder.up.%d.upsample.conv.", p, l), leaf}
	}
	return t.convert("VAE", names)
}

// DiffusersCLIP converts the names of a transformers CLIPTextModel
// ("text_model.*") to canonical "cond_stage_model.transformer.text_model."
// names; below the prefix the names are already canonical. It accepts
// nothing else; DiffusersTextEncoder also takes the names without
// "text_model." and a text projection.
func DiffusersCLIP(names []string) ([]Rename, error) {
	t := table{"text_model.": target{CLIPPrefix, textModel}}
	return t.convert("text encoder", names)
}

// NormalizeLDM converts a single-file (LDM) name to canonical form:
//   - CLIP keys saved without "text_model." (older transformers versions,
//     "cond_stage_model.transformer.embeddings...") get it inserted;
//   - VAE mid-block attention projections are marked Conv1x1, since some
//     converters store them as Linear [C,C].
//
// Every other name is returned unchanged.
func NormalizeLDM(name string) Rename {
	const clipRoot = "cond_stage_model.transformer."
	r := Rename{From: name, To: name}
	if rest, ok := strings.CutPrefix(name, clipRoot); ok && !strings.HasPrefix(rest, "text_model.") {
		first, _, _ := strings.Cut(rest, ".")
		if first == "embeddings" || first == "encoder" || first == "final_layer_norm" {
			r.To = CLIPPrefix + rest
		}
	}
	for _, side := range []string{"encoder", "decoder"} {
		if rest, ok := strings.CutPrefix(name, VAEPrefix+side+".mid.attn_1."); ok {
			switch rest {
			case "q.weight", "k.weight", "v.weight", "proj_out.weight":
				r.Conv1x1 = true
			}
		}
	}
	return r
}
