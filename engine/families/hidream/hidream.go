// Package hidream is the HiDream-I1 family: double- and single-stream
// blocks with mixture-of-experts feed-forwards, conditioned by CLIP-L,
// CLIP-G, T5-XXL and Llama-3.1-8B. Recognised; not runnable yet.
package hidream

import "github.com/darkroom-ai/darkroom/engine/family"

// Name is the family's name.
const Name = "HiDream"

func init() { family.Register(family.Recognised{FamilyName: Name, Match: Probe}) }

// Probe claims double_stream_blocks beside single_stream_blocks.
func Probe(k *family.Keys) (family.Detection, bool) {
	roots := append(append([]string{}, family.NativeRoots...), family.DiffusersRoots...)
	if _, key, ok := k.FindUnder(roots, "double_stream_blocks.", "single_stream_blocks."); ok {
		d := family.Detection{Evidence: []string{k.Key(key)}}
		return d, true
	}
	return family.Detection{}, false
}
