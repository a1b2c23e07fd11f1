package keymap

import (
	"fmt"
	"strings"
)

// Component is the kind of a separate component file.
type Component string

// Component kinds of separate files.
const (
	ComponentVAE         Component = "vae"
	ComponentTextEncoder Component = "text encoder"
)

// ComponentFile converts the names of a separate component file (a
// --vae or --text-encoder file) to canonical names: a VAE in LDM names
// (bare or under first_stage_model.) or in diffusers names; a CLIP text
// model in transformers names (text_model.* or without the base prefix)
// or already canonical. Anything else is refused with the first name.
func ComponentFile(kind Component, names []string) ([]Rename, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no tensors")
	}
	switch kind {
	case ComponentVAE:
		if allHave(names, VAEPrefix) {
			return identity(names), nil
		}
		if allLDMVAE(names) {
			out := make([]Rename, len(names))
			for i, n := range names {
				out[i] = NormalizeLDM(VAEPrefix + n)
				out[i].From = n
			}
			return out, nil
		}
		r, err := DiffusersVAE(names)
		if err != nil {
			return nil, fmt.Errorf("not a VAE in LDM or diffusers names: %w", err)
		}
		return r, nil
	case ComponentTextEncoder:
		if allHave(names, CLIPPrefix) {
			return identity(names), nil
		}
		if allHave(names, "text_model.") {
			return DiffusersCLIP(names)
		}
		r, err := DiffusersCLIP(prefixAll(names, "text_model."))
		if err == nil {
			for i := range r {
				r[i].From = names[i]
			}
			return r, nil
		}
		return nil, fmt.Errorf("not a CLIP text encoder in transformers names (first tensor %q); other text encoders are not supported yet", names[0])
	}
	return nil, fmt.Errorf("unknown component kind %q", kind)
}

func allHave(names []string, prefix string) bool {
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			return false
		}
	}
	return true
}

func allLDMVAE(names []string) bool {
	for _, n := range names {
		first, _, _ := strings.Cut(n, ".")
		switch first {
		case "encoder", "decoder", "quant_conv", "post_quant_conv":
		default:
			return false
		}
		if strings.Contains(n, "down_blocks.") || strings.Contains(n, "up_blocks.") || strings.Contains(n, "mid_block.") {
			return false
		}
	}
	return true
}

func identity(names []string) []Rename {
	out := make([]Rename, len(names))
	for i, n := range names {
		out[i] = NormalizeLDM(n)
	}
	return out
}

func prefixAll(names []string, p string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + n
	}
	return out
}
