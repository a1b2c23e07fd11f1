package weights

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
)

// KeyList is a checkpoint's tensor names, dtypes and shapes without data,
// in the file layout users have: the real-size key lists in
// testdata/keyshapes (made by tools/reference/gen_keyshapes.py) are
// KeyLists, gzip-compressed.
type KeyList struct {
	// Name identifies the list ("sdxl-base.single").
	Name string `json:"name"`
	// Family is the family the generator built ("SDXL"), or "component".
	Family string `json:"family"`
	// Layout is "single-file", "diffusers" or "component".
	Layout string `json:"layout"`
	// Source says how the list was made.
	Source string `json:"source"`
	// Files are the weight files by path relative to the model.
	Files map[string]KeyListFile `json:"files"`
	// JSON holds a diffusers folder's small JSON files by relative path.
	JSON map[string]json.RawMessage `json:"json"`
}

// KeyListFile is one weight file of a KeyList.
type KeyListFile struct {
	Metadata map[string]string `json:"metadata,omitempty"`
	// Tensors maps each name to [dtype, shape].
	Tensors map[string][2]json.RawMessage `json:"tensors"`
}

// ReadKeyList reads a KeyList from a JSON file, gzip-compressed when the
// name ends in .gz.
func ReadKeyList(file string) (*KeyList, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(file, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		defer gz.Close()
		r = gz
	}
	var kl KeyList
	if err := json.NewDecoder(r).Decode(&kl); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(kl.Files) == 0 {
		return nil, fmt.Errorf("%s: key list has no files", file)
	}
	return &kl, nil
}

// Open presents the key list as an opened model whose tensors have names,
// dtypes and shapes but no data (Raw and Float32 fail): for detection and
// for checking that a loader asks for exactly the tensors of a real
// checkpoint. A diffusers list goes through the same folder reader as a
// folder on disk, a single file through the same renames.
func (kl *KeyList) Open() (*Model, error) {
	files := map[string]*shapeFile{}
	for rel, f := range kl.Files {
		sf, err := newShapeFile(kl.Name+"/"+rel, f)
		if err != nil {
			return nil, fmt.Errorf("key list %s: %w", kl.Name, err)
		}
		files[rel] = sf
	}
	if kl.Layout == string(Diffusers) {
		js := map[string][]byte{}
		for k, v := range kl.JSON {
			js[k] = v
		}
		return openFolder(keyListFolder{name: kl.Name, files: files, json: js}, kl.Name)
	}
	if len(files) != 1 {
		return nil, fmt.Errorf("key list %s: a %s layout has one file, not %d", kl.Name, kl.Layout, len(files))
	}
	for rel, f := range files {
		return singleModel(keyListFile(f), kl.Name+"/"+rel, f.size)
	}
	panic("unreachable")
}

// keyListFile is a key list's file as a tensorFile: a .gguf file's under
// the names its loader gives it (ggufNames), as the file itself would be.
func keyListFile(f *shapeFile) tensorFile {
	if isGGUF(f.path) {
		return ggufNames(f)
	}
	return f
}

// shapeFile is a tensorFile with shapes and no data.
type shapeFile struct {
	path  string
	names []string
	infos map[string]TensorInfo
	meta  map[string]string
	size  int64
}

func newShapeFile(p string, f KeyListFile) (*shapeFile, error) {
	sf := &shapeFile{path: p, infos: map[string]TensorInfo{}, meta: f.Metadata}
	for name, pair := range f.Tensors {
		var dt string
		var shape []int
		if err := json.Unmarshal(pair[0], &dt); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: dtype: %w", p, name, err)
		}
		if err := json.Unmarshal(pair[1], &shape); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: shape: %w", p, name, err)
		}
		n := int64(1)
		for _, v := range shape {
			if v < 0 || (v > 0 && n > (1<<50)/int64(v)) {
				return nil, fmt.Errorf("%s: tensor %q: shape %v is negative or too large", p, name, shape)
			}
			n *= int64(v)
		}
		d, err := tensor.ParseDType(dt)
		if err != nil {
			// A GGUF file's list names ggml types ("Q4_K"), read as
			// the dtype gguf.File.Raw serves them in.
			gt, gerr := gguf.ParseType(dt)
			if gerr != nil || !isGGUF(p) {
				return nil, fmt.Errorf("%s: tensor %q: %w", p, name, err)
			}
			d = gguf.DType(gt)
		}
		info := TensorInfo{Name: name, DType: d, Shape: tensor.Shape(shape), File: p}
		info.Size = int64(info.Shape.NumElements() * d.Size())
		sf.infos[name] = info
		sf.names = append(sf.names, name)
		sf.size += info.Size
	}
	slices.Sort(sf.names)
	return sf, nil
}

func (f *shapeFile) Path() string                      { return f.path }
func (f *shapeFile) Names() []string                   { return f.names }
func (f *shapeFile) Metadata() map[string]string       { return f.meta }
func (f *shapeFile) Close() error                      { return nil }
func (f *shapeFile) Float32(string) ([]float32, error) { return nil, errNoData }

// Raw returns no bytes and no error, so that a loader run over a key list
// with a device that records shapes only (tests) asks for every tensor;
// a real device refuses an upload of no bytes into a non-empty shape.
func (f *shapeFile) Raw(string) ([]byte, error) { return nil, nil }

var errNoData = errors.New("a key list has no tensor data")

func (f *shapeFile) Info(name string) (TensorInfo, bool) {
	i, ok := f.infos[name]
	if ok {
		i.Shape = i.Shape.Clone()
	}
	return i, ok
}

// keyListFolder is a diffusers folder made of a key list's files.
type keyListFolder struct {
	name  string
	files map[string]*shapeFile
	json  map[string][]byte
}

func (k keyListFolder) path(rel string) string { return path.Join(k.name, rel) }
func (k keyListFolder) isFile(rel string) bool {
	_, ok := k.files[rel]
	_, isJSON := k.json[rel]
	return ok || isJSON
}
func (k keyListFolder) isDir(rel string) bool {
	for _, r := range k.all() {
		if strings.HasPrefix(r, rel+"/") {
			return true
		}
	}
	return false
}
func (k keyListFolder) all() []string {
	var out []string
	for r := range k.files {
		out = append(out, r)
	}
	for r := range k.json {
		out = append(out, r)
	}
	return out
}
func (k keyListFolder) readFile(rel string) ([]byte, error) {
	if b, ok := k.json[rel]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s: %w", k.path(rel), os.ErrNotExist)
}
func (k keyListFolder) entries(rel string) []string {
	seen := map[string]bool{}
	prefix := rel + "/"
	if rel == "" {
		prefix = ""
	}
	var out []string
	for _, r := range k.all() {
		rest, ok := strings.CutPrefix(r, prefix)
		if !ok {
			continue
		}
		first, _, _ := strings.Cut(rest, "/")
		if !seen[first] {
			seen[first] = true
			out = append(out, first)
		}
	}
	slices.Sort(out)
	return out
}
func (k keyListFolder) open(rel string) (tensorFile, int64, error) {
	f, ok := k.files[rel]
	if !ok {
		return nil, 0, fmt.Errorf("%s: %w", k.path(rel), os.ErrNotExist)
	}
	return keyListFile(f), f.size, nil
}
