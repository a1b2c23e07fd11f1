package gguf

import (
	"bytes"
	"testing"
)

// FuzzOpen checks that the parser never panics or hangs on arbitrary
// bytes, that every tensor it accepts can be read (and dequantised) in
// full, and that an accepted file survives an Encode/FromBytes round trip
// with the same tensors, bytes and metadata.
func FuzzOpen(f *testing.F) {
	f.Add(sample(f))
	for _, c := range badCases {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		gf, err := FromBytes(data)
		if err != nil {
			return
		}
		var tensors []WriteTensor
		for _, name := range gf.Names() {
			info, ok := gf.Info(name)
			if !ok {
				t.Fatalf("Info(%q) missing for a listed name", name)
			}
			st, _ := gf.Tensor(name)
			blocks, typ, err := gf.Blocks(name)
			if err != nil || int64(len(blocks)) != st.Size || typ != st.Type {
				t.Fatalf("Blocks(%q): %d bytes of %v (%v), want %d of %v", name, len(blocks), typ, err, st.Size, st.Type)
			}
			if info.Shape.NumElements() != int(st.Elements()) {
				t.Fatalf("%q: shape %v for %d elements", name, info.Shape, st.Elements())
			}
			if info.Size <= 1<<20 && typ.CanDequantize() { // bound the work per input
				raw, err := gf.Raw(name)
				if err != nil || int64(len(raw)) != info.Size {
					t.Fatalf("Raw(%q): %d bytes (%v), Info says %d", name, len(raw), err, info.Size)
				}
				v, err := gf.Float32(name)
				if err != nil || int64(len(v)) != st.Elements() {
					t.Fatalf("Float32(%q): %d values (%v), want %d", name, len(v), err, st.Elements())
				}
			}
			tensors = append(tensors, WriteTensor{Name: name, Type: typ, Dims: st.Dims, Data: blocks})
		}
		var kv []KeyValue
		for _, k := range gf.Keys() {
			v, _ := gf.KV(k)
			kv = append(kv, KeyValue{k, v})
		}
		var out bytes.Buffer
		if err := Encode(&out, kv, tensors); err != nil {
			t.Fatalf("Encode of an accepted file: %v", err)
		}
		back, err := FromBytes(out.Bytes())
		if err != nil {
			t.Fatalf("reopen written file: %v", err)
		}
		if len(back.Names()) != len(gf.Names()) || len(back.Keys()) != len(gf.Keys()) {
			t.Fatalf("round trip has %d tensors and %d keys, want %d and %d", len(back.Names()), len(back.Keys()), len(gf.Names()), len(gf.Keys()))
		}
		for _, name := range gf.Names() {
			a, _ := gf.Info(name)
			b, ok := back.Info(name)
			if !ok || a.DType != b.DType || !a.Shape.Equal(b.Shape) {
				t.Fatalf("round trip of %q: %+v vs %+v", name, a, b)
			}
			ra, _, _ := gf.Blocks(name)
			rb, _, _ := back.Blocks(name)
			if !bytes.Equal(ra, rb) {
				t.Fatalf("round trip of %q changed the bytes", name)
			}
		}
		for k, v := range gf.Metadata() {
			if back.Metadata()[k] != v {
				t.Fatalf("round trip metadata[%q] = %q, want %q", k, back.Metadata()[k], v)
			}
		}
	})
}
