package engine

import (
	"context"
	"slices"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
)

// TestPromptWeights checks ComfyUI's weighting rule on the encoded prompt:
// weighted positions are (z − z_empty)·w + z_empty, other positions are
// untouched, and a weight of 1 changes nothing.
func TestPromptWeights(t *testing.T) {
	ctx := context.Background()
	m, err := Load(ctx, layouts[0].path, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	values := func(text string) []float32 {
		c, err := m.EncodePrompt(ctx, text, 1)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := c.Values(m.dev)
		return v
	}
	plain := values("a red cat")
	if got := values("(a red cat:1.0)"); !slices.Equal(got, plain) {
		t.Fatalf("weight 1 changed the encoding (rel err %.3g)", testref.RelErr(got, plain))
	}
	empty := values("")
	got := values("a (red:1.5) cat")
	const width = 64
	want := slices.Clone(plain)
	for d := range width { // position 2 is "red" (after <|startoftext|> and "a")
		i := 2*width + d
		want[i] = (plain[i]-empty[i])*1.5 + empty[i]
	}
	if e := testref.RelErr(got, want); e > 1e-6 {
		t.Fatalf("weighted encoding: relative error %.3g", e)
	}
	if slices.Equal(got, plain) {
		t.Fatal("weight had no effect")
	}
}
