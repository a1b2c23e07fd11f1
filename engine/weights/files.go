package weights

import (
	"fmt"
	"os"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

// ExtraTextEncoderPrefix is where OpenFiles puts a separate text-encoder
// file whose layout no LDM name covers (T5, an LLM): its stored names
// under "text_encoder_files.<N>.", N counting the separate files from 0
// (a namespace of its own: checkpoints use "text_encoders." for the
// encoders they hold).
const ExtraTextEncoderPrefix = "text_encoder_files."

// OpenFiles opens a model made of several files, as ComfyUI users keep
// them: main (a checkpoint file, a diffusers folder, or a diffusion-model
// file), an optional separate VAE file that replaces the checkpoint's VAE,
// and separate text-encoder files. Each extra file's tensors are placed
// under the canonical names of their component (see keymap), so the
// families see one namespace whatever the layout.
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
	filled := map[string]string{} // canonical root -> the extra file that gave it
	extra := 0
	add := func(path, flag string, kind keymap.Component) error {
		st, err := os.Stat(path)
		switch {
		case err != nil:
			return fmt.Errorf("%s %s: no such file", flag, path)
		case st.IsDir():
			return fmt.Errorf("%s %s: is a folder; want a .safetensors file", flag, path)
		}
		f, size, err := osFolder("").open(path)
		if err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		if len(f.Names()) == 0 {
			f.Close()
			return fmt.Errorf("%s %s: holds no tensors", flag, path)
		}
		renames, err := keymap.ComponentFile(kind, f.Names())
		if err != nil {
			if k, _ := keymap.DetectComponent(f.Names()); kind != keymap.ComponentTextEncoder || k != keymap.ComponentUnknown {
				f.Close()
				return fmt.Errorf("%s %s: %w", flag, path, err)
			}
			// A text encoder without an LDM name (T5, an LLM, OpenCLIP in
			// its own layout) keeps its stored names under its own root,
			// for the family that uses it to claim; families that do not
			// refuse tensors left unused there.
			renames = make([]keymap.Rename, len(f.Names()))
			for i, n := range f.Names() {
				renames[i] = keymap.Rename{From: n, To: fmt.Sprintf("%s%d.%s", ExtraTextEncoderPrefix, extra, n)}
			}
		}
		extra++
		// A separate file replaces the checkpoint's component, as
		// ComfyUI's VAE and CLIP loaders do; two separate files for one
		// component are refused.
		roots := map[string]bool{}
		for _, r := range renames {
			first, _, _ := strings.Cut(r.To, ".")
			roots[first+"."] = true
		}
		delete(roots, ExtraTextEncoderPrefix) // its own numbered namespace
		for root := range roots {
			if other, ok := filled[root]; ok {
				f.Close()
				return fmt.Errorf("%s %s: fills the same component as %s", flag, path, other)
			}
		}
		for root := range roots {
			v.drop(root)
			filled[root] = flag + " " + path
		}
		if err := v.add(f, renames); err != nil {
			return fmt.Errorf("%s %s: %w", flag, path, err)
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

// drop removes every tensor under prefix (a VAE replaced by a separate file).
func (v *view) drop(prefix string) {
	for name := range v.entries {
		if strings.HasPrefix(name, prefix) {
			delete(v.entries, name)
		}
	}
	v.finish()
}
