package engine

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/rng"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/lora"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// loraFixtures is testdata/reference/lora/cases.json, written by
// tools/reference/gen_lora_fixtures.py.
type loraFixtures struct {
	Seed     uint64   `json:"seed"`
	CFG      float64  `json:"cfg"`
	Width    int      `json:"width"`
	Height   int      `json:"height"`
	Steps    int      `json:"steps"`
	Prompt   string   `json:"prompt"`
	Negative string   `json:"negative"`
	Selected []string `json:"selected"`
	Cases    []struct {
		Name  string `json:"name"`
		LoRAs []struct {
			File         string  `json:"file"`
			Strength     float64 `json:"strength"`
			ClipStrength float64 `json:"clip_strength"`
		} `json:"loras"`
		Reference string `json:"reference"`
	} `json:"cases"`
}

func readLoRAFixtures(t *testing.T) (loraFixtures, map[string][]float32) {
	t.Helper()
	data, err := os.ReadFile(testref.Path("lora", "cases.json"))
	if err != nil {
		t.Skipf("no LoRA fixtures (%v): run tools/reference/gen_lora_fixtures.py", err)
	}
	var fx loraFixtures
	if err := json.Unmarshal(data, &fx); err != nil {
		t.Fatal(err)
	}
	return fx, testref.Tensors(t, filepath.Join("lora", "fused.safetensors"))
}

// canonicalOf maps the diffusers folder's "<component>/<stored name>" to
// the canonical names darkroom presents them under.
func canonicalOf(t *testing.T) map[string]string {
	t.Helper()
	m, err := weights.OpenModel(layouts[1].path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := map[string]string{}
	for _, n := range m.Names() {
		info, _ := m.Info(n)
		comp := filepath.Base(filepath.Dir(info.File))
		out[comp+"/"+m.StoredName(n)] = n
	}
	return out
}

// loraVariant is a LoRA file rewritten in another naming scheme users have.
type loraVariant struct {
	name string
	from string // the case whose file it renames
	// rename returns the new name of a key (every key is renamed).
	rename func(key string) string
}

// ldmModules maps the diffusers UNet module names of the tiny model to
// their LDM names by matching tensor values between its two layouts
// (independent of darkroom's key maps).
func ldmModules(t *testing.T) map[string]string {
	t.Helper()
	single, err := safetensors.Open(layouts[0].path)
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	unet, err := safetensors.Open(testref.Path("sd1-tiny-a", "diffusers", "unet", "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer unet.Close()
	byValue := map[string][]string{}
	for _, n := range single.Names() {
		if strings.HasPrefix(n, "model.diffusion_model.") && strings.HasSuffix(n, ".weight") {
			raw, _ := single.Raw(n)
			byValue[string(raw)] = append(byValue[string(raw)], n)
		}
	}
	out := map[string]string{}
	for _, n := range unet.Names() {
		raw, _ := unet.Raw(n)
		if c := byValue[string(raw)]; len(c) == 1 && strings.HasSuffix(n, ".weight") {
			out[strings.TrimSuffix(n, ".weight")] = strings.TrimSuffix(strings.TrimPrefix(c[0], "model.diffusion_model."), ".weight")
		}
	}
	return out
}

// kohyaSuffix splits a kohya key into module and suffix.
func kohyaSuffix(key string) (module, suffix string) {
	i := strings.IndexByte(key, '.')
	return key[:i], key[i:]
}

func loraVariants(t *testing.T) []loraVariant {
	ldm := ldmModules(t)
	under := map[string]string{} // kohya underscored diffusers module -> LDM module
	for d, l := range ldm {
		under["lora_unet_"+strings.ReplaceAll(d, ".", "_")] = l
	}
	toLDM := func(comfy bool) func(string) string {
		return func(key string) string {
			module, suffix := kohyaSuffix(key)
			l, ok := under[module]
			if !ok {
				if strings.HasPrefix(module, "lora_unet_") {
					t.Fatalf("no LDM name for %s", module)
				}
				return key // text encoder: kohya names
			}
			if comfy {
				return "diffusion_model." + l + suffix
			}
			return "lora_unet_" + strings.ReplaceAll(l, ".", "_") + suffix
		}
	}
	return []loraVariant{
		{"kohya_ldm", "kohya", toLDM(false)},
		{"comfy", "kohya", toLDM(true)},
		{"diffusers_old", "peft", func(key string) string {
			// diffusers' attention-processor and lora_linear_layer formats.
			key = strings.Replace(key, ".lora_A.weight", ".lora.down.weight", 1)
			key = strings.Replace(key, ".lora_B.weight", ".lora.up.weight", 1)
			if strings.HasPrefix(key, "text_encoder.") {
				return strings.Replace(strings.Replace(key, ".lora.down.", ".lora_linear_layer.down.", 1), ".lora.up.", ".lora_linear_layer.up.", 1)
			}
			for _, p := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
				for _, a := range []string{".attn1.", ".attn2."} {
					if i := strings.Index(key, a+p+".lora."); i >= 0 {
						lp := strings.TrimSuffix(p, ".0") + "_lora"
						return strings.TrimPrefix(key[:i]+a+"processor."+lp+key[i+len(a+p+".lora"):], "unet.")
					}
				}
			}
			return key
		}},
	}
}

// writeVariant renames every key of a fixture LoRA file into dir.
func writeVariant(t *testing.T, dir string, v loraVariant, from string) string {
	t.Helper()
	src, err := safetensors.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := map[string]safetensors.Tensor{}
	for _, n := range src.Names() {
		info, _ := src.Info(n)
		raw, _ := src.Raw(n)
		to := v.rename(n)
		if _, dup := out[to]; dup {
			t.Fatalf("%s: %s renamed twice", v.name, to)
		}
		out[to] = safetensors.Tensor{DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), raw...)}
	}
	p := filepath.Join(dir, v.name+".safetensors")
	if err := safetensors.Write(p, out, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// caseSpecs returns the LoRA specs of a case (files in testdata/reference/lora).
func caseSpecs(fx loraFixtures, name string) []lora.Spec {
	for _, c := range fx.Cases {
		if c.Name == name {
			var out []lora.Spec
			for _, l := range c.LoRAs {
				out = append(out, lora.Spec{Path: testref.Path("lora", l.File), Strength: l.Strength, ClipStrength: l.ClipStrength})
			}
			return out
		}
	}
	return nil
}

// TestLoRAFusedWeights merges every fixture LoRA (kohya, peft, stacked,
// LoHa, LoKr with .diff, LoCon with lora_mid; and the kohya and peft files
// renamed to kohya's LDM names, ComfyUI's diffusion_model.* names and
// diffusers' older processor / lora_linear_layer names) into the tiny SD1
// model, from both layouts, and compares the selected fused tensors with
// diffusers' fuse_lora (LyCORIS kinds: torch by LyCORIS's formulas):
// the weight and its change each within 1e-4 relative.
func TestLoRAFusedWeights(t *testing.T) {
	fx, ref := readLoRAFixtures(t)
	canon := canonicalOf(t)
	type run struct {
		name, refCase string
		specs         []lora.Spec
	}
	var runs []run
	for _, c := range fx.Cases {
		runs = append(runs, run{c.Name, c.Name, caseSpecs(fx, c.Name)})
	}
	dir := t.TempDir()
	for _, v := range loraVariants(t) {
		specs := caseSpecs(fx, v.from)
		if len(specs) != 1 {
			t.Fatalf("case %s: %d LoRAs", v.from, len(specs))
		}
		specs[0].Path = writeVariant(t, dir, v, specs[0].Path)
		runs = append(runs, run{v.name, v.from, specs})
	}
	for _, lay := range layouts {
		for _, r := range runs {
			t.Run(lay.name+"/"+r.name, func(t *testing.T) {
				m, err := weights.OpenModel(lay.path)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				src, err := lora.Apply(m.Source, "SD1.x", r.specs)
				if err != nil {
					t.Fatal(err)
				}
				for _, sel := range fx.Selected {
					name, ok := canon[sel]
					if !ok {
						t.Fatalf("no canonical name for %s", sel)
					}
					got, err := src.Float32(name)
					if err != nil {
						t.Fatal(err)
					}
					base, _ := m.Source.Float32(name)
					want := ref[r.refCase+"/"+sel]
					check(t, sel, got, want, 1e-4)
					check(t, sel+" change", sub(got, base), sub(want, base), 1e-4)
				}
			})
		}
	}
}

func sub(a, b []float32) []float32 {
	out := make([]float32, len(a))
	for i := range a {
		out[i] = a[i] - b[min(i, len(b)-1)]
	}
	return out
}

// TestLoRAStackDerived stacks the kohya and peft files at other strengths
// (0.6 and 0.5) and compares with what diffusers' single fusions imply:
// W + 0.6/s_k·(fused_k − W) + 0.5/s_p·(fused_p − W), per part (UNet, text
// encoder), within 1e-4 relative.
func TestLoRAStackDerived(t *testing.T) {
	fx, ref := readLoRAFixtures(t)
	canon := canonicalOf(t)
	kohya, peft := caseSpecs(fx, "kohya"), caseSpecs(fx, "peft")
	if len(kohya) != 1 || len(peft) != 1 {
		t.Skip("no kohya and peft cases")
	}
	m, err := weights.OpenModel(layouts[0].path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src, err := lora.Apply(m.Source, "SD1.x", []lora.Spec{
		{Path: kohya[0].Path, Strength: 0.6, ClipStrength: 0.6}, {Path: peft[0].Path, Strength: 0.5, ClipStrength: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range fx.Selected {
		got, err := src.Float32(canon[sel])
		if err != nil {
			t.Fatal(err)
		}
		base, _ := m.Source.Float32(canon[sel])
		sk, sp := kohya[0].Strength, peft[0].Strength
		if strings.HasPrefix(sel, "text_encoder/") {
			sk, sp = kohya[0].ClipStrength, peft[0].ClipStrength
		}
		k, p := ref["kohya/"+sel], ref["peft/"+sel]
		want := make([]float32, len(base))
		for i := range base {
			want[i] = base[i] + float32(0.6/sk)*(k[i]-base[i]) + float32(0.5/sp)*(p[i]-base[i])
		}
		check(t, sel, got, want, 1e-4)
		check(t, sel+" change", sub(got, base), sub(want, base), 1e-4)
	}
}

// TestLoRALatents runs the fixtures' 4-step Euler txt2img (diffusers'
// convention) with each case's LoRAs loaded through the engine and
// compares the final latent with diffusers' (1e-4 relative); the run
// without LoRAs is the control.
func TestLoRALatents(t *testing.T) {
	fx, ref := readLoRAFixtures(t)
	ctx := context.Background()
	sigmas := ref["sigmas"]
	cases := []string{"base"}
	for _, c := range fx.Cases {
		cases = append(cases, c.Name)
	}
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			files := ModelFiles{Model: layouts[0].path}
			for _, s := range caseSpecs(fx, name) {
				files.LoRAs = append(files.LoRAs, LoRA{Path: s.Path, Strength: s.Strength, ClipStrength: s.ClipStrength})
			}
			m, err := LoadFiles(ctx, files, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			lat := loraRun(t, m, fx, sigmas)
			check(t, "final latent", lat, ref[name+"/final_latent"], 1e-4)
			if name != "base" {
				if e := testref.RelErr(lat, ref["base/final_latent"]); e < 0.01 {
					t.Errorf("the LoRA moved the latent by only %.3g", e)
				}
			}
		})
	}
}

func loraRun(t *testing.T, m *Model, fx loraFixtures, sigmas []float32) []float32 {
	t.Helper()
	ctx := context.Background()
	cond, err := m.EncodePrompt(ctx, fx.Prompt, 1)
	if err != nil {
		t.Fatal(err)
	}
	uncond, err := m.EncodePrompt(ctx, fx.Negative, 1)
	if err != nil {
		t.Fatal(err)
	}
	shape := []int{1, 4, fx.Height / 8, fx.Width / 8}
	noise := rng.NewTorch(fx.Seed).Randn(4 * fx.Height / 8 * fx.Width / 8)
	lat, err := m.Sample(ctx, SampleParams{Cond: cond, Uncond: uncond, CFG: fx.CFG, Sampler: "euler",
		Sigmas: sigmas, Seed: fx.Seed, Noise: noise, Shape: shape, Convention: ConventionDiffusers}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return lat
}

// TestLoRAStrengthZero: a LoRA at strength 0 (both parts) leaves every
// tensor as stored and the run equal, bit for bit, to the run without it.
func TestLoRAStrengthZero(t *testing.T) {
	fx, ref := readLoRAFixtures(t)
	ctx := context.Background()
	spec := caseSpecs(fx, "kohya")[0]
	m, err := weights.OpenModel(layouts[0].path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src, err := lora.Apply(m.Source, "SD1.x", []lora.Spec{{Path: spec.Path}})
	if err != nil {
		t.Fatal(err)
	}
	if n := lora.Patched(src); n != 0 {
		t.Errorf("strength 0 patched %d tensors", n)
	}
	a, err := LoadFiles(ctx, ModelFiles{Model: layouts[0].path}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := LoadFiles(ctx, ModelFiles{Model: layouts[0].path, LoRAs: []LoRA{{Path: spec.Path}}}, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	la, lb := loraRun(t, a, fx, ref["sigmas"]), loraRun(t, b, fx, ref["sigmas"])
	for i := range la {
		if math.Float32bits(la[i]) != math.Float32bits(lb[i]) {
			t.Fatalf("latent %d: %v with the LoRA at 0, %v without", i, lb[i], la[i])
		}
	}
}

// TestLoRAEngine goes through the public surface: --lora values, <lora:>
// tags resolved in a LoRA folder, the model cache keyed by the LoRA set,
// and the errors of a missing file and malformed tags.
func TestLoRAEngine(t *testing.T) {
	fx, _ := readLoRAFixtures(t)
	spec := caseSpecs(fx, "kohya")[0]
	dir := t.TempDir()
	data, err := os.ReadFile(spec.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "loras"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "loras", "style.safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := Open(Options{Device: "cpu", ModelDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	req := DefaultRequest()
	req.Model, req.Width, req.Height, req.Steps, req.Seed = layouts[0].path, 64, 64, 2, 1
	req.Prompt = "a photograph <lora:style:0.8> of an astronaut"
	res, err := e.Generate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Request.Prompt; got != "a photograph  of an astronaut" {
		t.Errorf("prompt after the tag: %q", got)
	}
	if len(res.Request.LoRAs) != 1 || res.Request.LoRAs[0] != "style:0.8:0.8" {
		t.Errorf("request LoRAs %q", res.Request.LoRAs)
	}
	m1, _ := e.LoadRequest(ctx, res.Request)
	r2 := res.Request
	r2.LoRAs = []string{"style:0.5"}
	m2, err := e.LoadRequest(ctx, r2)
	if err != nil {
		t.Fatal(err)
	}
	if m1 == m2 {
		t.Error("another LoRA strength reused the cached model")
	}
	plain, _ := e.Load(ctx, layouts[0].path)
	if plain == m2 || len(plain.LoRAs()) != 0 {
		t.Error("the model without LoRAs is not its own cache entry")
	}
	// Model.Generate refuses LoRAs it was not loaded with.
	r3 := r2
	r3.LoRAs = []string{"style:0.9"}
	if _, err := m2.Generate(ctx, r3, nil); err == nil || !strings.Contains(err.Error(), "loaded with LoRAs") {
		t.Errorf("Model.Generate with other LoRAs: %v", err)
	}

	bad := map[string]string{
		"missing":      "nope:1",
		"not a number": "style:0.8x",
	}
	for what, v := range bad {
		r := req
		r.Prompt, r.LoRAs = "x", []string{v}
		_, err := e.Generate(ctx, r, nil)
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "lora") {
			t.Errorf("%s (%q): %v", what, v, err)
		}
	}
	for _, p := range []string{"<lora:style", "<lora::1>", "<lora:style:x>", "<lora:a:1:2:3>"} {
		_, _, err := ExtractLoRATags("a " + p + " b")
		if err == nil || !strings.Contains(err.Error(), "<lora:") {
			t.Errorf("tag %q: %v", p, err)
		}
	}
	got, tags, err := ExtractLoRATags("x <LoRA:a> <lora:b:0.5:0.25> <hypernet:c:1>")
	if err != nil || got != "x   <hypernet:c:1>" || len(tags) != 2 || tags[0] != (LoRA{Path: "a", Strength: 1, ClipStrength: 1}) ||
		tags[1] != (LoRA{Path: "b", Strength: 0.25, ClipStrength: 0.5}) {
		t.Errorf("ExtractLoRATags: %q %v %v", got, tags, err)
	}
	for spec, want := range map[string]LoRA{
		"a.safetensors":            {"a.safetensors", 1, 1},
		"a.safetensors:0.5":        {"a.safetensors", 0.5, 0.5},
		"a:0.5:0":                  {"a", 0.5, 0},
		`C:\loras\a.safetensors:2`: {`C:\loras\a.safetensors`, 2, 2},
	} {
		if got, err := ParseLoRA(spec); err != nil || got != want {
			t.Errorf("ParseLoRA(%q) = %v, %v; want %v", spec, got, err, want)
		}
	}
}
