package engine

import (
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// TensorInfo describes one stored tensor of an inspected model, under its
// canonical name.
type TensorInfo struct {
	Name  string
	DType string
	Shape []int
	// Size is the stored size in bytes.
	Size int64
}

// FileInfo describes one weight file of a model.
type FileInfo struct {
	Path string
	// Size is the file's size in bytes.
	Size int64
	// Component is the diffusers component folder or the separate file's
	// role ("unet", "vae", "text encoder"); empty for a single file.
	Component string
	Tensors   int
}

// Inspection is what `darkroom info` shows: a model's files, tensors,
// metadata and family, read without loading the weights.
type Inspection struct {
	Path   string
	Layout string
	// KeyList describes where a key list came from ("" for real weights).
	KeyList string
	Files   []FileInfo
	// Tensors are sorted by name.
	Tensors []TensorInfo
	// TokenizerDirs are a diffusers folder's tokenizer folders by name.
	TokenizerDirs map[string]string
	// Metadata is a single file's safetensors metadata.
	Metadata map[string]string
	// Detection is the family found; DetectErr says why none was (an
	// unknown or ambiguous model), nil otherwise.
	Detection Detection
	DetectErr error
	// Parts describe the components inferred from shapes, for families
	// that can tell them without loading.
	Parts []Part
}

// Inspect opens a model's files and describes them without loading the
// weights.
func Inspect(files ModelFiles) (*Inspection, error) {
	src, err := weights.OpenFiles(files.Model, files.VAE, files.TextEncoders)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return inspect(src), nil
}

func inspect(src *weights.Model) *Inspection {
	in := &Inspection{Path: src.Path, Layout: string(src.Layout), TokenizerDirs: src.TokenizerDirs, Metadata: src.Metadata}
	if src.KeyList != nil {
		in.KeyList = src.KeyList.Source
		if in.KeyList == "" {
			in.KeyList = "no source given"
		}
	}
	for _, f := range src.Files {
		in.Files = append(in.Files, FileInfo{Path: f.Path, Size: f.Size, Component: f.Component, Tensors: f.Tensors})
	}
	for _, name := range src.Names() {
		if info, ok := src.Info(name); ok {
			ti := TensorInfo{Name: name, DType: info.DType.String(), Shape: info.Shape.Clone(), Size: info.Size}
			if q, ok := src.QuantizedBlocks(name); ok {
				// A GGUF block type: its name and stored size, not the
				// float32 it loads as.
				ti.DType, ti.Size = q.Type.String(), int64(len(q.Blocks))
			}
			in.Tensors = append(in.Tensors, ti)
		}
	}
	s := family.NewSource(src)
	fam, det, err := family.Detect(s.Keys())
	in.Detection, in.DetectErr = det, err
	if err == nil {
		if d, ok := fam.(family.Describer); ok {
			in.Parts = d.Describe(s)
		}
	}
	return in
}
