package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// TestConvertMatchesReference converts the reference diffusers folder and
// compares every tensor (name, dtype, shape, bytes) with the single file
// that diffusers' own converter made from the same weights.
func TestConvertMatchesReference(t *testing.T) {
	const ref = "../../../testdata/reference/sd1-tiny-a"
	out := filepath.Join(t.TempDir(), "single.safetensors")
	n, err := convert(filepath.Join(ref, "diffusers"), out, "sd1-tiny-a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	want, err := safetensors.Open(filepath.Join(ref, "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	if n != len(got.Names()) {
		t.Errorf("convert reported %d tensors, file has %d", n, len(got.Names()))
	}
	for _, name := range want.Names() {
		if !slices.Contains(got.Names(), name) {
			t.Errorf("missing %s", name)
		}
	}
	for _, name := range got.Names() {
		gi, _ := got.Info(name)
		wi, ok := want.Info(name)
		if !ok {
			t.Errorf("extra tensor %s", name)
			continue
		}
		if gi.DType != wi.DType || !slices.Equal(gi.Shape, wi.Shape) {
			t.Errorf("%s: %v %v, want %v %v", name, gi.DType, gi.Shape, wi.DType, wi.Shape)
			continue
		}
		gb, _ := got.Raw(name)
		wb, _ := want.Raw(name)
		if !bytes.Equal(gb, wb) {
			t.Errorf("%s: bytes differ", name)
		}
	}
	if got.Metadata()["modelspec.title"] != "sd1-tiny-a" {
		t.Errorf("metadata %v", got.Metadata())
	}
}

// TestConvertFlatFiles reads train.py's flat layout (unet.safetensors,
// vae.safetensors, text_encoder.safetensors in one folder).
func TestConvertFlatFiles(t *testing.T) {
	const ref = "../../../testdata/reference/sd1-tiny-a/diffusers"
	dir := t.TempDir()
	for _, f := range flatFiles {
		data, err := os.ReadFile(filepath.Join(ref, f.dir, f.file))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.flat), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a, b := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors")
	if _, err := convert(dir, a, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := convert(ref, b, "x"); err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Error("flat files and diffusers folder convert differently")
	}
}

func TestToF16(t *testing.T) {
	tests := []struct {
		name    string
		dtype   tensor.DType
		vals    []float32
		want    []uint16
		wantErr bool
	}{
		{"f32", tensor.F32, []float32{1.5, -2, 65504, 0}, []uint16{0x3e00, 0xc000, 0x7bff, 0}, false},
		{"f32 ties round to even", tensor.F32, []float32{1 + 1.0/2048, 1 + 3.0/2048, 1 + 1.0/4096}, []uint16{0x3c00, 0x3c02, 0x3c00}, false},
		{"f32 overflow", tensor.F32, []float32{70000}, nil, true},
		{"f16 passes through", tensor.F16, []float32{0.25}, []uint16{0x3400}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var raw []byte
			for _, v := range tc.vals {
				if tc.dtype == tensor.F16 {
					raw = binary.LittleEndian.AppendUint16(raw, tensor.F32ToF16(v))
				} else {
					raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
				}
			}
			path := filepath.Join(t.TempDir(), "t.safetensors")
			err := safetensors.Write(path, map[string]safetensors.Tensor{"w": {DType: tc.dtype, Shape: tensor.Shape{len(tc.vals)}, Data: raw}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f, err := safetensors.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			info, _ := f.Info("w")
			got, err := toF16(f, "w", info)
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range tc.want {
				if g := binary.LittleEndian.Uint16(got[2*i:]); g != w {
					t.Errorf("value %d: %#04x, want %#04x", i, g, w)
				}
			}
		})
	}
}
