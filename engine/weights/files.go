package weights

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// ExtraTextEncoderPrefix is where OpenFiles puts a separate text-encoder
// file that fills no keymap.Slots entry (T5, an LLM, an OpenCLIP model
// that is neither bigG nor ViT-H): its stored names under
// "text_encoder_files.<N>.", N counting the separate files from 0 (a
// namespace of its own: checkpoints use "text_encoders." for the encoders
// they hold).
const ExtraTextEncoderPrefix = "text_encoder_files."

// OpenFiles opens a model made of several files, as ComfyUI users keep
// them: main (a checkpoint file, a diffusers folder, or a diffusion-model
// file), an optional separate VAE file that replaces the checkpoint's VAE,
// and separate text-encoder files. Each extra file's tensors are placed
// under the canonical names of its slot (keymap.Slots: a text encoder's by
// its width), so the families see one namespace whatever the layout, and
// replace the checkpoint's tensors of that slot (keymap.Slot.Replaces), as
// ComfyUI's VAE and CLIP loaders do: a CLIP-L file the checkpoint's CLIP-L
// only, a bigG file its bigG only. Two separate files for one slot are
// refused. A file may be a key list (.json, .json.gz with one file; see
// ReadKeyList), for tests and inspection without the weights.
func OpenFiles(main, vae string, textEncoders []string) (*Model, error) {
	m, err := OpenModel(main)
	if err != nil {
		return nil, err
	}
	if vae == "" && len(textEncoders) == 0 {
		return m, nil
	}
	v, ok := m.Source.(*view)
	if !ok {
		m.Close()
		return nil, fmt.Errorf("%s: cannot add separate files to this model", main)
	}
	filled := map[string]string{}    // slot name -> the extra file that filled it
	fromExtra := map[string]string{} // canonical name -> the extra file that gave it
	extra := 0
	add := func(path, flag string, kind keymap.Component) error {
		st, err := os.Stat(path)
		switch {
		case err != nil:
			return fmt.Errorf("%s %s: no such file", flag, path)
		case st.IsDir():
			return fmt.Errorf("%s %s: is a folder; want a .safetensors file", flag, path)
		}
		f, size, err := openExtraFile(path)
		if err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		if len(f.Names()) == 0 {
			f.Close()
			return fmt.Errorf("%s %s: holds no tensors", flag, path)
		}
		renames, slot, err := keymap.ComponentFile(kind, f.Names(), shapesOf(f))
		if err != nil && kind == keymap.ComponentVAE && isVideoVAE(f) {
			// A causal 3-D VAE (Wan, Qwen-Image) keeps its stored names
			// under VideoVAEPrefix, for the family that uses it to claim.
			renames, slot, err = make([]keymap.Rename, len(f.Names())), keymap.Slot{}, nil
			for i, n := range f.Names() {
				renames[i] = keymap.Rename{From: n, To: VideoVAEPrefix + n}
			}
		}
		if err != nil {
			k, _ := keymap.DetectComponent(f.Names())
			if kind != keymap.ComponentTextEncoder || (k != keymap.ComponentUnknown && !errors.Is(err, keymap.ErrNoSlot)) {
				f.Close()
				return fmt.Errorf("%s %s: %w", flag, path, err)
			}
			// A text encoder of no slot (T5, an LLM, an OpenCLIP model
			// of another width) keeps its stored names under its own
			// root, for the family that uses it to claim; families that
			// do not refuse tensors left unused there.
			renames = make([]keymap.Rename, len(f.Names()))
			for i, n := range f.Names() {
				renames[i] = keymap.Rename{From: n, To: fmt.Sprintf("%s%d.%s", ExtraTextEncoderPrefix, extra, n)}
			}
			slot = keymap.Slot{}
		}
		extra++
		me := flag + " " + path
		if other, ok := filled[slot.Name]; ok && slot.Name != "" {
			f.Close()
			return fmt.Errorf("%s: fills the same component as %s (%s)", me, other, slot.Name)
		}
		for _, r := range renames {
			if other, ok := fromExtra[r.To]; ok {
				f.Close()
				return fmt.Errorf("%s: fills the same component as %s (both hold %q)", me, other, r.To)
			}
		}
		v.drop(slot.Replaces, fromExtra)
		if slot.Name != "" {
			filled[slot.Name] = me
		}
		if err := v.add(f, renames); err != nil {
			return fmt.Errorf("%s: %w", me, err)
		}
		for _, r := range renames {
			fromExtra[r.To] = me
		}
		m.Files = append(m.Files, FileInfo{Path: path, Size: size, Component: string(kind), Tensors: len(f.Names())})
		return nil
	}
	if vae != "" {
		if err := add(vae, "--vae", keymap.ComponentVAE); err != nil {
			m.Close()
			return nil, err
		}
	}
	for _, te := range textEncoders {
		if err := add(te, "--text-encoder", keymap.ComponentTextEncoder); err != nil {
			m.Close()
			return nil, err
		}
	}
	v.finish()
	return m, nil
}

// VideoVAEPrefix is the root OpenFiles gives a separate causal 3-D VAE
// file (--vae qwen_image_vae.safetensors, a Wan VAE): its names as stored.
const VideoVAEPrefix = "video_vae."

// isVideoVAE reports whether a file holds a VAE with 3-D (5-dimensional)
// convolution kernels in its decoder: Wan's and Qwen-Image's causal VAEs,
// in their own or diffusers' names.
func isVideoVAE(f tensorFile) bool {
	for _, n := range f.Names() {
		if strings.HasPrefix(n, "decoder.") {
			if info, ok := f.Info(n); ok && len(info.Shape) == 5 {
				return true
			}
		}
	}
	return false
}

// openExtraFile opens a separate component file: a safetensors or GGUF
// file, or a key list of one file (shapes only).
func openExtraFile(path string) (tensorFile, int64, error) {
	if lower := strings.ToLower(path); strings.HasSuffix(lower, ".json.gz") || strings.HasSuffix(lower, ".json") {
		kl, err := ReadKeyList(path)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: a .json file is read as a darkroom key list: %w", path, err)
		}
		if len(kl.Files) != 1 {
			return nil, 0, fmt.Errorf("%s: a key list of %d files is not one component file", path, len(kl.Files))
		}
		for rel, file := range kl.Files {
			sf, err := newShapeFile(path+"/"+rel, file)
			if err != nil {
				return nil, 0, fmt.Errorf("%s: %w", path, err)
			}
			return keyListFile(sf), sf.size, nil
		}
	}
	return osFolder("").open(path)
}

// drop removes the checkpoint's tensors under any of prefixes (a component
// replaced by a separate file); names given by separate files (keep) stay.
func (v *view) drop(prefixes []string, keep map[string]string) {
	for name := range v.entries {
		if _, ok := keep[name]; ok {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				delete(v.entries, name)
				break
			}
		}
	}
	v.finish()
}
