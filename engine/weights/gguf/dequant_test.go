package gguf

import (
	"compress/gzip"
	"io"
	"math"
	"os"
	"strings"
	"testing"
)

// openReference opens the reference vectors written by
// tools/reference/ggml_dequant (ggml's quantize_row_*_ref and
// dequantize_row_*).
func openReference(t testing.TB) *File {
	fh, err := os.Open("testdata/ggml_dequant.gguf.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	f, err := FromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestDequantizeMatchesGGML: every type's dequantisation equals ggml's
// dequantize_row_* bit for bit (float32 bits compared, NaN payloads and
// signed zeros included), on blocks ggml quantised from hard data and on
// blocks of random bytes.
func TestDequantizeMatchesGGML(t *testing.T) {
	f := openReference(t)
	seen := map[Type]bool{}
	for _, name := range f.Names() {
		base, ok := strings.CutSuffix(name, ".q")
		if !ok {
			continue
		}
		blocks, typ, err := f.Blocks(name)
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.Float32(base + ".want")
		if err != nil {
			t.Fatal(err)
		}
		seen[typ] = true
		t.Run(typ.String(), func(t *testing.T) {
			got := make([]float32, len(want))
			if err := Dequantize(typ, blocks, got); err != nil {
				t.Fatal(err)
			}
			bad := 0
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					if bad < 5 {
						t.Errorf("element %d (block %d): %v (%#08x), ggml %v (%#08x)", i, i/typ.BlockSize(), got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d elements differ from ggml", bad, len(got))
			}
			t.Logf("%d elements (%d blocks) bit-equal to ggml", len(got), len(blocks)/typ.TypeSize())
		})
	}
	for _, typ := range []Type{F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K} {
		if !seen[typ] {
			t.Errorf("no reference vectors for %s", typ)
		}
	}
}

// TestDequantizeParallel: the goroutine split gives the serial result.
func TestDequantizeParallel(t *testing.T) {
	f := openReference(t)
	blocks, _, _ := f.Blocks("q4_K.q")
	want, _ := f.Float32("q4_K.want")
	reps := parallelMin/len(want) + 3
	big := make([]byte, 0, reps*len(blocks))
	for range reps {
		big = append(big, blocks...)
	}
	got := make([]float32, reps*len(want))
	if err := Dequantize(Q4_K, big, got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i%len(want)]) {
			t.Fatalf("element %d differs", i)
		}
	}
	if err := Dequantize(Q4_K, big[:len(big)-1], got); err == nil {
		t.Error("a partial block was accepted")
	}
}

// TestQuantizeQ8_0MatchesGGML: QuantizeQ8_0 writes the blocks ggml's
// quantize_row_q8_0_ref wrote of the same rows, byte for byte (zeros,
// huge values with infinite half scales, tiny and subnormal scales, ...).
func TestQuantizeQ8_0MatchesGGML(t *testing.T) {
	f := openReference(t)
	src, err := f.Float32("q8_0.src")
	if err != nil {
		t.Fatal(err)
	}
	blocks, _, _ := f.Blocks("q8_0.q")
	want := blocks[:len(src)/32*34]
	got := make([]byte, len(want))
	if err := QuantizeQ8_0(src, got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("byte %d (block %d): %#02x, ggml %#02x", i, i/34, got[i], want[i])
		}
	}
	t.Logf("%d blocks byte-equal to ggml", len(got)/34)
}

// BenchmarkDequantize measures each type's dequantisation of 16 Mi values
// (the reference blocks repeated), over all threads.
func BenchmarkDequantize(b *testing.B) {
	f := openReference(b)
	for _, name := range []string{"q8_0", "q4_0", "q4_K", "q6_K"} {
		blocks, typ, _ := f.Blocks(name + ".q")
		const n = 1 << 24
		src := make([]byte, 0, n/typ.BlockSize()*typ.TypeSize())
		for len(src) < cap(src) {
			src = append(src, blocks[:min(len(blocks), cap(src)-len(src))]...)
		}
		dst := make([]float32, n)
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := Dequantize(typ, src, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
