package lora

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

func f32(v []float32, shape ...int) safetensors.Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return safetensors.Tensor{DType: tensor.F32, Shape: shape, Data: b}
}

func randn(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

func writeFile(t *testing.T, tensors map[string]safetensors.Tensor) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.safetensors")
	if err := safetensors.Write(p, tensors, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func openTiny(t *testing.T, layout string) *weights.Model {
	t.Helper()
	p := testref.Path("sd1-tiny-a", layout)
	m, err := weights.OpenModel(p)
	if err != nil {
		t.Skipf("no tiny SD1 model: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestKohyaSynthetic applies a two-module kohya LoRA (one UNet attention
// projection by its diffusers name, one text-encoder projection) to the
// tiny SD1 model in both layouts and checks W + strength·alpha/rank·up·down,
// computed here, at the LDM names the layers have.
func TestKohyaSynthetic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const rank = 4
	upU, downU := randn(r, 32*rank, 0.1), randn(r, rank*32, 0.1)
	upT, downT := randn(r, 64*rank, 0.1), randn(r, rank*64, 0.1)
	path := writeFile(t, map[string]safetensors.Tensor{
		"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight":   f32(upU, 32, rank),
		"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": f32(downU, rank, 32),
		"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha":            f32([]float32{2}),
		"lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_up.weight":                   f32(upT, 64, rank),
		"lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_down.weight":                 f32(downT, rank, 64),
	})
	for _, layout := range []string{"single.safetensors", "diffusers"} {
		t.Run(layout, func(t *testing.T) {
			m := openTiny(t, layout)
			base := map[string][]float32{}
			unetW := "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
			teW := "cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.v_proj.weight"
			for _, n := range []string{unetW, teW} {
				v, err := m.Float32(n)
				if err != nil {
					t.Fatal(err)
				}
				base[n] = v
			}
			src, err := Apply(m.Source, "SD1.x", []Spec{{Path: path, Strength: 0.8, ClipStrength: 1.5}})
			if err != nil {
				t.Fatal(err)
			}
			check := func(name string, up, down []float32, out, in int, s float64) {
				got, err := src.Float32(name)
				if err != nil {
					t.Fatal(err)
				}
				want := append([]float32(nil), base[name]...)
				for o := range out {
					for i := range in {
						var acc float64
						for k := range rank {
							acc += float64(up[o*rank+k]) * float64(down[k*in+i])
						}
						want[o*in+i] += float32(s * acc)
					}
				}
				if e := testref.RelErr(got, want); e > 1e-6 {
					t.Errorf("%s: relative error %g", name, e)
				}
				if info, _ := src.Info(name); info.DType != tensor.F32 {
					t.Errorf("%s: dtype %v, want F32", name, info.DType)
				}
			}
			check(unetW, upU, downU, 32, 32, 0.8*2/rank)
			check(teW, upT, downT, 64, 64, 1.5)
			if n := Patched(src); n != 2 {
				t.Errorf("%d tensors patched, want 2", n)
			}
		})
	}
}

// TestBadFiles: files and keys that are no LoRA for the model fail with
// one line naming the file and what was wrong.
func TestBadFiles(t *testing.T) {
	m := openTiny(t, "single.safetensors")
	r := rand.New(rand.NewPCG(3, 4))
	cases := map[string]struct {
		tensors map[string]safetensors.Tensor
		want    string
	}{
		"checkpoint": {map[string]safetensors.Tensor{"model.diffusion_model.out.2.weight": f32(randn(r, 4, 1), 4)}, "not a LoRA file"},
		"targets nothing": {map[string]safetensors.Tensor{
			"lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight":   f32(randn(r, 8, 1), 2, 4),
			"lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight": f32(randn(r, 8, 1), 4, 2),
		}, `LoRA key "lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight" targets nothing in this SD1.x model`},
		"sdxl": {map[string]safetensors.Tensor{
			"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight":   f32(randn(r, 640*4, 1), 640, 4),
			"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": f32(randn(r, 4*2048, 1), 4, 2048),
			"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight":                 f32(randn(r, 4, 1), 1, 4),
			"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight":               f32(randn(r, 4, 1), 4, 1),
		}, "a LoRA for SDXL (its cross-attention takes 2048-wide text features), not for this SD1.x model (64-wide)"},
		"shape": {map[string]safetensors.Tensor{
			"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight":   f32(randn(r, 16*4, 1), 16, 4),
			"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": f32(randn(r, 4*32, 1), 4, 32),
		}, `changes a 16×32 weight, but "model.diffusion_model.input_blocks.1.1.proj_in.weight" is [32 32 1 1]`},
		"stray tensor": {map[string]safetensors.Tensor{
			"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight":   f32(randn(r, 32*4, 1), 32, 4),
			"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": f32(randn(r, 4*32, 1), 4, 32),
			"lora_unet_down_blocks_0_attentions_0_proj_in.scale":            f32(randn(r, 1, 1), 1),
		}, "tensors are no LoRA weight"},
		"incomplete": {map[string]safetensors.Tensor{
			"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": f32(randn(r, 32*4, 1), 32, 4),
		}, "is incomplete"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := writeFile(t, c.tensors)
			_, err := Apply(m.Source, "SD1.x", []Spec{{Path: p, Strength: 1, ClipStrength: 1}})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || !strings.HasPrefix(msg, p+": ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line starting with the file and containing %q", msg, c.want)
			}
		})
	}
	_, err := Apply(m.Source, "SD1.x", []Spec{{Path: "/nonexistent/x.safetensors", Strength: 1}})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/x.safetensors") {
		t.Errorf("missing file: %v", err)
	}
}

// TestSDXLSynthetic applies a LoRA in mixed namings to the tiny SDXL
// checkpoint: kohya LDM and diffusers UNet names, te1 (CLIP-L) and te2
// (bigG, stored in OpenCLIP's layout: k_proj is rows 64..127 of the fused
// in_proj_weight) and peft text_encoder_2 names; each target is checked
// against W + strength·scale·up·down computed here.
func TestSDXLSynthetic(t *testing.T) {
	m, err := weights.OpenModel(testref.Path("sdxl-tiny", "single.safetensors"))
	if err != nil {
		t.Skipf("no tiny SDXL model: %v", err)
	}
	defer m.Close()
	r := rand.New(rand.NewPCG(5, 6))
	const rank = 4
	type mod struct {
		key, up, down, target string // key prefix; suffixes for up/down; canonical target
		out, in, row0         int
		clip                  bool
	}
	mods := []mod{
		{"lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", ".lora_up.weight", ".lora_down.weight", "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", 64, 128, 0, false},
		{"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_v", ".lora_up.weight", ".lora_down.weight", "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_v.weight", 64, 128, 0, false},
		{"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", ".lora_up.weight", ".lora_down.weight", "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", 64, 64, 0, true},
		{"lora_te2_text_model_encoder_layers_0_self_attn_k_proj", ".lora_up.weight", ".lora_down.weight", "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", 64, 64, 64, true},
		{"text_encoder_2.text_model.encoder.layers.0.mlp.fc1", ".lora_B.weight", ".lora_A.weight", "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight", 128, 64, 0, true},
	}
	tensors := map[string]safetensors.Tensor{}
	ups, downs := map[string][]float32{}, map[string][]float32{}
	for _, md := range mods {
		ups[md.key], downs[md.key] = randn(r, md.out*rank, 0.1), randn(r, rank*md.in, 0.1)
		tensors[md.key+md.up] = f32(ups[md.key], md.out, rank)
		tensors[md.key+md.down] = f32(downs[md.key], rank, md.in)
	}
	path := writeFile(t, tensors)
	src, err := Apply(m.Source, "SDXL", []Spec{{Path: path, Strength: 0.7, ClipStrength: 1.3}})
	if err != nil {
		t.Fatal(err)
	}
	for _, md := range mods {
		base, _ := m.Float32(md.target)
		got, err := src.Float32(md.target)
		if err != nil {
			t.Fatal(err)
		}
		s := 0.7
		if md.clip {
			s = 1.3
		}
		want := append([]float32(nil), base...)
		for o := range md.out {
			for i := range md.in {
				var acc float64
				for k := range rank {
					acc += float64(ups[md.key][o*rank+k]) * float64(downs[md.key][k*md.in+i])
				}
				want[(md.row0+o)*md.in+i] += float32(s * acc)
			}
		}
		if e := testref.RelErr(got, want); e > 1e-6 {
			t.Errorf("%s -> %s: relative error %g", md.key, md.target, e)
		}
	}
	if n := Patched(src); n != len(mods) {
		t.Errorf("%d tensors patched, want %d", n, len(mods))
	}
}

// TestReleasedNames: for the released SD1.5, SD2.1, SDXL base and refiner
// name sets (testdata/keyshapes), every Linear and convolution weight of
// the UNet and the text encoders is reachable under its diffusers/peft
// LoRA names ("unet.…", "text_encoder.…", "text_encoder_2.…") and kohya's
// ("lora_unet_…", "lora_te1_…"), in the diffusers layout and in the
// single-file layout alike (bigG's q/k/v there as rows of in_proj).
func TestReleasedNames(t *testing.T) {
	const keyshapes = "../../../testdata/keyshapes/"
	for _, name := range []string{"sd15", "sd21-768v", "sdxl-base", "sdxl-refiner"} {
		t.Run(name, func(t *testing.T) {
			diff, err := weights.OpenModel(keyshapes + name + ".diffusers.json.gz")
			if err != nil {
				t.Skip(err)
			}
			defer diff.Close()
			single, err := weights.OpenModel(keyshapes + name + ".single.json.gz")
			if err != nil {
				t.Skip(err)
			}
			defer single.Close()
			dx, sx := newIndex(diff.Source), newIndex(single.Source)
			var aliases []string
			for _, n := range diff.Names() {
				info, _ := diff.Info(n)
				comp := filepath.Base(filepath.Dir(info.File))
				stored := diff.StoredName(n)
				module, ok := strings.CutSuffix(stored, ".weight")
				if !ok || len(info.Shape) < 2 || strings.Contains(stored, "embedding") || strings.HasSuffix(stored, "text_projection.weight") {
					continue
				}
				switch comp {
				case "unet":
					aliases = append(aliases, "unet."+module, "lora_unet_"+underscored(module))
				case "text_encoder", "text_encoder_2":
					if !strings.HasPrefix(module, "text_model.") {
						module = "text_model." + module
					}
					kohya := "lora_te1_"
					if comp == "text_encoder_2" {
						kohya = "lora_te2_"
					}
					aliases = append(aliases, comp+"."+module, kohya+underscored(module))
				default:
					continue
				}
				if tg, ok := dx.targets[aliases[len(aliases)-2]]; !ok || (tg[0].weight != n && tg[0].rows == 0) {
					t.Errorf("diffusers %s/%s -> %v, want %s", comp, stored, tg, n)
				}
			}
			missing := 0
			for _, a := range aliases {
				if _, ok := dx.targets[a]; !ok {
					missing++
					if missing < 5 {
						t.Errorf("diffusers layout: no target for %q", a)
					}
				}
				if _, ok := sx.targets[a]; !ok {
					missing++
					if missing < 5 {
						t.Errorf("single file: no target for %q", a)
					}
				}
			}
			if missing > 0 || len(aliases) < 100 {
				t.Errorf("%d of %d aliases unresolved", missing, len(aliases))
			}
		})
	}
}

// BenchmarkDeltaSDXLFeedForward is ΔW of a rank-32 LoRA on SDXL's largest
// Linear (ff.net.0.proj, 10240×1280): 0.42 GMAC.
func BenchmarkDeltaSDXLFeedForward(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	up, down := randn(r, 10240*32, 0.1), randn(r, 32*1280, 0.1)
	b.ResetTimer()
	for range b.N {
		_ = matmul(up, down, 10240, 32, 1280)
	}
}

// TestLyCORISFormulas checks LoKr (whole w1, factorised w2, and a Tucker
// w2 on a kernel) and LoHa with Tucker cores against the LyCORIS
// definitions written out element by element here.
func TestLyCORISFormulas(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const a, b, o2, i2, rank, k = 2, 3, 4, 5, 3, 3
	w1 := randn(r, a*b, 1)
	w2a, w2b := randn(r, o2*rank, 1), randn(r, rank*i2, 1)
	path := writeFile(t, map[string]safetensors.Tensor{
		"m.lokr_w1": f32(w1, a, b), "m.lokr_w2_a": f32(w2a, o2, rank), "m.lokr_w2_b": f32(w2b, rank, i2), "m.alpha": f32([]float32{1.5}),
	})
	f, err := openFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.src.Close()
	d, err := f.compute(f.adapters[0], a*o2*b*i2)
	if err != nil {
		t.Fatal(err)
	}
	if d.scale != 1.5/rank {
		t.Errorf("LoKr scale %g, want alpha/rank %g", d.scale, 1.5/rank)
	}
	want := make([]float32, a*o2*b*i2)
	for x := range a {
		for y := range o2 {
			for u := range b {
				for v := range i2 {
					var w2 float64
					for q := range rank {
						w2 += float64(w2a[y*rank+q]) * float64(w2b[q*i2+v])
					}
					want[(x*o2+y)*(b*i2)+u*i2+v] = float32(float64(w1[x*b+u]) * w2)
				}
			}
		}
	}
	if e := testref.RelErr(d.w, want); e > 1e-6 {
		t.Errorf("LoKr ΔW: relative error %g", e)
	}

	// LoHa with Tucker cores on a k×k kernel: each factor is
	// Σ_{i,j} t[i,j,h,w]·w_b[j,c]·w_a[i,o].
	const out, in = 4, 5
	fac := func() (ta, wa, wb []float32) {
		return randn(r, rank*rank*k*k, 1), randn(r, rank*out, 1), randn(r, rank*in, 1)
	}
	t1, w1a, w1b := fac()
	t2, w2a2, w2b2 := fac()
	path = writeFile(t, map[string]safetensors.Tensor{
		"m.hada_t1": f32(t1, rank, rank, k, k), "m.hada_w1_a": f32(w1a, rank, out), "m.hada_w1_b": f32(w1b, rank, in),
		"m.hada_t2": f32(t2, rank, rank, k, k), "m.hada_w2_a": f32(w2a2, rank, out), "m.hada_w2_b": f32(w2b2, rank, in),
	})
	f2, err := openFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.src.Close()
	d, err = f2.compute(f2.adapters[0], out*in*k*k)
	if err != nil {
		t.Fatal(err)
	}
	rebuild := func(tt, wa, wb []float32, o, c, h, w int) float64 {
		var s float64
		for i := range rank {
			for j := range rank {
				s += float64(tt[((i*rank+j)*k+h)*k+w]) * float64(wb[j*in+c]) * float64(wa[i*out+o])
			}
		}
		return s
	}
	want = make([]float32, out*in*k*k)
	for o := range out {
		for c := range in {
			for h := range k {
				for w := range k {
					want[((o*in+c)*k+h)*k+w] = float32(rebuild(t1, w1a, w1b, o, c, h, w) * rebuild(t2, w2a2, w2b2, o, c, h, w))
				}
			}
		}
	}
	if e := testref.RelErr(d.w, want); e > 1e-5 || d.scale != 1 {
		t.Errorf("LoHa Tucker ΔW: relative error %g, scale %g (no alpha: 1)", e, d.scale)
	}
}

// TestLoKrKernel: a whole w2 kernel makes ΔW[(x·c+y), (u·d+v), h, w] =
// w1[x,u]·w2[y,v,h,w] with scale 1 (no factorised part: alpha unused).
func TestLoKrKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const a, b, c, d, k = 2, 3, 4, 5, 3
	w1, w2 := randn(r, a*b, 1), randn(r, c*d*k*k, 1)
	path := writeFile(t, map[string]safetensors.Tensor{"m.lokr_w1": f32(w1, a, b), "m.lokr_w2": f32(w2, c, d, k, k), "m.alpha": f32([]float32{7})})
	f, err := openFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.src.Close()
	dl, err := f.compute(f.adapters[0], a*c*b*d*k*k)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, a*c*b*d*k*k)
	for x := range a {
		for y := range c {
			for u := range b {
				for v := range d {
					for hw := range k * k {
						want[((x*c+y)*(b*d)+u*d+v)*k*k+hw] = w1[x*b+u] * w2[(y*d+v)*k*k+hw]
					}
				}
			}
		}
	}
	if e := testref.RelErr(dl.w, want); e > 1e-7 || dl.scale != 1 {
		t.Errorf("LoKr kernel ΔW: relative error %g, scale %g", e, dl.scale)
	}
}

// TestOpenCLIPProjection: a LoRA on bigG's text_projection (a Linear
// [proj, width] to LoRA trainers) lands transposed on the OpenCLIP
// checkpoint's text_projection [width, proj].
func TestOpenCLIPProjection(t *testing.T) {
	m, err := weights.OpenModel(testref.Path("sdxl-tiny", "single.safetensors"))
	if err != nil {
		t.Skipf("no tiny SDXL model: %v", err)
	}
	defer m.Close()
	const name, width, proj, rank = "conditioner.embedders.1.model.text_projection", 64, 32, 4
	r := rand.New(rand.NewPCG(15, 16))
	up, down := randn(r, proj*rank, 0.1), randn(r, rank*width, 0.1)
	path := writeFile(t, map[string]safetensors.Tensor{
		"lora_te2_text_projection.lora_up.weight": f32(up, proj, rank), "lora_te2_text_projection.lora_down.weight": f32(down, rank, width),
	})
	src, err := Apply(m.Source, "SDXL", []Spec{{Path: path, Strength: 1, ClipStrength: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := m.Float32(name)
	got, err := src.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]float32(nil), base...)
	for o := range proj {
		for i := range width {
			var acc float64
			for k := range rank {
				acc += float64(up[o*rank+k]) * float64(down[k*width+i])
			}
			want[i*proj+o] += float32(0.5 * acc)
		}
	}
	if e := testref.RelErr(got, want); e > 1e-6 {
		t.Errorf("text_projection: relative error %g", e)
	}
}
