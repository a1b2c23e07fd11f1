// Package weights reads checkpoint files (safetensors single files and
// diffusers folders), maps their tensor names to one canonical layout and
// detects the model family.
package weights

import "github.com/darkroom-ai/darkroom/engine/weights/safetensors"

// TensorInfo describes one stored tensor: Name, DType, Shape, Size (the
// stored byte length, Shape.NumElements() * DType.Size()) and File (the path
// of the file that holds it). It is defined in package safetensors, which
// cannot import this package, so that *safetensors.File is a Source.
type TensorInfo = safetensors.TensorInfo

// Source is a read-only set of named tensors: one safetensors file, or
// several files seen under one (possibly renamed) namespace.
type Source interface {
	// Names returns every tensor name, sorted.
	Names() []string
	// Info describes a tensor; ok is false when the name is absent.
	Info(name string) (info TensorInfo, ok bool)
	// Raw returns the stored little-endian bytes of a tensor. The slice may
	// alias a read-only memory mapping: never write to it, and do not keep it
	// past Close.
	Raw(name string) ([]byte, error)
	// Float32 returns a freshly allocated float32 copy of a tensor.
	Float32(name string) ([]float32, error)
	// Close releases the underlying files and mappings.
	Close() error
}
