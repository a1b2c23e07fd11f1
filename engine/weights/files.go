package weights

import (
	"fmt"
	"os"

	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

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
	add := func(path, flag string, kind keymap.Component) error {
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			return fmt.Errorf("%s %s: want a .safetensors file", flag, path)
		}
		f, size, err := osFolder("").open(path)
		if err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		renames, err := keymap.ComponentFile(kind, f.Names())
		if err != nil {
			f.Close()
			return fmt.Errorf("%s %s: %w", flag, path, err)
		}
		// A separate file replaces the checkpoint's component, as
		// ComfyUI's VAE and CLIP loaders do.
		roots := map[string]bool{}
		for _, r := range renames {
			first, _, _ := strings.Cut(r.To, ".")
			roots[first+"."] = true
		}
		for root := range roots {
			v.drop(root)
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
