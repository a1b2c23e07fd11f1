package ldm

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/tokenizer"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// ExtraRoots are the roots of the separate text-encoder files that fill no
// canonical slot ("text_encoder_files.N.", see weights.OpenFiles, e.g. a
// T5), in name order.
func ExtraRoots(k *family.Keys) []string {
	var out []string
	for _, n := range k.Names() {
		rest, ok := strings.CutPrefix(n, weights.ExtraTextEncoderPrefix)
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		if r := weights.ExtraTextEncoderPrefix + num + "."; !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// StrayTextEncoder returns the file of the first separate text-encoder
// file that fills no canonical slot (weights.ExtraTextEncoderPrefix) and
// is not the one under keep (a family's T5; "" keeps none), or "": the
// file a family refuses with a line naming what it uses instead.
func StrayTextEncoder(src *family.Source, keep string) string {
	k := src.Keys()
	for _, r := range ExtraRoots(k) {
		if r == keep {
			continue
		}
		if name := k.First(r); name != "" {
			info, _ := src.Info(name)
			return info.File
		}
	}
	return ""
}

// FirstRoot returns the first of roots under which the tensor name exists,
// or "".
func FirstRoot(k *family.Keys, roots []string, name string) string {
	for _, r := range roots {
		if k.Has(r + name) {
			return r
		}
	}
	return ""
}

// T5Root returns the first of roots, then of the separate text-encoder
// files, that holds a T5 encoder (encoder blocks and a token table), or "".
func T5Root(k *family.Keys, roots []string) string {
	for _, r := range append(slices.Clone(roots), ExtraRoots(k)...) {
		if k.Has(r+"encoder.block.0.") && (k.Has(r+"shared.weight") || k.Has(r+"encoder.embed_tokens.weight")) {
			return r
		}
	}
	return ""
}

// ReadCLIPHeads takes a CLIP encoder's head count from a diffusers folder's
// config (name, e.g. "text_encoder/config.json", num_attention_heads) when
// it is there: shapes cannot tell it, and clip.ConfigFromWeights assumes
// the released encoders' head width of 64.
func ReadCLIPHeads(src *family.Source, name string, c *clip.Config) error {
	b, ok := src.JSON[name]
	if !ok {
		return nil
	}
	var cfg struct {
		Heads int `json:"num_attention_heads"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if cfg.Heads == 0 {
		return nil
	}
	if cfg.Heads < 0 || c.Width%cfg.Heads != 0 {
		return fmt.Errorf("%s: num_attention_heads %d does not divide the width %d", name, cfg.Heads, c.Width)
	}
	c.Heads = cfg.Heads
	return nil
}

// LoadTokenizers returns the CLIP tokenizers of a folder's tokenizer/ and
// tokenizer_2/ (the bundled OpenAI vocabulary where a folder has none; the
// second is the first when there is no tokenizer_2/).
func LoadTokenizers(src *family.Source) (first, second *tokenizer.CLIP, err error) {
	if first, err = LoadTokenizer(src.TokenizerDirs["tokenizer"]); err != nil {
		return nil, nil, err
	}
	second = first
	if dir := src.TokenizerDirs["tokenizer_2"]; dir != "" {
		if second, err = LoadTokenizer(dir); err != nil {
			return nil, nil, err
		}
	}
	return first, second, nil
}

// FoundUnder returns the first tensor name under any of roots and where it
// is (its file, or "the model" for a single source), or "", "": a text
// encoder the family has no use for, which it refuses naming the file.
func FoundUnder(src *family.Source, roots []string) (name, where string) {
	k := src.Keys()
	for _, r := range roots {
		if name := k.First(r); name != "" {
			where := "the model"
			if info, ok := src.Info(name); ok && info.File != "" {
				where = info.File
			}
			return name, where
		}
	}
	return "", ""
}

// VAEPart describes the VAE under root with the latent format's scale and
// shift.
func VAEPart(src *family.Source, root string, f family.LatentFormat) family.Part {
	vc, err := vae.ConfigFromWeights(src, root)
	vc.ScalingFactor, vc.ShiftFactor = f.Scale, f.Shift
	return Part("VAE", root, vc, err)
}

// Need is a component a model needs, whether the source has it, and the
// flag that supplies it ("VAE", "--vae ae.safetensors").
type Need struct {
	What, Flag string
	Have       bool
}

// Missing returns the one-line message naming what a model of family
// lacks and the flags that supply it, or "" when it lacks nothing.
func Missing(family string, needs ...Need) string {
	var lack, flags []string
	for _, n := range needs {
		if !n.Have {
			lack, flags = append(lack, n.What), append(flags, n.Flag)
		}
	}
	if len(flags) == 0 {
		return ""
	}
	return "this " + family + " model has no " + strings.Join(lack, ", ") + ": also give " + strings.Join(flags, " ")
}
