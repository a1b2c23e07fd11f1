package tokenizer

import "testing"

// BenchmarkParseBundled measures the one-time cost of building the bundled
// vocabulary (gunzip, 48894 merges, maps), which NewCLIP pays once per
// process.
func BenchmarkParseBundled(b *testing.B) {
	for b.Loop() {
		if _, err := readBundledMerges(bundledVocab, clipMerges); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadFolder measures LoadCLIP on the diffusers tokenizer files.
func BenchmarkLoadFolder(b *testing.B) {
	for b.Loop() {
		mustLoadTiny(b)
	}
}
