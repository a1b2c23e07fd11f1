package gguf

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

// sample returns a small valid file: an F32 vector, an F16 matrix, a
// Q8_0 matrix (two blocks) with a ComfyUI orig_shape, and metadata of
// several types.
func sample(t testing.TB) []byte {
	f32 := make([]byte, 4*3)
	for i := range 3 {
		binary.LittleEndian.PutUint32(f32[4*i:], math.Float32bits(float32(i)+0.5))
	}
	f16 := make([]byte, 2*6)
	for i := range 6 {
		binary.LittleEndian.PutUint16(f16[2*i:], 0x3c00+uint16(i)) // 1 + i·2^-10
	}
	q8 := make([]byte, 2*34)
	binary.LittleEndian.PutUint16(q8[0:], 0x3800)  // d = 0.5
	binary.LittleEndian.PutUint16(q8[34:], 0xb800) // d = -0.5
	for j := range 32 {
		q8[2+j] = byte(int8(j - 16))
		q8[36+j] = byte(int8(j))
	}
	var buf bytes.Buffer
	err := Encode(&buf, []KeyValue{
		{"general.architecture", Value{TypeString, "flux"}},
		{"general.alignment", Value{TypeUint32, uint32(64)}},
		{"general.quantization_version", Value{TypeUint32, uint32(2)}},
		{"x.f", Value{TypeFloat32, float32(1.5)}},
		{"x.b", Value{TypeBool, true}},
		{OrigShapePrefix + "q", Value{TypeArray, Array{TypeInt32, []any{int32(2), int32(4), int32(8)}}}},
		{"x.tokens", Value{TypeArray, Array{TypeString, []any{"a", "bc"}}}},
	}, []WriteTensor{
		{"vec", F32, []int64{3}, f32},
		{"mat", F16, []int64{3, 2}, f16},
		{"q", Q8_0, []int64{64}, q8},
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestOpenSample(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.gguf")
	if err := os.WriteFile(path, sample(t), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := strings.Join(f.Names(), ","); got != "mat,q,vec" {
		t.Errorf("names %s", got)
	}
	if f.Architecture() != "flux" || f.Alignment() != 64 || f.Version() != 3 {
		t.Errorf("arch %q alignment %d version %d", f.Architecture(), f.Alignment(), f.Version())
	}
	if f.Metadata()["x.f"] != "1.5" || f.Metadata()["x.b"] != "true" {
		t.Errorf("metadata %v", f.Metadata())
	}
	info, _ := f.Info("mat")
	if info.DType != tensor.F16 || !info.Shape.Equal(tensor.Shape{2, 3}) || info.Size != 12 {
		t.Errorf("mat info %+v", info)
	}
	info, _ = f.Info("q")
	if info.DType != tensor.F32 || !info.Shape.Equal(tensor.Shape{2, 4, 8}) || info.Size != 256 {
		t.Errorf("q info %+v (orig_shape [2 4 8], dequantised to F32)", info)
	}
	q, err := f.Float32("q")
	if err != nil {
		t.Fatal(err)
	}
	for j := range 32 {
		if q[j] != float32(j-16)*0.5 || q[32+j] != float32(j)*-0.5 {
			t.Fatalf("q[%d] = %v, q[%d] = %v", j, q[j], 32+j, q[32+j])
		}
	}
	raw, err := f.Raw("q")
	if err != nil || len(raw) != 256 || math.Float32frombits(binary.LittleEndian.Uint32(raw[4:])) != -7.5 {
		t.Errorf("Raw(q): %d bytes, %v", len(raw), err)
	}
	blocks, typ, err := f.Blocks("q")
	if err != nil || typ != Q8_0 || len(blocks) != 68 {
		t.Errorf("Blocks(q): %d bytes of %v, %v", len(blocks), typ, err)
	}
	m, _ := f.Float32("mat")
	if m[5] != 1+5.0/1024 {
		t.Errorf("mat[5] = %v", m[5])
	}
}

// corrupt returns sample with the bytes at off replaced.
func corrupt(t testing.TB, off int, b ...byte) []byte {
	d := sample(t)
	copy(d[off:], b)
	return d
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// tensorRecord returns the offset of the record of the tensor named name.
func tensorRecord(t testing.TB, name string) int {
	d := sample(t)
	i := bytes.Index(d, append(u64(uint64(len(name))), name...))
	if i < 0 {
		t.Fatalf("no record for %q", name)
	}
	return i + 8 + len(name)
}

var badCases = func() []struct {
	name, want string
	data       []byte
} {
	t := &testing.T{}
	rec := tensorRecord(t, "q")   // n_dims, dims[1], type, offset
	mat := tensorRecord(t, "mat") // n_dims, dims[2], type, offset
	return []struct {
		name, want string
		data       []byte
	}{
		{"empty", "too short", nil},
		{"magic", `bad magic "GGUG"`, corrupt(t, 3, 'G')},
		{"version 1", "version 1 is not supported", corrupt(t, 4, 1, 0, 0, 0)},
		{"version 7", "unsupported GGUF version 7", corrupt(t, 4, 7, 0, 0, 0)},
		{"big endian", "big-endian", corrupt(t, 4, 0, 0, 0, 3)},
		{"tensor count", "tensor count", corrupt(t, 8, u64(1<<40)...)},
		{"kv count", "metadata count", corrupt(t, 16, u64(1<<40)...)},
		{"key length", "exceeds the", corrupt(t, 24, u64(1<<40)...)},
		{"truncated", "runs past the end", sample(t)[:rec+6]},
		{"dims", "has 9 dimensions", corrupt(t, rec, u32(9)...)},
		{"zero dims", "has 0 dimensions", corrupt(t, rec, u32(0)...)},
		{"block", "not a multiple of the Q8_0 block size 32", corrupt(t, rec+4, u64(48)...)},
		{"overflow", "overflow", corrupt(t, mat+4, append(u64(1<<40), u64(1<<40)...)...)},
		{"huge dim", "too large", corrupt(t, rec+4, u64(1<<63)...)},
		{"type", "unknown ggml type 99", corrupt(t, rec+12, u32(99)...)},
		{"unaligned", "not a multiple of the alignment 64", corrupt(t, rec+16, u64(8)...)},
		{"outside", "run past the end", corrupt(t, rec+16, u64(1<<20)...)},
		{"overlap", "overlap", corrupt(t, rec+16, u64(0)...)},
		{"orig shape", "holds 60 elements", corrupt(t, bytes.Index(sample(t), []byte{2, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0}), 2, 0, 0, 0, 3, 0, 0, 0, 10, 0, 0, 0)},
		{"alignment", "not a power of two", corrupt(t, bytes.Index(sample(t), []byte("general.alignment"))+len("general.alignment")+4, u32(48)...)},
		{"value type", "unknown value type", corrupt(t, bytes.Index(sample(t), []byte("x.f"))+3, u32(77)...)},
		{"bool", "neither 0 nor 1", corrupt(t, bytes.Index(sample(t), []byte("x.b"))+7, 2)},
		{"array length", "exceeds the 16777216 value limit", corrupt(t, bytes.Index(sample(t), []byte("x.tokens"))+len("x.tokens")+8, u64(1<<30)...)},
		{"utf8", "not valid UTF-8", corrupt(t, bytes.Index(sample(t), []byte("x.f")), 0xff)},
	}
}()

// TestBadFiles: every malformed header is refused with one line that
// names the file and the problem, and matches ErrFormat.
func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	for _, c := range badCases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".gguf")
			if err := os.WriteFile(path, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !errors.Is(err, ErrFormat) || !strings.HasPrefix(msg, path+": ") || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line starting with the path and containing %q", msg, c.want)
			}
		})
	}
}

func TestUnsupportedType(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, nil, []WriteTensor{{"w", IQ2_XXS, []int64{256}, make([]byte, 66)}}); err != nil {
		t.Fatal(err)
	}
	f, err := FromBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Raw("w"); err == nil || !strings.Contains(err.Error(), "IQ2_XXS cannot be dequantised") {
		t.Errorf("Raw of IQ2_XXS: %v", err)
	}
}
