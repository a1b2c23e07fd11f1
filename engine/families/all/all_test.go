package all_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/flux1"
	"github.com/darkroom-ai/darkroom/engine/families/qwenimage"
	"github.com/darkroom-ai/darkroom/engine/families/sd1"
	"github.com/darkroom-ai/darkroom/engine/families/sd2"
	"github.com/darkroom-ai/darkroom/engine/families/sd3"
	"github.com/darkroom-ai/darkroom/engine/families/sdxl"
	"github.com/darkroom-ai/darkroom/engine/families/zimage"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"

	_ "github.com/darkroom-ai/darkroom/engine/families/all"
)

// want is what each real-size key list in testdata/keyshapes must be
// detected as (family and variant, as Detection.Name prints them), or ""
// for a component file that no family claims on its own (a text encoder,
// a bare VAE). Every list in the folder must have an entry.
var want = map[string]string{
	"sd15.single":                    "SD1.x",
	"sd15.diffusers":                 "SD1.x",
	"sd21-768v.single":               "SD2.x",
	"sd21-768v.diffusers":            "SD2.x (v-prediction)",
	"sdxl-base.single":               "SDXL (base)",
	"sdxl-base.diffusers":            "SDXL (base)",
	"sdxl-refiner.single":            "SDXL (refiner)",
	"sdxl-refiner.diffusers":         "SDXL (refiner)",
	"sdxl-unet.component":            "SDXL (base)",
	"sd35-large.single":              "SD3 (3.5 Large)",
	"sd35-large.diffusers":           "SD3 (3.5 Large)",
	"sd35-medium.single":             "SD3 (3.5 Medium)",
	"sd35-medium.diffusers":          "SD3 (3.5 Medium)",
	"sd3-medium-incl-clips.single":   "SD3 (3 Medium)",
	"flux1-dev.single":               "Flux.1 (dev)",
	"flux1-dev.diffusers":            "Flux.1 (dev)",
	"flux1-schnell.single":           "Flux.1 (schnell)",
	"flux1-schnell.diffusers":        "Flux.1 (schnell)",
	"flux1-dev-fp8.comfy":            "Flux.1 (dev)",
	"flux1-dev-fp8-e4m3fn.component": "Flux.1 (dev)",
	"flux2-dev.single":               "Flux.2",
	"flux2-dev.diffusers":            "Flux.2",
	"zimage-turbo.single":            "Z-Image",
	"zimage-turbo.diffusers":         "Z-Image",
	"qwen-image.single":              "Qwen-Image",
	"qwen-image.diffusers":           "Qwen-Image",
	"chroma.single":                  "Chroma",
	"chroma.diffusers":               "Chroma",
	"auraflow.diffusers":             "AuraFlow",
	"hidream-i1.single":              "HiDream",
	"hidream-i1.diffusers":           "HiDream",
	"wan21-14b.single":               "Wan (14B)",
	"wan21-14b.diffusers":            "Wan (14B)",
	"wan21-1.3b.single":              "Wan (1.3B)",
	"wan21-1.3b.diffusers":           "Wan (1.3B)",
	"ltxv.diffusers":                 "LTX-Video",
	"flux-ae.component":              "",
	"clip_l.component":               "",
	"clip_g.component":               "",
	"t5xxl.component":                "",
	"qwen3-4b.component":             "",
	"qwen25-vl-7b.component":         "",
}

func keyLists(t *testing.T) map[string]*weights.Model {
	t.Helper()
	files, err := filepath.Glob("../../../testdata/keyshapes/*.json.gz")
	if err != nil || len(files) == 0 {
		t.Fatalf("no key lists found (%v)", err)
	}
	out := map[string]*weights.Model{}
	for _, f := range files {
		kl, err := weights.ReadKeyList(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := kl.Open()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[kl.Name] = m
	}
	return out
}

// TestDetectRealKeyLists detects every real-size key list as its family,
// naming the deciding key; exactly one probe matches each (Detect refuses
// ambiguity), and every list is in the expectation table.
func TestDetectRealKeyLists(t *testing.T) {
	lists := keyLists(t)
	for name := range want {
		if lists[name] == nil {
			t.Errorf("key list %s is missing from testdata/keyshapes", name)
		}
	}
	for name, m := range lists {
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for key list %s", name)
			}
			k := family.NewKeys(m)
			// Count the matching probes directly: no two may claim a list.
			var hits []string
			for _, f := range family.Families() {
				if d, ok := f.Probe(k); ok {
					hits = append(hits, f.Name()+" "+d.String())
				}
			}
			if len(hits) > 1 {
				t.Fatalf("several probes claim it: %v", hits)
			}
			_, d, err := family.Detect(k)
			if w == "" {
				if !errors.Is(err, family.ErrUnknown) {
					t.Fatalf("detected %v (%v), want no family", d, err)
				}
				if !strings.Contains(err.Error(), "tensors, names starting") {
					t.Errorf("unknown-family message %q does not say what was found", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Name() != w {
				t.Errorf("detected %s, want %s", d, w)
			}
			if len(d.Evidence) == 0 || !strings.HasPrefix(d.Evidence[0], "key ") {
				t.Errorf("detection %s names no deciding key", d)
			}
			t.Logf("%s", d)
		})
	}
}

// shapeDevice records uploads without storing anything.
type shapeDevice struct{ backend.Device }

func (shapeDevice) UploadRaw(_ []byte, dt tensor.DType, shape ...int) (*backend.Tensor, error) {
	return &backend.Tensor{Shape: tensor.Shape(shape).Clone(), DType: dt}, nil
}

// Alloc, Concat and Free serve loaders that join stored tensors (BFL's
// fused Flux projections).
func (shapeDevice) Alloc(shape ...int) *backend.Tensor {
	return &backend.Tensor{Shape: tensor.Shape(shape).Clone(), DType: tensor.F32}
}
func (shapeDevice) Concat(*backend.Tensor, int, ...*backend.Tensor) {}
func (shapeDevice) Free(*backend.Tensor)                            {}

// transformerOnly are the real lists of a diffusion model without its VAE
// and text encoders: loading one alone must name the files it needs.
var transformerOnly = map[string]bool{"flux1-dev.single": true, "flux1-schnell.single": true, "sd35-large.single": true, "sd35-medium.single": true, "zimage-turbo.single": true, "qwen-image.single": true}

// latentFormats are the latent spaces of the runnable families: channels,
// scale and shift.
var latentFormats = map[string][3]float32{sd1.Name: {4, 0.18215, 0}, sd2.Name: {4, 0.18215, 0}, sdxl.Name: {4, 0.13025, 0}, flux1.Name: {16, 0.3611, 0.1159}, sd3.Name: {16, 1.5305, 0.0609}, zimage.Name: {16, 0.3611, 0.1159}, qwenimage.Name: {16, 1, 0}}

// TestLoadRealKeyLists loads the real lists of the runnable families
// (single files and diffusers folders) with no missing or unused tensor,
// and refuses every recognised family that is not runnable yet with one
// line naming it.
func TestLoadRealKeyLists(t *testing.T) {
	for name, m := range keyLists(t) {
		w := want[name]
		if w == "" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			s := family.NewSource(m)
			f, d, err := family.Detect(s.Keys())
			if err != nil {
				t.Fatal(err)
			}
			c, err := f.Load(context.Background(), s, family.Env{Device: shapeDevice{}, Detection: d})
			if d.Runnable && (strings.HasSuffix(name, ".component") || transformerOnly[name]) {
				// A diffusion-model file alone: the split-files tests load it
				// with its VAE and text encoders.
				if err == nil || strings.Contains(err.Error(), "\n") {
					t.Fatalf("a lone UNet file loaded, or failed with a multi-line error: %v", err)
				}
				return
			}
			if d.Runnable {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				lf := latentFormats[d.Family]
				if got := c.VAE.Format(); got.Channels != int(lf[0]) || got.Factor != 8 || got.Scale != lf[1] || got.Shift != lf[2] {
					t.Errorf("latent format %+v, want %g channels, factor 8, scale %g, shift %g", got, lf[0], lf[1], lf[2])
				}
				for _, p := range c.Parts {
					t.Logf("%s: %s", p.Name, p.Config)
				}
				return
			}
			if !errors.Is(err, family.ErrNotSupported) || !strings.HasPrefix(err.Error(), "recognised as "+d.Family) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("load error %v, want one line \"recognised as %s …; not supported yet\"", err, d.Family)
			}
		})
	}
}

// TestProbeSynthetic covers layouts no key list holds yet, with the
// distinguishing names only: HunyuanVideo's FLUX-like blocks (original
// and diffusers names) must not be taken for Flux.1.
func TestProbeSynthetic(t *testing.T) {
	for _, c := range []struct {
		name string
		keys []string
		want string
	}{
		{"hunyuanvideo native", []string{"double_blocks.0.img_mod.lin.weight", "single_blocks.0.linear1.weight", "guidance_in.in_layer.weight", "txt_in.individual_token_refiner.blocks.0.norm1.weight"}, "HunyuanVideo"},
		{"hunyuanvideo diffusers", []string{"transformer.transformer_blocks.0.norm1.linear.weight", "transformer.single_transformer_blocks.0.norm.linear.weight", "transformer.x_embedder.proj.weight", "transformer.context_embedder.token_refiner.refiner_blocks.0.norm1.weight"}, "HunyuanVideo"},
		{"flux native", []string{"double_blocks.0.img_mod.lin.weight", "single_blocks.0.linear1.weight"}, "Flux.1 (schnell)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]weights.KeyListFile{"x.safetensors": {Tensors: map[string][2]json.RawMessage{}}}
			for _, k := range c.keys {
				files["x.safetensors"].Tensors[k] = [2]json.RawMessage{json.RawMessage(`"BF16"`), json.RawMessage(`[2,2]`)}
			}
			m, err := (&weights.KeyList{Name: c.name, Layout: "single-file", Files: files}).Open()
			if err != nil {
				t.Fatal(err)
			}
			_, d, err := family.Detect(family.NewKeys(m))
			if err != nil || d.Name() != c.want {
				t.Errorf("detected %v (%v), want %s", d, err, c.want)
			}
		})
	}
}

// TestSD15UNetOnly: a real SD1.5 UNet without its VAE and text encoder (a
// ComfyUI diffusion_models/ file) is SD1.x by its 768-wide context, and
// loading it alone names what is missing and the flag that supplies it.
func TestSD15UNetOnly(t *testing.T) {
	kl, err := weights.ReadKeyList("../../../testdata/keyshapes/sd15.single.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range kl.Files {
		for name := range f.Tensors {
			if !strings.HasPrefix(name, "model.diffusion_model.") {
				delete(f.Tensors, name)
			}
		}
	}
	m, err := kl.Open()
	if err != nil {
		t.Fatal(err)
	}
	s := family.NewSource(m)
	f, d, err := family.Detect(s.Keys())
	if err != nil || d.Family != sd1.Name || !strings.Contains(d.String(), "(context 768)") {
		t.Fatalf("detected %v (%v)", d, err)
	}
	_, err = f.Load(context.Background(), s, family.Env{Device: shapeDevice{}, Detection: d})
	if err == nil || !strings.Contains(err.Error(), "no VAE weights") {
		t.Errorf("load: %v", err)
	}
}

// loadSplit opens a model's files as weights.OpenFiles does, detects its
// family and loads it on a device that records shapes only.
func loadSplit(t *testing.T, main, vae string, tes ...string) (*family.Components, error) {
	t.Helper()
	m, err := weights.OpenFiles(main, vae, tes)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := family.NewSource(m)
	f, d, err := family.Detect(s.Keys())
	if err != nil {
		t.Fatal(err)
	}
	return f.Load(context.Background(), s, family.Env{Device: shapeDevice{}, Detection: d})
}

// TestFluxSplitFiles loads BFL's transformer-only files (bf16 and fp8) with
// ae.safetensors, clip_l.safetensors and t5xxl_fp16.safetensors given as
// separate files, as ComfyUI users keep them, with no missing or unused
// tensor; alone, a transformer names the files it still needs in one line.
func TestFluxSplitFiles(t *testing.T) {
	const ks = "../../../testdata/keyshapes/"
	ae, clipL, t5 := ks+"flux-ae.component.json.gz", ks+"clip_l.component.json.gz", ks+"t5xxl.component.json.gz"
	for _, main := range []string{"flux1-dev.single", "flux1-schnell.single", "flux1-dev-fp8-e4m3fn.component"} {
		t.Run(main, func(t *testing.T) {
			load := func(vae string, tes ...string) (*family.Components, error) {
				return loadSplit(t, ks+main+".json.gz", vae, tes...)
			}
			c, err := load(ae, clipL, t5)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if got := c.VAE.Format(); got.Channels != 16 || got.Scale != 0.3611 || got.Shift != 0.1159 {
				t.Errorf("latent format %+v", got)
			}
			_, err = load("")
			want := "this Flux model has no VAE, CLIP-L, T5-XXL: also give --vae ae.safetensors --text-encoder clip_l.safetensors --text-encoder t5xxl_fp16.safetensors"
			if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("alone: %v, want one line starting %q", err, want)
			}
			if _, err = load(ae, clipL); err == nil || !strings.HasPrefix(err.Error(), "this Flux model has no T5-XXL: also give --text-encoder t5xxl") {
				t.Errorf("without T5: %v", err)
			}
		})
	}
}

// TestSD3SplitFiles loads Stability's SD3.5 Large and Medium files (the
// transformer and VAE, no text encoders) with clip_l, clip_g and t5xxl
// given as separate files, with no missing or unused tensor, and without
// the T5 (optional, as ComfyUI allows); without the CLIPs they name the
// files they need in one line.
func TestSD3SplitFiles(t *testing.T) {
	const ks = "../../../testdata/keyshapes/"
	clipL, clipG, t5 := ks+"clip_l.component.json.gz", ks+"clip_g.component.json.gz", ks+"t5xxl.component.json.gz"
	for _, main := range []string{"sd35-large.single", "sd35-medium.single"} {
		t.Run(main, func(t *testing.T) {
			for _, tes := range [][]string{{clipL, clipG, t5}, {clipL, clipG}} {
				c, err := loadSplit(t, ks+main+".json.gz", "", tes...)
				if err != nil {
					t.Fatalf("load with %d text encoders: %v", len(tes), err)
				}
				if got := c.VAE.Format(); got.Channels != 16 || got.Scale != 1.5305 || got.Shift != 0.0609 {
					t.Errorf("latent format %+v", got)
				}
			}
			_, err := loadSplit(t, ks+main+".json.gz", "", clipL)
			want := "this SD3 model has no CLIP-G: also give --text-encoder clip_g.safetensors"
			if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("without CLIP-G: %v, want one line starting %q", err, want)
			}
		})
	}
}

// TestZImageSplitFiles loads ComfyUI's z_image_turbo_bf16.safetensors with
// qwen_3_4b.safetensors and ae.safetensors given as separate files, with
// no missing or unused tensor, also as ComfyUI saves the model
// (model.diffusion_model. and its unused norm_final.weight); alone, or
// with a CLIP-L instead of Qwen3, it says what it needs in one line.
func TestZImageSplitFiles(t *testing.T) {
	const ks = "../../../testdata/keyshapes/"
	ae, qwen, clipL := ks+"flux-ae.component.json.gz", ks+"qwen3-4b.component.json.gz", ks+"clip_l.component.json.gz"
	main := ks + "zimage-turbo.single.json.gz"
	kl, err := weights.ReadKeyList(main)
	if err != nil {
		t.Fatal(err)
	}
	saved := weights.KeyList{Name: "zimage-comfy-saved", Family: kl.Family, Layout: kl.Layout, Files: map[string]weights.KeyListFile{}}
	for name, f := range kl.Files {
		g := weights.KeyListFile{Tensors: map[string][2]json.RawMessage{}}
		for n, v := range f.Tensors {
			g.Tensors["model.diffusion_model."+n] = v
		}
		g.Tensors["model.diffusion_model.norm_final.weight"] = [2]json.RawMessage{json.RawMessage(`"BF16"`), json.RawMessage(`[3840]`)}
		saved.Files[name] = g
	}
	b, err := json.Marshal(saved)
	if err != nil {
		t.Fatal(err)
	}
	savedPath := filepath.Join(t.TempDir(), "zimage-saved.json")
	if err := os.WriteFile(savedPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{main, savedPath} {
		c, err := loadSplit(t, m, ae, qwen)
		if err != nil {
			t.Fatalf("%s: load: %v", m, err)
		}
		if got := c.VAE.Format(); got.Channels != 16 || got.Scale != 0.3611 || got.Shift != 0.1159 {
			t.Errorf("latent format %+v", got)
		}
		if c.Defaults.Steps != 8 || c.Defaults.CFG != 1 {
			t.Errorf("defaults %+v, want Turbo's 8 steps at CFG 1", c.Defaults)
		}
	}
	for _, e := range []struct {
		vae  string
		tes  []string
		want string
	}{
		{"", nil, "this Z-Image model has no VAE, Qwen3 text encoder: also give --vae ae.safetensors --text-encoder qwen_3_4b.safetensors"},
		{ae, nil, "this Z-Image model has no Qwen3 text encoder: also give --text-encoder qwen_3_4b.safetensors"},
		{ae, []string{clipL}, "holds a CLIP text encoder"},
		{ae, []string{qwen, clipL}, "holds a CLIP text encoder"},
	} {
		_, err := loadSplit(t, main, e.vae, e.tes...)
		if err == nil || !strings.Contains(err.Error(), e.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("vae %q, text encoders %v: %v, want one line containing %q", e.vae, e.tes, err, e.want)
		}
	}
}

// TestQwenImageSplitFiles loads ComfyUI's qwen_image_bf16.safetensors with
// the Qwen2.5-VL-7B file and a separate Qwen-Image VAE file (the folder's
// vae/ weights, a causal 3-D VAE that --vae keeps under its own names),
// with no missing or unused tensor; without them it names both in one line.
func TestQwenImageSplitFiles(t *testing.T) {
	const ks = "../../../testdata/keyshapes/"
	kl, err := weights.ReadKeyList(ks + "qwen-image.diffusers.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	vae := weights.KeyListFile{Tensors: map[string][2]json.RawMessage{}}
	for name, f := range kl.Files {
		if strings.HasPrefix(name, "vae/") {
			vae = f
		}
	}
	if len(vae.Tensors) == 0 {
		t.Fatal("no vae/ file in the Qwen-Image folder's key list")
	}
	b, err := json.Marshal(weights.KeyList{Name: "qwen-image-vae", Family: "component", Layout: "component", Files: map[string]weights.KeyListFile{"qwen_image_vae.safetensors": vae}})
	if err != nil {
		t.Fatal(err)
	}
	vaePath := filepath.Join(t.TempDir(), "qwen_image_vae.json")
	if err := os.WriteFile(vaePath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	main, qwen := ks+"qwen-image.single.json.gz", ks+"qwen25-vl-7b.component.json.gz"
	c, err := loadSplit(t, main, vaePath, qwen)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got := c.VAE.Format(); got.Channels != 16 || got.Scale != 1 || got.Shift != 0 {
		t.Errorf("latent format %+v", got)
	}
	// The fp8 releases: qwen_image_fp8_e4m3fn.safetensors and the scaled
	// qwen_2.5_vl_7b_fp8_scaled.safetensors.
	blocks := func(n string) bool { return strings.HasPrefix(n, "transformer_blocks.") }
	layers := func(n string) bool { return strings.HasPrefix(n, "model.layers.") }
	fp8Main := fp8Variant(t, main, "qwen_image_fp8_e4m3fn.safetensors", false, blocks)
	fp8Text := fp8Variant(t, qwen, "qwen_2.5_vl_7b_fp8_scaled.safetensors", true, layers)
	if _, err := loadSplit(t, fp8Main, vaePath, fp8Text); err != nil {
		t.Fatalf("fp8 files: %v", err)
	}
	// Qwen-Image-Edit has the same tensors: told by its name, refused.
	raw, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	editPath := filepath.Join(t.TempDir(), "qwen_image_edit_2509_bf16.json.gz")
	if err := os.WriteFile(editPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSplit(t, editPath, vaePath, qwen); err == nil || !strings.Contains(err.Error(), "Qwen-Image-Edit") {
		t.Errorf("an Edit model: %v, want it refused by name", err)
	}
	_, err = loadSplit(t, main, "")
	want := "this Qwen-Image model has no VAE, Qwen2.5-VL text encoder: also give --vae qwen_image_vae.safetensors --text-encoder qwen_2.5_vl_7b.safetensors"
	if err == nil || err.Error() != want {
		t.Errorf("alone: %v, want %q", err, want)
	}
	if _, err := loadSplit(t, main, vaePath, ks+"qwen3-4b.component.json.gz"); err == nil || !strings.Contains(err.Error(), "Qwen-Image reads Qwen2.5-VL-7B") {
		t.Errorf("with Qwen3-4B: %v", err)
	}
}

// TestFluxBadComponents: a 4-channel (SD) VAE, a T5 of the wrong width and
// an OpenCLIP bigG beside a Flux transformer each get one line.
func TestFluxBadComponents(t *testing.T) {
	const ks = "../../../testdata/keyshapes/"
	ae, clipL, clipG, t5 := ks+"flux-ae.component.json.gz", ks+"clip_l.component.json.gz", ks+"clip_g.component.json.gz", ks+"t5xxl.component.json.gz"
	// An SD1.5 VAE alone, as a key list of one file.
	sd, err := weights.ReadKeyList(ks + "sd15.single.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	vae := weights.KeyListFile{Tensors: map[string][2]json.RawMessage{}}
	for _, f := range sd.Files {
		for n, v := range f.Tensors {
			if rest, ok := strings.CutPrefix(n, "first_stage_model."); ok {
				vae.Tensors[rest] = v
			}
		}
	}
	b, err := json.Marshal(weights.KeyList{Name: "sd-vae", Family: "component", Layout: "component", Files: map[string]weights.KeyListFile{"vae.safetensors": vae}})
	if err != nil {
		t.Fatal(err)
	}
	sdVAE := filepath.Join(t.TempDir(), "sd-vae.json")
	if err := os.WriteFile(sdVAE, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, vae string
		tes       []string
		want      string
	}{
		{"4-channel VAE", sdVAE, []string{clipL, t5}, "the VAE has 4 latent channels; Flux needs its own 16-channel autoencoder"},
		{"tiny T5", ae, []string{clipL, "../../../testdata/reference/t5-tiny/model.safetensors"}, "the T5 text encoder is 32 wide; this Flux transformer attends to 4096-wide text states"},
		{"bigG too", ae, []string{clipL, clipG, t5}, "holds an OpenCLIP text encoder"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadSplit(t, ks+"flux1-dev.single.json.gz", c.vae, c.tes...)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("load: %v, want one line containing %q", err, c.want)
			}
		})
	}
}

// fp8Variant writes a copy of a one-file key list whose matrices chosen by
// pick are float8 e4m3 — with ComfyUI's scaled-fp8 scale_weight beside
// each, and its scaled_fp8 marker, when scaled — as the fp8 releases store
// them, and returns its path.
func fp8Variant(t *testing.T, path, name string, scaled bool, pick func(name string) bool) string {
	t.Helper()
	kl, err := weights.ReadKeyList(path)
	if err != nil {
		t.Fatal(err)
	}
	out := weights.KeyList{Name: kl.Name + "-fp8", Family: kl.Family, Layout: kl.Layout, Files: map[string]weights.KeyListFile{}}
	for _, f := range kl.Files {
		g := weights.KeyListFile{Tensors: map[string][2]json.RawMessage{}}
		for n, v := range f.Tensors {
			var shape []int
			if err := json.Unmarshal(v[1], &shape); err != nil {
				t.Fatal(err)
			}
			if len(shape) == 2 && strings.HasSuffix(n, ".weight") && pick(n) {
				v[0] = json.RawMessage(`"F8_E4M3"`)
				if scaled {
					g.Tensors[strings.TrimSuffix(n, ".weight")+".scale_weight"] = [2]json.RawMessage{json.RawMessage(`"F32"`), json.RawMessage(`[]`)}
				}
			}
			g.Tensors[n] = v
		}
		if scaled {
			g.Tensors["scaled_fp8"] = [2]json.RawMessage{json.RawMessage(`"F8_E4M3"`), json.RawMessage(`[0]`)}
		}
		out.Files[name] = g
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), name+".json")
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}
