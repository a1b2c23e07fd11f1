package weights

import (
	"errors"
	"fmt"
	"sort"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// view presents tensors of several safetensors files under canonical names.
type view struct {
	names   []string
	entries map[string]viewEntry
	files   []tensorFile
}

type viewEntry struct {
	file   tensorFile
	stored string       // name inside file
	shape  tensor.Shape // canonical shape (may differ from the stored one by 1x1 dims)
}

var _ Source = (*view)(nil)
var _ Source = (*safetensors.File)(nil)

func newView() *view { return &view{entries: map[string]viewEntry{}} }

// add registers the tensors of f under the canonical names given by
// renames (which must cover exactly f's names). The view owns f afterwards.
func (v *view) add(f tensorFile, renames []keymap.Rename) error {
	v.files = append(v.files, f)
	for _, r := range renames {
		info, ok := f.Info(r.From)
		if !ok {
			return fmt.Errorf("%s: tensor %q not found", f.Path(), r.From)
		}
		if prev, dup := v.entries[r.To]; dup {
			return fmt.Errorf("tensor %q is stored twice: as %q in %s and as %q in %s",
				r.To, prev.stored, prev.file.Path(), r.From, f.Path())
		}
		shape := info.Shape
		if r.Conv1x1 && len(shape) == 2 {
			shape = tensor.Shape{shape[0], shape[1], 1, 1}
		}
		v.entries[r.To] = viewEntry{file: f, stored: r.From, shape: shape}
	}
	return nil
}

// finish sorts the names once all files are added.
func (v *view) finish() {
	v.names = make([]string, 0, len(v.entries))
	for name := range v.entries {
		v.names = append(v.names, name)
	}
	sort.Strings(v.names)
}

// Names returns every canonical tensor name, sorted.
func (v *view) Names() []string { return v.names }

// Info describes a tensor under its canonical name and shape.
func (v *view) Info(name string) (TensorInfo, bool) {
	e, ok := v.entries[name]
	if !ok {
		return TensorInfo{}, false
	}
	info, ok := e.file.Info(e.stored)
	if !ok {
		return TensorInfo{}, false
	}
	info.Name = name
	info.Shape = e.shape.Clone()
	return info, true
}

// Raw returns the stored bytes of a tensor (aliasing the file mapping).
func (v *view) Raw(name string) ([]byte, error) {
	e, ok := v.entries[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	return e.file.Raw(e.stored)
}

// Float32 returns a float32 copy of a tensor.
func (v *view) Float32(name string) ([]float32, error) {
	e, ok := v.entries[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	return e.file.Float32(e.stored)
}

// Close closes every file of the view.
func (v *view) Close() error {
	var errs []error
	for _, f := range v.files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	v.files = nil
	return errors.Join(errs...)
}

// Stored returns the name a tensor has in its file, when the view renamed
// it (a diffusers or ComfyUI name behind a canonical one).
func (v *view) Stored(name string) (string, bool) {
	e, ok := v.entries[name]
	return e.stored, ok
}
