package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"math"
	"os"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
)

// TestComfyPrompts compares prompt handling with ComfyUI's own SD1
// tokenizer and weighting code (tools/reference/gen_comfy_prompt_fixtures.py):
// the ids and weights of every 77-token window exactly, and the weighted
// hidden states within 1e-4 relative.
func TestComfyPrompts(t *testing.T) {
	data, err := os.ReadFile(testref.Path("comfy_prompts.json"))
	if err != nil {
		t.Skipf("no ComfyUI prompt fixtures (%v)", err)
	}
	var prompts []string
	if err := json.Unmarshal(data, &prompts); err != nil {
		t.Fatal(err)
	}
	fx := testref.Tensors(t, "comfy_prompts.safetensors")
	m, err := Load(context.Background(), layouts[0].path, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		t.Run(fmt.Sprintf("p%d", i), func(t *testing.T) {
			tok := m.c.Text.(interface{ Encoder() *clip.PromptEncoder }).Encoder().Tok
			ids, weights := tok.WeightedChunks(p, tok.EOS())
			wantIDs, wantW := fx[fmt.Sprintf("p%d/ids", i)], fx[fmt.Sprintf("p%d/weights", i)]
			if len(ids)*77 != len(wantIDs) {
				t.Fatalf("%q: %d windows, ComfyUI %d", p, len(ids), len(wantIDs)/77)
			}
			for k := range ids {
				for j := range ids[k] {
					if float32(ids[k][j]) != wantIDs[k*77+j] {
						t.Fatalf("%q: window %d token %d = %d, ComfyUI %v", p, k, j, ids[k][j], wantIDs[k*77+j])
					}
					if math.Abs(weights[k][j]-float64(wantW[k*77+j])) > 1e-6 {
						t.Fatalf("%q: window %d token %d weight %v, ComfyUI %v", p, k, j, weights[k][j], wantW[k*77+j])
					}
				}
			}
			c, err := m.EncodePrompt(context.Background(), p, 1)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := c.Values(m.dev)
			check(t, "weighted hidden states", got, fx[fmt.Sprintf("p%d/embeds", i)], 1e-4)
		})
	}
}
