package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen checks that the parser never panics or hangs on arbitrary bytes,
// and that whatever it accepts can be read completely and survives a
// Write/Open round trip unchanged.
func FuzzOpen(f *testing.F) {
	for _, name := range []string{"randn.safetensors"} {
		b, err := os.ReadFile(filepath.Join(refDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, sampleTensors(), map[string]string{"k": "v"}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	for _, c := range badCases {
		f.Add(c.data)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := FromBytes(data)
		if err != nil {
			return
		}
		tensors := map[string]Tensor{}
		for _, name := range sf.Names() {
			info, ok := sf.Info(name)
			if !ok {
				t.Fatalf("Info(%q) missing for a listed name", name)
			}
			raw, err := sf.Raw(name)
			if err != nil {
				t.Fatalf("Raw(%q): %v", name, err)
			}
			if int64(len(raw)) != info.Size {
				t.Fatalf("Raw(%q) has %d bytes, Info says %d", name, len(raw), info.Size)
			}
			if info.Size <= 1<<20 { // bound the work per input
				v, err := sf.Float32(name)
				if err != nil {
					t.Fatalf("Float32(%q): %v", name, err)
				}
				if len(v) != info.Shape.NumElements() {
					t.Fatalf("Float32(%q) has %d values, want %d", name, len(v), info.Shape.NumElements())
				}
			}
			tensors[name] = Tensor{DType: info.DType, Shape: info.Shape, Data: raw}
		}
		var out bytes.Buffer
		if err := Encode(&out, tensors, sf.Metadata()); err != nil {
			t.Fatalf("Encode of an accepted file: %v", err)
		}
		back, err := FromBytes(out.Bytes())
		if err != nil {
			t.Fatalf("reopen written file: %v", err)
		}
		if len(back.Names()) != len(sf.Names()) {
			t.Fatalf("round trip has %d tensors, want %d", len(back.Names()), len(sf.Names()))
		}
		for _, name := range sf.Names() {
			a, _ := sf.Info(name)
			b, ok := back.Info(name)
			if !ok || a.DType != b.DType || !a.Shape.Equal(b.Shape) {
				t.Fatalf("round trip of %q: %+v vs %+v", name, a, b)
			}
			ra, _ := sf.Raw(name)
			rb, _ := back.Raw(name)
			if !bytes.Equal(ra, rb) {
				t.Fatalf("round trip of %q changed the bytes", name)
			}
		}
		if len(back.Metadata()) != len(sf.Metadata()) {
			t.Fatalf("round trip metadata %v, want %v", back.Metadata(), sf.Metadata())
		}
		for k, v := range sf.Metadata() {
			if back.Metadata()[k] != v {
				t.Fatalf("round trip metadata[%q] = %q, want %q", k, back.Metadata()[k], v)
			}
		}
	})
}
