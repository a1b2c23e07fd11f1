package engine

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
)

// sd3ComfyCase is one entry of testdata/reference/sd3-comfy/cases.json
// (tools/reference/gen_comfy_sd3_fixtures.py: ComfyUI's own SD3
// tokenizers, text encoders, prompt weighting, MMDiT, model sampling,
// Skip-Layer Guidance, KSampler and samplers on the tiny SD3.5 model "a").
type sd3ComfyCase struct {
	Name    string `json:"name"`
	Request struct {
		comfyCaseRequest
		Shift *float64 `json:"shift"`
		T5    bool     `json:"t5"`
		SLG   *struct {
			Layers string  `json:"layers"`
			Scale  float64 `json:"scale"`
			Start  float64 `json:"start"`
			End    float64 `json:"end"`
		} `json:"slg"`
	} `json:"request"`
	Sigmas []float64 `json:"sigmas"`
}

// TestSD3ComfyCases runs the tiny SD3.5 model "a" from Stability's single
// file (T5 given separately) under darkroom's default (ComfyUI) convention
// and compares with ComfyUI's own code: the text states (CLIP-L ‖ CLIP-G
// penultimate states of the 75-token windows, zero-padded to the joint
// width, then T5's at least 77 tokens; CLIP's alone without T5) and the
// pooled vector (CLIP-L unprojected ‖ CLIP-G projected) of prompt and
// negative prompt (1e-4), the sigmas of ModelSamplingDiscreteFlow
// (1e-6), every step's latent and the final one (1e-4), the image (≥ 45
// dB). Cases: a weighted prompt; a prompt of 10 CLIP windows and 376 T5
// tokens at 80×48; a long negative prompt (two batches); no T5; Skip-Layer
// Guidance on block 1 (SkipLayerGuidanceSD3); dpmpp_2m with sgm_uniform;
// euler_ancestral; shift 2 (ModelSamplingSD3); CFG 1 with two images.
func TestSD3ComfyCases(t *testing.T) {
	if !testref.Exists("sd3-comfy", "cases.json") || !testref.Exists("sd3", "cases.json") {
		t.Skip("no sd3-comfy fixtures")
	}
	b, err := os.ReadFile(testref.Path("sd3-comfy", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases  []sd3ComfyCase `json:"cases"`
		Failed []string       `json:"failed"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) == 0 || len(doc.Failed) > 0 {
		t.Fatalf("sd3-comfy/cases.json: %d cases, failed %v", len(doc.Cases), doc.Failed)
	}
	fx := testref.Tensors(t, filepath.Join("sd3-comfy", "cases.safetensors"))
	models := map[bool]*Model{}
	for _, c := range doc.Cases {
		r := c.Request
		if models[r.T5] == nil {
			models[r.T5] = sd3Single(t, !r.T5)
		}
		m := models[r.T5]
		t.Run(c.Name, func(t *testing.T) {
			req := r.request("sd3-tiny")
			if r.Shift != nil {
				req.Shift = *r.Shift
			}
			if s := r.SLG; s != nil {
				req.SLGLayers, req.SLGScale, req.SLGStart, req.SLGEnd = s.Layers, s.Scale, s.Start, s.End
			}
			runComfyCase(t, m, c.Name, req, c.Sigmas, fx)
		})
	}
}
