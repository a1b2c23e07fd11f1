package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// rowsOf returns the rows of a model tensor [V, W] at ids.
func rowsOf(t *testing.T, m *Model, name string, ids []int) ([]float32, int) {
	t.Helper()
	table, err := m.src.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := m.src.Info(name)
	w := info.Shape[1]
	var out []float32
	for _, id := range ids {
		out = append(out, table[id*w:(id+1)*w]...)
	}
	return out, w
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// TestEmbeddingsEqualTheirWords makes textual-inversion embeddings whose
// vectors are the token embeddings of a word: "embedding:NAME" must then
// encode exactly as the word does (A1111's emb_params, SDXL's clip_l /
// clip_g pair), weighted too, in a window of its own beyond 75 tokens; an
// unknown name and an embedding of the wrong width are one-line errors.
func TestEmbeddingsEqualTheirWords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m, err := LoadFiles(ctx, ModelFiles{Model: testref.Path("sd1-tiny-a", "single.safetensors"), EmbeddingDirs: []string{dir}}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := m.c.Text.(interface {
		Tokenize(string) []int
	}).Tokenize("red fox")
	word := tok[1 : len(tok)-1]
	vec, w := rowsOf(t, m, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", word)
	err = safetensors.Write(filepath.Join(dir, "fox.safetensors"), map[string]safetensors.Tensor{
		"emb_params": {DType: tensor.F32, Shape: tensor.Shape{len(word), w}, Data: f32Bytes(vec)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "styles"), 0o755); err != nil {
		t.Fatal(err)
	}
	err = safetensors.Write(filepath.Join(dir, "styles", "wide.safetensors"), map[string]safetensors.Tensor{
		"clip_g": {DType: tensor.F32, Shape: tensor.Shape{1, w + 8}, Data: f32Bytes(make([]float32, w+8))},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a quiet harbor at dawn, ", 14)
	opt := family.PromptOptions{}
	for _, c := range [][2]string{
		{"a photo of a red fox", "a photo of a embedding:fox"},
		{"a photo of a (red fox:1.3), snow", "a photo of a (embedding:fox:1.3), snow"},
		{long + "red fox", long + "embedding:fox"},
		{"red fox, at night", "embedding:fox, at night"},
	} {
		want, err := m.encodePrompt(ctx, c[0], opt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.encodePrompt(ctx, c[1], opt)
		if err != nil {
			t.Fatalf("%q: %v", c[1], err)
		}
		a, _ := want.Values(m.dev)
		b, _ := got.Values(m.dev)
		if len(a) != len(b) || testref.RelErr(b, a) != 0 {
			t.Errorf("%q: differs from %q (relative error %g, %d vs %d values)", c[1], c[0], testref.RelErr(b, a), len(b), len(a))
		}
	}
	for _, c := range []struct{ prompt, want string }{
		{"a embedding:nope here", `embedding "nope": none of that name`},
		{"a embedding:styles/wide", fmt.Sprintf("its vectors are %d wide, this model's clip_l text encoder %d", w+8, w)},
		{"a embedding:../fox", "a name inside the embeddings folders"},
	} {
		_, err := m.encodePrompt(ctx, c.prompt, opt)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want one line with %q", c.prompt, err, c.want)
		}
	}
	// Without embeddings folders the syntax is text, as in ComfyUI without
	// an embedding directory.
	plain, err := LoadFiles(ctx, ModelFiles{Model: testref.Path("sd1-tiny-a", "single.safetensors")}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.encodePrompt(ctx, "a embedding:fox", opt); err != nil {
		t.Errorf("no embeddings folders: %v", err)
	}
}

// TestEmbeddingsSDXLPair: an SDXL embedding holds clip_l and clip_g
// vectors; each encoder takes its own, and the result equals the word.
func TestEmbeddingsSDXLPair(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m, err := LoadFiles(ctx, ModelFiles{Model: testref.Path("sdxl-tiny", "single.safetensors"), EmbeddingDirs: []string{dir}}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := useTinyTokenizer(t, m)
	ids := tok.Encode("red fox")
	word := ids[1 : len(ids)-1]
	files := map[string]safetensors.Tensor{}
	for slot, name := range map[string]string{
		"clip_l": "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
		"clip_g": "conditioner.embedders.1.model.token_embedding.weight",
	} {
		v, w := rowsOf(t, m, name, word)
		files[slot] = safetensors.Tensor{DType: tensor.F32, Shape: tensor.Shape{len(word), w}, Data: f32Bytes(v)}
	}
	if err := safetensors.Write(filepath.Join(dir, "fox.safetensors"), files, nil); err != nil {
		t.Fatal(err)
	}
	opt := family.PromptOptions{}
	want, err := m.encodePrompt(ctx, "a photo of a red fox", opt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.encodePrompt(ctx, "a photo of a embedding:fox", opt)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := want.Values(m.dev)
	b, _ := got.Values(m.dev)
	if testref.RelErr(b, a) != 0 {
		t.Errorf("context differs from the word's: relative error %g", testref.RelErr(b, a))
	}
	pa, _ := m.dev.Download(want.c.Pooled)
	pb, _ := m.dev.Download(got.c.Pooled)
	if testref.RelErr(pb, pa) != 0 {
		t.Errorf("pooled differs from the word's: relative error %g", testref.RelErr(pb, pa))
	}
}
