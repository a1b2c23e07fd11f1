package flux

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// TestQwenImageKeyLists reads the released Qwen-Image transformer's
// configuration from the real key lists (ComfyUI's file, the diffusers
// folder's transformer/) and loads them with no missing or unused tensor.
func TestQwenImageKeyLists(t *testing.T) {
	want := Config{Qwen: true, InChannels: 64, OutChannels: 64, Width: 3072, Heads: 24, HeadDim: 128, JointDim: 3584, TimeDim: 256,
		MLP: 12288, Layers: 60, AxesDim: QwenAxesDim}
	for _, tc := range []struct{ file, prefix string }{{"qwen-image.single", ""}, {"qwen-image.diffusers", "transformer."}} {
		t.Run(tc.file, func(t *testing.T) {
			kl, err := weights.ReadKeyList(filepath.Join("..", "..", "..", "testdata", "keyshapes", tc.file+".json.gz"))
			if err != nil {
				t.Fatal(err)
			}
			src, err := kl.Open()
			if err != nil {
				t.Fatal(err)
			}
			c, err := ConfigFromWeights(src, tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if c.String() != want.String() || !c.Qwen {
				t.Fatalf("config %v, want %v", c, want)
			}
			b := weights.NewBuilder(src, testref.ShapeDevice{})
			if _, err := Load(b.Sub(strings.TrimSuffix(tc.prefix, ".")), testref.ShapeDevice{}, c); err != nil {
				t.Fatal(err)
			}
			if u := b.Unused(tc.prefix); len(u) > 0 {
				t.Errorf("%d unused tensors, e.g. %v", len(u), u[0])
			}
		})
	}
}

// TestQwenIDs: image patches centred (negative above and left of the
// middle), text tokens on the diagonal after the larger half-size.
func TestQwenIDs(t *testing.T) {
	img, txt := QwenIDs(3, 4, 2)
	if img[0] != [3]float32{0, -2, -2} || img[11] != [3]float32{0, 0, 1} {
		t.Errorf("image ids %v", img)
	}
	if txt[0] != [3]float32{2, 2, 2} || txt[1] != [3]float32{3, 3, 3} {
		t.Errorf("text ids %v", txt)
	}
}
