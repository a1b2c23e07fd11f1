package weights

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// isGGUF reports whether path names a GGUF file (by its extension).
func isGGUF(path string) bool { return strings.EqualFold(filepath.Ext(path), ".gguf") }

// openTensorFile opens a file of tensors by its extension: a .gguf file
// (openGGUF) or a safetensors file.
func openTensorFile(path string) (tensorFile, error) {
	if isGGUF(path) {
		return openGGUF(path)
	}
	return safetensors.Open(path)
}

// openGGUF opens a GGUF file (package gguf) under the names
// ComfyUI-GGUF's loader gives its tensors (ggufNames). Its quantised
// tensors are dequantised to float32 when read (gguf.File.Raw): the
// weights are not kept quantised in memory yet.
func openGGUF(path string) (tensorFile, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	return ggufNames(f), nil
}

// ggufNames presents a GGUF file, or a key list of one, under the names
// ComfyUI-GGUF's loader gives it (gguf.LoaderNames: transformers' names
// for a llama.cpp T5 encoder), so that the key maps of the safetensors
// files apply.
func ggufNames(f tensorFile) tensorFile {
	m := gguf.LoaderNames(f.Metadata()["general.architecture"], f.Names())
	if m == nil {
		return f
	}
	r := &renamedFile{tensorFile: f, stored: make(map[string]string, len(m))}
	for from, to := range m {
		r.stored[to] = from
		r.names = append(r.names, to)
	}
	slices.Sort(r.names)
	return r
}

// renamedFile is a tensorFile under other names.
type renamedFile struct {
	tensorFile
	names  []string
	stored map[string]string // name -> stored name
}

func (r *renamedFile) Names() []string { return r.names }

func (r *renamedFile) Info(name string) (TensorInfo, bool) {
	s, ok := r.stored[name]
	if !ok {
		return TensorInfo{}, false
	}
	info, ok := r.tensorFile.Info(s)
	info.Name = name
	return info, ok
}

func (r *renamedFile) Raw(name string) ([]byte, error) {
	s, ok := r.stored[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	return r.tensorFile.Raw(s)
}

func (r *renamedFile) Float32(name string) ([]float32, error) {
	s, ok := r.stored[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q not found", name)
	}
	return r.tensorFile.Float32(s)
}

// QuantizedTensor is a tensor a GGUF file stores block-quantised: its
// blocks (aliasing the file mapping), ggml type and row length (ggml's
// ne[0], the elements of one stored row).
type QuantizedTensor struct {
	Blocks []byte
	Type   gguf.Type
	RowLen int64
}

// QuantizedBlocks returns the stored blocks of a canonical tensor that a
// GGUF file holds block-quantised (Q8_0, Q4_K, IQ2_XS, ...; check
// Type.CanDequantize before dequantising); ok is false for every other
// tensor (plain types, other files, key lists).
func (m *Model) QuantizedBlocks(name string) (QuantizedTensor, bool) {
	return quantizedBlocks(m.Source, name)
}

// quantizedBlocks is QuantizedBlocks for any Source: a GGUF file, a view
// or renaming of one, or a *Model (and what embeds one).
func quantizedBlocks(src Source, name string) (QuantizedTensor, bool) {
	switch s := src.(type) {
	case *view:
		if e, ok := s.entries[name]; ok {
			return quantizedBlocks(e.file, e.stored)
		}
	case *renamedFile:
		if stored, ok := s.stored[name]; ok {
			return quantizedBlocks(s.tensorFile, stored)
		}
	case *gguf.File:
		t, ok := s.Tensor(name)
		if !ok || !t.Type.Quantized() {
			return QuantizedTensor{}, false
		}
		b, _, err := s.Blocks(name)
		if err != nil {
			return QuantizedTensor{}, false
		}
		return QuantizedTensor{Blocks: b, Type: t.Type, RowLen: t.Dims[0]}, true
	case quantizedSource: // a *Model, or what embeds one
		return s.QuantizedBlocks(name)
	}
	return QuantizedTensor{}, false
}

// quantizedSource is a Source that can hand out a tensor's stored GGUF
// blocks.
type quantizedSource interface {
	QuantizedBlocks(name string) (QuantizedTensor, bool)
}

var _ TensorFile = (*gguf.File)(nil)
