// Package zimage is the Z-Image family (Turbo, Base): a single-stream DiT
// (Lumina-2 style, with noise and context refiners) conditioned by
// Qwen3-4B. Recognised; not runnable yet.
package zimage

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/family"
)

// Name is the family's name.
const Name = "Z-Image"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// qwen3Width is the hidden size of Qwen3-4B, the caption embedder's input
// (Lumina 2.0, the same architecture with Gemma-2 2B, has 2304).
const qwen3Width = 2560

// Probe claims noise and context refiners beside a caption embedder whose
// input is Qwen3-4B's width, in ComfyUI's (NextDiT) or diffusers' names.
func Probe(k *family.Keys) (family.Detection, bool) {
	roots := append(append([]string{}, family.NativeRoots...), family.DiffusersRoots...)
	root, key, ok := k.FindUnder(roots, "noise_refiner.", "context_refiner.", "cap_embedder.")
	if !ok {
		return family.Detection{}, false
	}
	w := -1
	for _, n := range []string{"cap_embedder.1.weight", "cap_embedder.0.weight"} {
		if d := k.Dim(root+n, 1); d > 0 && w < 0 {
			w = d
		}
	}
	if w != qwen3Width {
		return family.Detection{}, false
	}
	d := family.Detection{Evidence: []string{k.Key(key), fmt.Sprintf("caption width %d", w)}}
	return d, true
}
