package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// Layout is how a model is stored on disk.
type Layout string

// Layouts understood by OpenModel.
const (
	// SingleFile is one .safetensors checkpoint in the LDM layout
	// (A1111 / ComfyUI / civitai).
	SingleFile Layout = "single-file"
	// Diffusers is a diffusers pipeline folder (model_index.json, unet/,
	// vae/, text_encoder/, tokenizer/ ...).
	Diffusers Layout = "diffusers"
)

// FileInfo describes one weight file of a model.
type FileInfo struct {
	Path      string
	Size      int64  // bytes on disk
	Component string // diffusers component folder ("unet", "vae", "text_encoder"); empty for a single file
	Tensors   int
}

// Model is an opened checkpoint. Its Source methods use canonical names
// (see package keymap) whatever the layout on disk.
type Model struct {
	Source
	// Path is the file or folder given to OpenModel.
	Path   string
	Layout Layout
	Files  []FileInfo
	// TokenizerDir is the diffusers tokenizer folder holding vocab.json and
	// merges.txt, or empty when the model has none.
	TokenizerDir string
	// Metadata is the safetensors "__metadata__" of a single file (nil for
	// diffusers folders).
	Metadata map[string]string
}

// ErrNotModel is matched (errors.Is) when a path is neither a safetensors
// file nor a diffusers folder.
var ErrNotModel = errors.New("not a model")

// notModelError formats "<path>: <msg>" and matches ErrNotModel.
type notModelError struct{ path, msg string }

func (e *notModelError) Error() string        { return e.path + ": " + e.msg }
func (e *notModelError) Is(target error) bool { return target == ErrNotModel }

// OpenModel opens a single .safetensors checkpoint or a diffusers folder and
// presents its tensors under canonical names. Every error starts with the
// path of the file or folder at fault.
func OpenModel(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !st.IsDir() {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx":
			return nil, &notModelError{path, "not a safetensors file (" + filepath.Ext(path) + " checkpoints are not supported; convert to .safetensors)"}
		}
		return openSingle(path)
	}
	return openDiffusers(path)
}

func openSingle(path string) (*Model, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return singleModel(f, path, st.Size())
}

// OpenBytes opens a single-file checkpoint held in memory (an embedded
// model); name stands in for the path in errors and in Files. data must not
// be modified while the model is open.
func OpenBytes(name string, data []byte) (*Model, error) {
	f, err := safetensors.FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return singleModel(f, name, int64(len(data)))
}

func singleModel(f *safetensors.File, path string, size int64) (*Model, error) {
	renames := make([]keymap.Rename, len(f.Names()))
	for i, name := range f.Names() {
		renames[i] = keymap.NormalizeLDM(name)
	}
	v := newView()
	if err := v.add(f, renames); err != nil {
		v.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v.finish()
	return &Model{
		Source:   v,
		Path:     path,
		Layout:   SingleFile,
		Files:    []FileInfo{{Path: path, Size: size, Tensors: len(f.Names())}},
		Metadata: f.Metadata(),
	}, nil
}

// component is one diffusers folder darkroom reads.
type component struct {
	dir     string // folder name
	base    string // weight file base name
	convert func([]string) ([]keymap.Rename, error)
}

var diffusersComponents = []component{
	{"unet", "diffusion_pytorch_model", keymap.DiffusersUNet},
	{"vae", "diffusion_pytorch_model", keymap.DiffusersVAE},
	{"text_encoder", "model", keymap.DiffusersCLIP},
}

// unsupportedFolders are diffusers components of families darkroom cannot
// load yet; finding one stops OpenModel with a clear message.
var unsupportedFolders = []struct{ dir, family string }{
	{"text_encoder_2", "SDXL"},
	{"transformer", "SD3 or Flux"},
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func openDiffusers(path string) (m *Model, err error) {
	found := isFile(filepath.Join(path, "model_index.json"))
	for _, c := range diffusersComponents {
		found = found || isDir(filepath.Join(path, c.dir))
	}
	if !found {
		return nil, &notModelError{path, "not a model: a folder needs model_index.json or unet/, vae/, text_encoder/ (diffusers layout)"}
	}
	for _, u := range unsupportedFolders {
		if isDir(filepath.Join(path, u.dir)) {
			return nil, fmt.Errorf("%s: looks like %s (found folder %q); only SD1.x diffusers folders are supported yet", path, u.family, u.dir+"/")
		}
	}

	v := newView()
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	m = &Model{Source: v, Path: path, Layout: Diffusers}
	for _, c := range diffusersComponents {
		dir := filepath.Join(path, c.dir)
		if !isDir(dir) {
			continue
		}
		files, index, err := componentFiles(dir, c.base)
		if err != nil {
			return nil, err
		}
		for _, fp := range files {
			f, err := safetensors.Open(fp)
			if err != nil {
				return nil, err
			}
			if err := index.check(f); err != nil {
				f.Close()
				return nil, err
			}
			renames, err := c.convert(f.Names())
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", fp, err)
			}
			if err := v.add(f, renames); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			st, err := os.Stat(fp)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", fp, err)
			}
			m.Files = append(m.Files, FileInfo{Path: fp, Size: st.Size(), Component: c.dir, Tensors: len(f.Names())})
		}
	}
	if len(m.Files) == 0 {
		return nil, &notModelError{path, "not a model: no unet/, vae/ or text_encoder/ weights found"}
	}
	v.finish()
	tok := filepath.Join(path, "tokenizer")
	if isFile(filepath.Join(tok, "vocab.json")) && isFile(filepath.Join(tok, "merges.txt")) {
		m.TokenizerDir = tok
	}
	return m, nil
}

// componentFiles returns the safetensors files of one diffusers component,
// preferring full-precision files to the fp16 variant and a single file to
// a sharded one.
func componentFiles(dir, base string) ([]string, *shardIndex, error) {
	type candidate struct {
		name    string
		indexed bool
	}
	for _, c := range []candidate{
		{base + ".safetensors", false},
		{base + ".safetensors.index.json", true},
		{base + ".fp16.safetensors", false},
		{base + ".safetensors.index.fp16.json", true},
		{base + ".fp16.safetensors.index.json", true},
	} {
		p := filepath.Join(dir, c.name)
		if !isFile(p) {
			continue
		}
		if !c.indexed {
			return []string{p}, nil, nil
		}
		return shardFiles(dir, p)
	}
	msg := fmt.Sprintf("no %s.safetensors (or .fp16 / sharded variant)", base)
	if bins, _ := filepath.Glob(filepath.Join(dir, "*.bin")); len(bins) > 0 {
		msg += "; PyTorch .bin files are not read, convert them to safetensors"
	}
	return nil, nil, &notModelError{dir, msg}
}

// shardIndex is a parsed sharded-checkpoint index (nil for a single file).
type shardIndex struct {
	path      string
	weightMap map[string]string // tensor name -> shard file name
}

// check verifies that every tensor the index places in f's file is there.
func (x *shardIndex) check(f *safetensors.File) error {
	if x == nil {
		return nil
	}
	base := filepath.Base(f.Path())
	var missing []string
	for name, file := range x.weightMap {
		if file != base {
			continue
		}
		if _, ok := f.Info(name); !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s: %d tensors listed for %s are missing from it, e.g. %q", x.path, len(missing), base, missing[0])
	}
	return nil
}

// shardFiles reads a sharded-checkpoint index and returns its files.
func shardFiles(dir, index string) ([]string, *shardIndex, error) {
	b, err := os.ReadFile(index)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", index, err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, nil, fmt.Errorf("%s: invalid index: %v", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, fmt.Errorf("%s: index has no weight_map entries", index)
	}
	seen := map[string]bool{}
	var files []string
	for tensorName, file := range idx.WeightMap {
		if file == "" || filepath.Base(file) != file || strings.HasPrefix(file, ".") {
			return nil, nil, fmt.Errorf("%s: tensor %q: shard %q is not a file name in the same folder", index, tensorName, file)
		}
		if !seen[file] {
			seen[file] = true
			files = append(files, filepath.Join(dir, file))
		}
	}
	sort.Strings(files)
	return files, &shardIndex{path: index, weightMap: idx.WeightMap}, nil
}
