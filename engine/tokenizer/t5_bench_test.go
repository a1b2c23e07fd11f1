package tokenizer

import (
	"strings"
	"testing"
)

// BenchmarkT5Encode tokenizes a prompt of about 500 tokens, padded to 512.
func BenchmarkT5Encode(b *testing.B) {
	tok, err := NewT5()
	if err != nil {
		b.Fatal(err)
	}
	text := strings.Repeat("a beautiful landscape painting of mountains at sunset, ", 45)
	b.ReportAllocs()
	for b.Loop() {
		tok.Encode(text, 512, true)
	}
}

// BenchmarkT5Parse parses the bundled tokenizer.json (what NewT5 does once
// per process).
func BenchmarkT5Parse(b *testing.B) {
	data := bundledT5JSON(b)
	for b.Loop() {
		if _, err := ParseT5(data); err != nil {
			b.Fatal(err)
		}
	}
}
