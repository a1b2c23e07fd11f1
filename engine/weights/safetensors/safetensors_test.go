package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

const refDir = "../../../testdata/reference"

func f32Bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func f16Bytes(v ...float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], tensor.F32ToF16(x))
	}
	return b
}

func sampleTensors() map[string]Tensor {
	return map[string]Tensor{
		"b.weight": {DType: tensor.F32, Shape: tensor.Shape{2, 3}, Data: f32Bytes(1, -2, 3.5, 0, 1e-3, -7)},
		"a.bias":   {DType: tensor.F16, Shape: tensor.Shape{3}, Data: f16Bytes(0.5, -1, 2)},
		"c.bf16":   {DType: tensor.BF16, Shape: tensor.Shape{2}, Data: []byte{0x80, 0x3f, 0x00, 0xc0}}, // 1, -2
		"d.f8":     {DType: tensor.F8E4M3, Shape: tensor.Shape{2}, Data: []byte{0x38, 0xb8}},           // 1, -1
		"e.i64":    {DType: tensor.I64, Shape: tensor.Shape{1}, Data: []byte{0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		"f.empty":  {DType: tensor.F32, Shape: tensor.Shape{0, 4}, Data: []byte{}},
		"g.scalar": {DType: tensor.U8, Shape: tensor.Shape{}, Data: []byte{200}},
	}
}

func TestWriteOpenRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	in := sampleTensors()
	meta := map[string]string{"format": "pt", "note": "ünïcode \"quoted\""}
	if err := Write(path, in, meta); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(raw); (8+n)%8 != 0 {
		t.Errorf("data area starts at %d, want a multiple of 8", 8+n)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantNames := []string{"a.bias", "b.weight", "c.bf16", "d.f8", "e.i64", "f.empty", "g.scalar"}
	if got := f.Names(); strings.Join(got, ",") != strings.Join(wantNames, ",") {
		t.Errorf("Names = %v, want %v", got, wantNames)
	}
	if got := f.Metadata(); len(got) != 2 || got["note"] != meta["note"] || got["format"] != "pt" {
		t.Errorf("Metadata = %v, want %v", got, meta)
	}
	for name, want := range in {
		t.Run(name, func(t *testing.T) {
			info, ok := f.Info(name)
			if !ok {
				t.Fatal("missing")
			}
			if info.DType != want.DType || !info.Shape.Equal(want.Shape) || info.Size != int64(len(want.Data)) || info.File != path || info.Name != name {
				t.Errorf("Info = %+v, want dtype %v shape %v size %d", info, want.DType, want.Shape, len(want.Data))
			}
			got, err := f.Raw(name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Data) {
				t.Errorf("Raw = %x, want %x", got, want.Data)
			}
		})
	}
	wantF := map[string][]float32{
		"b.weight": {1, -2, 3.5, 0, 1e-3, -7},
		"a.bias":   {0.5, -1, 2},
		"c.bf16":   {1, -2},
		"d.f8":     {1, -1},
		"e.i64":    {-3},
		"f.empty":  {},
		"g.scalar": {200},
	}
	for name, want := range wantF {
		got, err := f.Float32(name)
		if err != nil {
			t.Fatalf("Float32(%s): %v", name, err)
		}
		if len(got) != len(want) {
			t.Fatalf("Float32(%s) has %d values, want %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("Float32(%s)[%d] = %v, want %v", name, i, got[i], want[i])
			}
		}
	}
	if _, ok := f.Info("nope"); ok {
		t.Error("Info(nope) ok")
	}
	if _, err := f.Raw("nope"); err == nil || !strings.Contains(err.Error(), `"nope" not found`) {
		t.Errorf("Raw(nope) error = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Raw("a.bias"); err == nil {
		t.Error("Raw after Close succeeded")
	}
}

func TestInfoShapeIsACopy(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, sampleTensors(), nil); err != nil {
		t.Fatal(err)
	}
	f, err := FromBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Info("b.weight")
	info.Shape[0] = 99
	if again, _ := f.Info("b.weight"); again.Shape[0] != 2 {
		t.Errorf("Info shape aliases internal state: %v", again.Shape)
	}
	if f.Metadata() != nil {
		t.Errorf("Metadata = %v, want nil", f.Metadata())
	}
}

func TestOpenReference(t *testing.T) {
	f, err := Open(filepath.Join(refDir, "sd1-tiny-a", "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := len(f.Names()); n != 600 {
		t.Errorf("%d tensors, want 600", n)
	}
	// Values read with Python's struct module ('<e') from the same file.
	cases := []struct {
		name  string
		shape tensor.Shape
		first []float32
	}{
		{"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", tensor.Shape{77, 64},
			[]float32{-0.033599853515625, 0.026092529296875, -0.00734710693359375, -0.0183868408203125}},
		{"first_stage_model.decoder.conv_out.bias", tensor.Shape{3},
			[]float32{0.06854248046875, 0.135986328125, 0.00035881996154785156}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, ok := f.Info(c.name)
			if !ok || info.DType != tensor.F16 || !info.Shape.Equal(c.shape) {
				t.Fatalf("Info = %+v, %v; want F16 %v", info, ok, c.shape)
			}
			v, err := f.Float32(c.name)
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range c.first {
				if v[i] != w {
					t.Errorf("[%d] = %v, want %v", i, v[i], w)
				}
			}
		})
	}
}

// header builds a file from a raw JSON header and a data area of n bytes.
func header(js string, n int) []byte {
	b := make([]byte, 8, 8+len(js)+n)
	binary.LittleEndian.PutUint64(b, uint64(len(js)))
	b = append(b, js...)
	return append(b, make([]byte, n)...)
}

func withLen(hl uint64, rest []byte) []byte {
	b := make([]byte, 8, 8+len(rest))
	binary.LittleEndian.PutUint64(b, hl)
	return append(b, rest...)
}

var badCases = []struct {
	name string
	data []byte
	want string
}{
	{"empty", nil, "file of 0 bytes is too short"},
	{"short", []byte{1, 2, 3}, "file of 3 bytes is too short"},
	{"header 2^63", withLen(1<<63, []byte("{}")), "header length 9223372036854775808 exceeds file size 10"},
	{"header max uint64", withLen(math.MaxUint64, []byte("{}")), "header length 18446744073709551615 exceeds file size 10"},
	{"header past end", withLen(100, []byte(`{"a":1}`)), "header length 100 exceeds file size 15"},
	{"header too short", withLen(0, nil), "header length 0 is too short"},
	{"garbage", []byte("this is certainly not a safetensors file at all"), "exceeds file size"},
	{"invalid json", header(`{"a":{`, 0), "header is not valid JSON"},
	{"not object", header(`[1,2]`, 0), "header is not a JSON object"},
	{"trailing", header(`{} x`, 0), "trailing data"},
	{"invalid utf8", header("{\"\xff\":1}", 0), "not valid UTF-8"},
	{"entry not object", header(`{"x":5}`, 0), `tensor "x": entry is not a JSON object`},
	{"missing dtype", header(`{"x":{"shape":[1],"data_offsets":[0,4]}}`, 4), `tensor "x": missing dtype`},
	{"missing shape", header(`{"x":{"dtype":"F32","data_offsets":[0,4]}}`, 4), `tensor "x": missing shape`},
	{"missing offsets", header(`{"x":{"dtype":"F32","shape":[1]}}`, 4), `tensor "x": missing data_offsets`},
	{"unknown dtype", header(`{"x":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}`, 8), `tensor "x": unsupported dtype "C64"`},
	{"negative dim", header(`{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), `tensor "x": negative dimension -1`},
	{"float dim", header(`{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, 4), `tensor "x": shape: unexpected JSON number`},
	{"overflow dims", header(`{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, 4), `tensor "x": shape [4294967296 4294967296] is too large`},
	{"overflow bytes", header(`{"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}`, 4), `tensor "x": shape [4611686018427387904] of F32 is too large`},
	{"offsets past end", header(`{"x":{"dtype":"F32","shape":[24],"data_offsets":[0,96]}}`, 64), `tensor "x": data offsets [0 96] outside data area of 64 bytes`},
	{"offsets reversed", header(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}`, 8), `tensor "x": invalid data offsets [8 4]`},
	{"offsets negative", header(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, 8), `tensor "x": invalid data offsets [-4 0]`},
	{"offsets count", header(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8), `tensor "x": data_offsets has 3 values, want 2`},
	{"shape size mismatch", header(`{"x":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}}`, 16), `tensor "x": shape [2 3] of F32 needs 24 bytes, data offsets [0 16] hold 16`},
	{"overlap", header(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), `tensors "x" and "y" overlap`},
	{"duplicate", header(`{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), `duplicate tensor name "x"`},
	{"metadata not strings", header(`{"__metadata__":{"a":1}}`, 0), `__metadata__: `},
	{"duplicate metadata", header(`{"__metadata__":{},"__metadata__":{}}`, 0), `duplicate "__metadata__"`},
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	for _, c := range badCases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatalf("Open succeeded, want error containing %q", c.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path+": ") || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q, want one line %q + %q", msg, path+": ", c.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("errors.Is(err, ErrFormat) = false for %q", msg)
			}
			// The in-memory parser agrees.
			if _, err := FromBytes(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("FromBytes error = %v, want %q", err, c.want)
			}
		})
	}
}

func TestOpenNotAFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.safetensors")
	_, err := Open(missing)
	if err == nil || err.Error() != missing+": no such file or directory" {
		t.Errorf("missing file: error = %v", err)
	}
	if errors.Is(err, ErrFormat) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: want os.ErrNotExist, not ErrFormat")
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: error = %v", err)
	}
}

func TestEncodeRejects(t *testing.T) {
	cases := []struct {
		name    string
		tensors map[string]Tensor
		want    string
	}{
		{"size mismatch", map[string]Tensor{"x": {DType: tensor.F32, Shape: tensor.Shape{2}, Data: make([]byte, 4)}}, "needs 8 bytes, got 4"},
		{"invalid dtype", map[string]Tensor{"x": {Shape: tensor.Shape{1}, Data: make([]byte, 1)}}, "invalid dtype"},
		{"reserved name", map[string]Tensor{MetadataKey: {DType: tensor.U8, Shape: tensor.Shape{1}, Data: make([]byte, 1)}}, "reserved"},
		{"negative dim", map[string]Tensor{"x": {DType: tensor.U8, Shape: tensor.Shape{-1, -1}, Data: make([]byte, 1)}}, "negative dimension"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Encode(&bytes.Buffer{}, c.tensors, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v, want %q", err, c.want)
			}
		})
	}
}
