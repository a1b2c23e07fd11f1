package weights

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
	"github.com/darkroom-ai/darkroom/engine/weights/pth"
)

// TensorFile is one file of tensors under its stored names: a
// *safetensors.File, a *pth.File, or a GGUF file (*gguf.File, under the
// names ComfyUI-GGUF's loader gives it).
type TensorFile interface {
	Source
	// Path is the file's path.
	Path() string
	// Metadata is the safetensors "__metadata__" (nil for a PyTorch
	// checkpoint; a GGUF file's scalar metadata as strings).
	Metadata() map[string]string
}

// pthExts are the extensions of PyTorch checkpoints.
var pthExts = []string{".pth", ".pt", ".ckpt", ".bin"}

// OpenFile opens one file of tensors with its stored names (no renaming,
// no family detection): a .safetensors file, or a PyTorch checkpoint
// (.pth, .pt, .ckpt, .bin) read by package pth, which refuses any pickle
// that could run code, or a .gguf file. A file of another extension is read by its first
// bytes (a zip archive or a pickle is a checkpoint). Upscaler models are
// opened this way.
func OpenFile(path string) (TensorFile, error) {
	if isPth(path) {
		return pth.Open(path)
	}
	return openTensorFile(path)
}

func isPth(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	for _, e := range pthExts {
		if ext == e {
			return true
		}
	}
	if ext == ".safetensors" || ext == ".gguf" {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 4)
	if n, _ := f.Read(head); n < 4 {
		return false
	}
	return bytes.HasPrefix(head, []byte("PK\x03\x04")) || head[0] == 0x80
}

// OpenUpscaler opens an upscaler model file (OpenFile: .safetensors or a
// PyTorch checkpoint) under the canonical upscaler names of
// keymap.Upscaler: any RRDBNet layout reads as basicsr's.
func OpenUpscaler(path string) (*Model, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	renames, err := keymap.Upscaler(f.Names())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v := newView()
	if err := v.add(f, renames); err != nil {
		v.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v.finish()
	var size int64
	if st, err := os.Stat(path); err == nil {
		size = st.Size()
	}
	return &Model{
		Source:   v,
		Path:     path,
		Layout:   SingleFile,
		Files:    []FileInfo{{Path: path, Size: size, Tensors: len(f.Names())}},
		Metadata: f.Metadata(),
	}, nil
}
