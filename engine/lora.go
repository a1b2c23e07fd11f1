package engine

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/lora"
)

// LoRA is one LoRA file applied to a model, with the strength of its
// change to the diffusion model (UNet) and to the text encoders (ComfyUI's
// LoraLoader strength_model and strength_clip).
type LoRA struct {
	// Path is a .safetensors file, or a name found in the LoRA folders
	// (Options.LoRADirs, then each model directory's loras/ or Lora/).
	Path         string
	Strength     float64
	ClipStrength float64
}

// String formats the LoRA as ParseLoRA reads it: FILE:STRENGTH:CLIP.
func (l LoRA) String() string {
	return l.Path + ":" + formatFloat(l.Strength) + ":" + formatFloat(l.ClipStrength)
}

// ParseLoRA reads a --lora value, FILE[:STRENGTH[:CLIP_STRENGTH]]: the
// strength defaults to 1 and the clip strength to the strength. A file
// name may hold colons (C:\loras\x.safetensors): only trailing fields that
// parse as numbers are strengths.
func ParseLoRA(spec string) (LoRA, error) {
	if strings.TrimSpace(spec) == "" {
		return LoRA{}, &FieldError{Field: "loras", Value: spec, Msg: "an empty LoRA: want FILE[:STRENGTH[:CLIP_STRENGTH]]"}
	}
	parts := strings.Split(spec, ":")
	var nums []float64
	for len(parts) > 1 && len(nums) < 2 {
		last := parts[len(parts)-1]
		v, err := strconv.ParseFloat(last, 64)
		if err != nil {
			if len(nums) == 0 && looksNumeric(last) {
				return LoRA{}, &FieldError{Field: "loras", Value: spec, Msg: fmt.Sprintf("strength %q is not a number: want FILE[:STRENGTH[:CLIP_STRENGTH]]", last)}
			}
			break
		}
		if v != v || v > 1e6 || v < -1e6 {
			return LoRA{}, &FieldError{Field: "loras", Value: spec, Msg: fmt.Sprintf("strength %q: want a finite number", last)}
		}
		nums = append([]float64{v}, nums...)
		parts = parts[:len(parts)-1]
	}
	l := LoRA{Path: strings.Join(parts, ":"), Strength: 1}
	if l.Path == "" {
		return LoRA{}, &FieldError{Field: "loras", Value: spec, Msg: "no file name: want FILE[:STRENGTH[:CLIP_STRENGTH]]"}
	}
	if len(nums) > 0 {
		l.Strength = nums[0]
	}
	l.ClipStrength = l.Strength
	if len(nums) > 1 {
		l.ClipStrength = nums[1]
	}
	return l, nil
}

// looksNumeric says whether s was meant as a number (a strength typo such
// as "0.8x" or "1,2"), not a file-name part.
func looksNumeric(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != '-' && r != '+' && r != ',' }) > 0 &&
		s[0] >= '0' && s[0] <= '9' && !strings.ContainsAny(s, `/\`) && len(s) < 12
}

// ExtractLoRATags removes A1111's extra-network tags for LoRAs from a
// prompt and returns the text left and the LoRAs: <lora:NAME>,
// <lora:NAME:WEIGHT> (both strengths) or <lora:NAME:TE:UNET> (A1111's
// order: the text-encoder weight first). Other <…> text is left alone. A
// malformed tag is an error quoting it.
func ExtractLoRATags(prompt string) (string, []LoRA, error) {
	var out strings.Builder
	var loras []LoRA
	rest := prompt
	for {
		i := strings.Index(strings.ToLower(rest), "<lora:")
		if i < 0 {
			out.WriteString(rest)
			break
		}
		out.WriteString(rest[:i])
		end := strings.IndexByte(rest[i:], '>')
		if end < 0 {
			return "", nil, &FieldError{Field: "prompt", Value: prompt, Msg: fmt.Sprintf("%q: an unclosed <lora:…> tag (want <lora:NAME:WEIGHT>)", rest[i:])}
		}
		tag := rest[i : i+end+1]
		fields := strings.Split(tag[len("<lora:"):len(tag)-1], ":")
		name := strings.TrimSpace(fields[0])
		bad := func(msg string) (string, []LoRA, error) {
			return "", nil, &FieldError{Field: "prompt", Value: prompt, Msg: fmt.Sprintf("%s: %s (want <lora:NAME>, <lora:NAME:WEIGHT> or <lora:NAME:TE_WEIGHT:UNET_WEIGHT>)", tag, msg)}
		}
		if name == "" {
			return bad("no LoRA name")
		}
		if len(fields) > 3 {
			return bad("too many fields")
		}
		w := []float64{1}
		for j, s := range fields[1:] {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || v != v || v > 1e6 || v < -1e6 {
				return bad(fmt.Sprintf("weight %q is not a number", s))
			}
			if j == 0 {
				w[0] = v
			} else {
				w = append(w, v)
			}
		}
		l := LoRA{Path: name, Strength: w[0], ClipStrength: w[0]}
		if len(w) == 2 {
			l.ClipStrength, l.Strength = w[0], w[1]
		}
		loras = append(loras, l)
		rest = rest[i+end+1:]
	}
	return out.String(), loras, nil
}

// loraSpecs converts resolved LoRAs for package lora.
func loraSpecs(ls []LoRA) []lora.Spec {
	out := make([]lora.Spec, len(ls))
	for i, l := range ls {
		out[i] = lora.Spec{Path: l.Path, Strength: l.Strength, ClipStrength: l.ClipStrength}
	}
	return out
}

// requestLoRAs parses a request's LoRAs field.
func requestLoRAs(specs []string) ([]LoRA, error) {
	out := make([]LoRA, 0, len(specs))
	for _, s := range specs {
		l, err := ParseLoRA(s)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// LoRAs returns the LoRAs merged into the model's weights (resolved
// paths), in the order they were applied.
func (m *Model) LoRAs() []LoRA { return append([]LoRA(nil), m.loras...) }

// checkLoRAs refuses a request whose LoRAs are not the ones the model was
// loaded with (a Model runs with the weights it has; Engine.Generate loads
// the model a request's LoRAs need) and a prompt that still holds
// <lora:…> tags.
func (m *Model) checkLoRAs(req Request) error {
	if strings.Contains(strings.ToLower(req.Prompt), "<lora:") {
		return &FieldError{Field: "prompt", Value: req.Prompt, Msg: "<lora:…> tags are applied by Engine.Generate, which loads the model with them; Model.Generate runs the weights it has"}
	}
	want, err := requestLoRAs(req.LoRAs)
	if err != nil {
		return err
	}
	same := len(want) == len(m.loras)
	for i := 0; same && i < len(want); i++ {
		w, h := want[i], m.loras[i]
		same = w.Strength == h.Strength && w.ClipStrength == h.ClipStrength &&
			(absPath(w.Path) == absPath(h.Path) || strings.TrimSuffix(filepath.Base(w.Path), ".safetensors") == strings.TrimSuffix(filepath.Base(h.Path), ".safetensors"))
	}
	if !same {
		return &FieldError{Field: "loras", Value: req.LoRAs, Msg: fmt.Sprintf("the model was loaded with LoRAs %v; load it with the request's (Engine.Generate does)", m.loras)}
	}
	return nil
}
