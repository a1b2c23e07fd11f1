package ldm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/qwenllm"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// QwenRoot returns the first of roots, then of the separate text-encoder
// files, that holds a Qwen language model (model.layers.* or bare
// layers.*), or "".
func QwenRoot(k *family.Keys, roots []string) string {
	for _, r := range append(slices.Clone(roots), ExtraRoots(k)...) {
		if k.Has(r+"model.layers.0.self_attn.q_proj.weight") || k.Has(r+"layers.0.self_attn.q_proj.weight") {
			return r
		}
	}
	return ""
}

// QwenSpec is what an LLM-conditioned family needs of its text encoder.
type QwenSpec struct {
	Family string               // the family, in messages ("Z-Image")
	Arch   qwenllm.Arch         // the architecture it reads
	Model  string               // the model and file, in messages ("Qwen3-4B (qwen_3_4b.safetensors)")
	Width  int                  // the transformer's text width
	Vocab  tokenizer.QwenFamily // the bundled vocabulary for files without a tokenizer
}

// QwenEncoder reads the configuration of the text encoder under root (a
// diffusers folder's text_encoder/config.json applied), checks it against
// spec, and finds its tokenizer (a diffusers folder's own, else the
// bundled vocabulary), whose ids must fit the encoder's table.
func QwenEncoder(src *family.Source, root string, spec QwenSpec) (qwenllm.Config, *tokenizer.Qwen, error) {
	tc, err := qwenllm.ConfigFromWeights(src, root, src.JSON["text_encoder/config.json"])
	if err != nil {
		return qwenllm.Config{}, nil, err
	}
	if tc.Arch != spec.Arch {
		return qwenllm.Config{}, nil, fmt.Errorf("the text encoder is %s; %s reads %s", tc.Arch, spec.Family, spec.Model)
	}
	if tc.Width != spec.Width {
		return qwenllm.Config{}, nil, fmt.Errorf("the %s text encoder is %d wide; this %s transformer reads %d-wide text states (%s)", tc.Arch, tc.Width, spec.Family, spec.Width, spec.Model)
	}
	var dir string
	if src.Layout == weights.Diffusers {
		dir = src.Path
	}
	tok, err := tokenizer.FindQwen(dir, spec.Vocab)
	if err != nil {
		return qwenllm.Config{}, nil, err
	}
	if tok.VocabSize() > tc.Vocab {
		return qwenllm.Config{}, nil, fmt.Errorf("the tokenizer has %d tokens, the %s text encoder's table only %d rows", tok.VocabSize(), tc.Arch, tc.Vocab)
	}
	return tc, tok, nil
}

// ClaimIgnored marks as read the tensors under root that a Qwen file holds
// and the text encoder never reads (qwenllm.Ignored: a vision tower, the
// language-model head).
func ClaimIgnored(b *weights.Builder, src *family.Source, root string) {
	for _, n := range src.Keys().Names() {
		if rest, ok := strings.CutPrefix(n, root); ok && qwenllm.Ignored(rest) {
			b.Claim(n)
		}
	}
}
