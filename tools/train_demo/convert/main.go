// Command convert turns the output of tools/train_demo/train.py (or any SD1.x
// diffusers folder) into one single-file checkpoint in the LDM layout that
// A1111 and ComfyUI use: model.diffusion_model.*, first_stage_model.*,
// cond_stage_model.transformer.text_model.*, every tensor F16.
//
// The renaming is darkroom's own (engine/weights: weights.OpenModel presents
// a diffusers folder under canonical LDM names and shapes), so the file it
// writes is exactly what the engine reads.
//
//	go run ./tools/train_demo/convert -in OUT_DIR -out OUT_DIR/darkroom-digits.safetensors
//	gzip -9 -c OUT_DIR/darkroom-digits.safetensors > engine/demo/darkroom-digits.safetensors.gz
//
// -in is either a diffusers folder (unet/, vae/, text_encoder/) or a folder
// holding train.py's flat files unet.safetensors, vae.safetensors and
// text_encoder.safetensors.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/darkroom-ai/darkroom/engine"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// flatFiles maps train.py's flat file names to their diffusers places.
var flatFiles = []struct{ flat, dir, file string }{
	{"unet.safetensors", "unet", "diffusion_pytorch_model.safetensors"},
	{"vae.safetensors", "vae", "diffusion_pytorch_model.safetensors"},
	{"text_encoder.safetensors", "text_encoder", "model.safetensors"},
}

func main() {
	in := flag.String("in", "", "diffusers folder, or a folder with train.py's unet/vae/text_encoder .safetensors")
	out := flag.String("out", "", "single-file checkpoint to write")
	title := flag.String("title", "darkroom-digits", "model title stored in the metadata")
	flag.Parse()
	if *in == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: convert -in DIR -out FILE.safetensors")
		os.Exit(2)
	}
	n, err := convert(*in, *out, *title)
	if err != nil {
		fmt.Fprintln(os.Stderr, "convert:", err)
		os.Exit(1)
	}
	st, err := os.Stat(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "convert:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s: %d tensors, %d bytes\n", *out, n, st.Size())
}

// convert writes the single file and returns its number of tensors.
func convert(in, out, title string) (int, error) {
	dir, cleanup, err := diffusersDir(in)
	if err != nil {
		return 0, err
	}
	defer cleanup()
	m, err := weights.OpenModel(dir)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", in, err)
	}
	defer m.Close()
	if d, err := engine.Detect(engine.ModelFiles{Model: dir}); err != nil || d.Family != "SD1.x" {
		return 0, fmt.Errorf("%s: not an SD1.x model (%v %v)", in, d, err)
	}
	tensors := make(map[string]safetensors.Tensor, len(m.Names()))
	for _, name := range m.Names() {
		info, _ := m.Info(name)
		data, err := toF16(m, name, info)
		if err != nil {
			return 0, err
		}
		tensors[name] = safetensors.Tensor{DType: tensor.F16, Shape: info.Shape, Data: data}
	}
	meta := map[string]string{
		"modelspec.title":        title,
		"modelspec.architecture": "stable-diffusion-v1",
		"darkroom.trained_by":    "tools/train_demo/train.py",
		"darkroom.dataset":       "UCI Optical Recognition of Handwritten Digits (scikit-learn load_digits), CC BY 4.0",
	}
	if err := safetensors.Write(out, tensors, meta); err != nil {
		return 0, err
	}
	return len(tensors), nil
}

// toF16 returns the tensor's bytes as little-endian F16, converting F32 and
// BF16 (rounding to nearest even).
func toF16(src weights.Source, name string, info weights.TensorInfo) ([]byte, error) {
	if info.DType == tensor.F16 {
		raw, err := src.Raw(name)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		return append([]byte(nil), raw...), nil
	}
	vals, err := src.Float32(name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	outBytes := make([]byte, 2*len(vals))
	for i, v := range vals {
		if math.Abs(float64(v)) > 65504 {
			return nil, fmt.Errorf("tensor %s: value %g does not fit in F16", name, v)
		}
		binary.LittleEndian.PutUint16(outBytes[2*i:], tensor.F32ToF16(v))
	}
	return outBytes, nil
}

// diffusersDir returns in itself when it is a diffusers folder, or a
// temporary diffusers folder of symbolic links to train.py's flat files.
func diffusersDir(in string) (string, func(), error) {
	if _, err := os.Stat(filepath.Join(in, flatFiles[0].flat)); errors.Is(err, os.ErrNotExist) {
		return in, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "darkroom-convert-")
	if err != nil {
		return "", nil, fmt.Errorf("temp folder: %w", err)
	}
	cleanup := func() { os.RemoveAll(tmp) }
	for _, f := range flatFiles {
		src, err := filepath.Abs(filepath.Join(in, f.flat))
		if err != nil {
			cleanup()
			return "", nil, fmt.Errorf("path %s: %w", f.flat, err)
		}
		if err := os.Mkdir(filepath.Join(tmp, f.dir), 0o755); err != nil {
			cleanup()
			return "", nil, fmt.Errorf("temp folder: %w", err)
		}
		if err := os.Symlink(src, filepath.Join(tmp, f.dir, f.file)); err != nil {
			cleanup()
			return "", nil, fmt.Errorf("link %s: %w", f.flat, err)
		}
	}
	return tmp, cleanup, nil
}
