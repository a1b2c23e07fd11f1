package sdxl

import (
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
)

// TestVectorMatchesComfy builds the UNet's vector input (pooled bigG ⊕
// size / crop / target embeddings, or the refiner's aesthetic score) for
// the cases ComfyUI's model_base.SDXL.encode_adm and SDXLRefiner.encode_adm
// computed at the tiny embedder width (8) in
// testdata/reference/comfy_sdxl_cases.* (tools/reference/gen_comfy_sdxl_fixtures.py):
// ComfyUI's defaults (the latent size × 8, no crop), explicit sizes and
// crops, and the refiner's 6.0 / 2.5 scores; ≤ 1e-6 relative.
func TestVectorMatchesComfy(t *testing.T) {
	if !testref.Exists("comfy_sdxl_cases.safetensors") {
		t.Skip("no comfy_sdxl_cases.safetensors: run tools/reference/gen_comfy_sdxl_fixtures.py")
	}
	fx := testref.Tensors(t, "comfy_sdxl_cases.safetensors")
	dev := cpu.New()
	row := func(name string) *family.Cond {
		p := fx[name]
		if p == nil {
			t.Fatalf("fixture %s absent", name)
		}
		return &family.Cond{Pooled: dev.Upload(p, 1, len(p))}
	}
	for _, c := range []struct {
		name    string
		v       vector
		rows    []*family.Cond
		in      family.Inputs
		want    []string
		refiner bool
	}{
		{"adm_sdxl_96x64_default", vector{embed: 8, pooled: 32}, []*family.Cond{row("adm_sdxl_96x64_default/pooled")},
			family.Inputs{Width: 96, Height: 64}, []string{"adm_sdxl_96x64_default/y"}, false},
		{"adm_sdxl_explicit", vector{embed: 8, pooled: 32}, []*family.Cond{row("adm_sdxl_explicit/pooled")},
			family.Inputs{Width: 96, Height: 64, Size: family.SizeConditioning{OriginalWidth: 1024, OriginalHeight: 768,
				CropLeft: 16, CropTop: 8, TargetWidth: 512, TargetHeight: 384}}, []string{"adm_sdxl_explicit/y"}, false},
		{"adm_refiner_64", vector{embed: 8, pooled: 32, refiner: true},
			[]*family.Cond{row("adm_refiner_64/negative_pooled"), row("adm_refiner_64/pooled")},
			family.Inputs{Width: 64, Height: 64, NegativeRows: 1}, []string{"adm_refiner_64/negative_y_default_score", "adm_refiner_64/y"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			y, err := c.v.build(dev, c.rows, c.in)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := dev.Download(y)
			var want []float32
			for _, k := range c.want {
				want = append(want, fx[k]...)
			}
			if e := testref.RelErr(got, want); !(e <= 1e-6) {
				t.Errorf("vector: relative error %.3g > 1e-6", e)
			}
		})
	}
}
