package clip_test

import (
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// The prompt of case a_euler_karras, tokenized by HF CLIPTokenizer
// (testdata/reference/tokens.json).
var astronautIDs = []int{49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558}

func pad77(ids []int) []int {
	out := append([]int(nil), ids...)
	out = append(out, 49407)
	for len(out) < 77 {
		out = append(out, 49407)
	}
	return out
}

func TestTextModelMatchesTransformers(t *testing.T) {
	src, err := safetensors.Open(testref.Path("sd1-tiny-a", "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const prefix = "cond_stage_model.transformer.text_model."
	cfg, err := clip.ConfigFromWeights(src, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != 64 || cfg.Layers != 3 || cfg.Heads != 1 || cfg.MLP != 256 || cfg.Vocab != 49408 || cfg.Positions != 77 {
		t.Fatalf("config %v", cfg)
	}
	dev := cpu.New()
	b := weights.NewBuilder(src, dev)
	m := clip.Load(b.Sub("cond_stage_model.transformer.text_model"), cfg)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	if unused := b.Unused(prefix); len(unused) > 0 {
		t.Errorf("unused tensors: %v", unused)
	}
	out, err := m.Forward(dev, [][]int{pad77(astronautIDs)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := dev.Download(out)
	want := testref.Tensors(t, "a_euler_karras.safetensors")["prompt_embeds"]
	if e := testref.RelErr(got, want); e > 1e-4 {
		t.Fatalf("prompt embeddings: relative error %.3g > 1e-4", e)
	} else {
		t.Logf("prompt embeddings: relative error %.3g", e)
	}
}
