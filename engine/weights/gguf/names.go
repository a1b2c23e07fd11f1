package gguf

import (
	"strings"
)

// t5Layers maps llama.cpp's T5 block tensor names (after
// "enc.blk.<N>.") to transformers' (after "encoder.block.<N>."), as
// ComfyUI-GGUF's loader renames them (its T5_SD_MAP).
var t5Layers = map[string]string{
	"attn_q":     "layer.0.SelfAttention.q",
	"attn_k":     "layer.0.SelfAttention.k",
	"attn_v":     "layer.0.SelfAttention.v",
	"attn_o":     "layer.0.SelfAttention.o",
	"attn_norm":  "layer.0.layer_norm",
	"attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
	"ffn_gate":   "layer.1.DenseReluDense.wi_0",
	"ffn_up":     "layer.1.DenseReluDense.wi_1",
	"ffn_down":   "layer.1.DenseReluDense.wo",
	"ffn_norm":   "layer.1.layer_norm",
}

// T5Name returns transformers' name of a tensor of a T5 encoder that
// llama.cpp's converter wrote ("enc.blk.0.attn_q.weight" is
// "encoder.block.0.layer.0.SelfAttention.q.weight", "token_embd.weight"
// is "shared.weight", "enc.output_norm.weight" is
// "encoder.final_layer_norm.weight"), and false for a name of no
// encoder tensor (a decoder's "dec.*").
func T5Name(stored string) (string, bool) {
	switch stored {
	case "token_embd.weight":
		return "shared.weight", true
	case "enc.output_norm.weight":
		return "encoder.final_layer_norm.weight", true
	}
	rest, ok := strings.CutPrefix(stored, "enc.blk.")
	if !ok {
		return "", false
	}
	block, rest, ok := strings.Cut(rest, ".")
	if !ok || block == "" || strings.Trim(block, "0123456789") != "" {
		return "", false
	}
	layer, suffix, ok := strings.Cut(rest, ".")
	if to, known := t5Layers[layer]; ok && known {
		return "encoder.block." + block + "." + to + "." + suffix, true
	}
	return "", false
}

// LoaderNames returns the names ComfyUI-GGUF's loader gives a file's
// tensors, as a map from stored name to name, or nil when the stored
// names are kept: a T5 encoder (general.architecture "t5" or
// "t5encoder") gets transformers' names (T5Name; names T5Name does not
// know keep theirs). Image models (architecture "flux", "sdxl", "sd3",
// ..., or none, as stable-diffusion.cpp writes them) keep their stored
// names, which are the ones of the safetensors checkpoints they came from.
func LoaderNames(arch string, names []string) map[string]string {
	if arch != "t5" && arch != "t5encoder" {
		return nil
	}
	out := make(map[string]string, len(names))
	for _, n := range names {
		if to, ok := T5Name(n); ok {
			out[n] = to
		} else {
			out[n] = n
		}
	}
	return out
}

// T5StoredName is T5Name's inverse: llama.cpp's name of a T5 encoder
// tensor given transformers' name ("shared.weight" is
// "token_embd.weight"), for writing GGUF files; false for a name llama.cpp
// does not store (transformers' second embedding copy
// "encoder.embed_tokens.weight", decoder tensors).
func T5StoredName(name string) (string, bool) {
	switch name {
	case "shared.weight":
		return "token_embd.weight", true
	case "encoder.final_layer_norm.weight":
		return "enc.output_norm.weight", true
	}
	rest, ok := strings.CutPrefix(name, "encoder.block.")
	if !ok {
		return "", false
	}
	block, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	for from, to := range t5Layers {
		if suffix, ok := strings.CutPrefix(rest, to+"."); ok {
			stored := "enc.blk." + block + "." + from + "." + suffix
			if back, ok := T5Name(stored); ok && back == name {
				return stored, true
			}
		}
	}
	return "", false
}
