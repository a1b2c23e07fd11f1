package engine

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// writeGGUF writes a safetensors checkpoint as a GGUF file of the same
// names, as ComfyUI-GGUF's converter and stable-diffusion.cpp keep them:
// every tensor as stored (F16), a tensor for which flatten is true stored
// as rows of 256 with its shape in comfy.gguf.orig_shape metadata (the
// converter's SD1/SDXL shape fix), and with q8 every weight of two or more
// dimensions whose rows are whole Q8_0 blocks quantised
// (gguf.QuantizeQ8_0, ggml's quantiser), as llama-quantize does for a
// Q8_0 file.
func writeGGUF(t *testing.T, src, dst, arch string, q8 bool, flatten func(name string, shape []int) bool) string {
	t.Helper()
	st, err := safetensors.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kv := []gguf.KeyValue{{Key: "general.architecture", Value: gguf.Value{Type: gguf.TypeString, V: arch}}}
	var tensors []gguf.WriteTensor
	quantised, flattened := 0, 0
	for _, name := range st.Names() {
		info, _ := st.Info(name)
		typ := map[string]gguf.Type{"F16": gguf.F16, "BF16": gguf.BF16, "F32": gguf.F32}[info.DType.String()]
		dims := make([]int64, len(info.Shape))
		for i, d := range info.Shape {
			dims[len(dims)-1-i] = int64(d)
		}
		if flatten != nil && flatten(name, info.Shape) {
			orig := make([]any, len(info.Shape))
			for i, d := range info.Shape {
				orig[i] = int32(d)
			}
			kv = append(kv, gguf.KeyValue{Key: gguf.OrigShapePrefix + name, Value: gguf.Value{Type: gguf.TypeArray, V: gguf.Array{Elem: gguf.TypeInt32, Values: orig}}})
			dims = []int64{256, int64(info.Shape.NumElements() / 256)}
			flattened++
		}
		raw, _ := st.Raw(name)
		wt := gguf.WriteTensor{Name: name, Type: typ, Dims: dims, Data: raw}
		if q8 && len(dims) >= 2 && strings.HasSuffix(name, "weight") && dims[0]%32 == 0 {
			v, err := st.Float32(name)
			if err != nil {
				t.Fatal(err)
			}
			wt.Type, wt.Data = gguf.Q8_0, make([]byte, len(v)/32*34)
			if err := gguf.QuantizeQ8_0(v, wt.Data); err != nil {
				t.Fatal(err)
			}
			quantised++
		}
		tensors = append(tensors, wt)
	}
	if q8 && quantised == 0 || flatten != nil && flattened == 0 {
		t.Fatalf("%d tensors quantised, %d flattened", quantised, flattened)
	}
	var buf bytes.Buffer
	if err := gguf.Encode(&buf, kv, tensors); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// fluxImage generates and decodes a FluxPipeline case on m.
func fluxImage(t *testing.T, m *Model, c fluxCase) []float32 {
	t.Helper()
	ctx := context.Background()
	res, err := m.Generate(ctx, fluxRequest(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	pix, err := m.Decode(ctx, res.Latents, res.LatentShape)
	if err != nil {
		t.Fatal(err)
	}
	return pix
}

// TestFluxGGUF runs the tiny FLUX.1-dev from GGUF files as city96 makes
// them from BFL's transformer: the F16 GGUF twin passes diffusers'
// FluxPipeline cases with the safetensors file's tolerances (1e-4 per
// step, image ≥ 45 dB) and gives its image bit for bit; the Q8_0 file
// (its matrices dequantised when loaded) stays within Q8_0's error of it.
func TestFluxGGUF(t *testing.T) {
	if !testref.Exists("flux-pipe", "cases.json") {
		t.Skip("no flux-pipe fixtures")
	}
	fx := testref.Tensors(t, filepath.Join("flux-pipe", "cases.safetensors"))
	bfl := testref.Path("flux-pipe", "bfl", "flux1-dev.safetensors")
	dir := t.TempDir()
	folder := fluxFolder(t, "dev")
	st := fluxBFL(t, folder, bfl, nil)
	f16 := fluxBFL(t, folder, writeGGUF(t, bfl, filepath.Join(dir, "flux1-dev-F16.gguf"), "flux", false, nil), nil)
	q8 := fluxBFL(t, folder, writeGGUF(t, bfl, filepath.Join(dir, "flux1-dev-Q8_0.gguf"), "flux", true, nil), nil)
	ran := 0
	for _, c := range fluxCases(t) {
		if c.Variant != "dev" {
			continue
		}
		ran++
		t.Run(c.Name, func(t *testing.T) {
			if p := runFluxCase(t, f16, c, fx, 1e-4); p < 45 {
				t.Errorf("F16 GGUF image PSNR %.1f dB < 45 against diffusers", p)
			}
			want := fluxImage(t, st, c)
			got := fluxImage(t, f16, c)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("F16 GGUF pixel %d: %v, the safetensors file gives %v", i, got[i], want[i])
				}
			}
			p := testref.PSNR(fluxImage(t, q8, c), want)
			t.Logf("Q8_0 GGUF image %.1f dB from the F16 one", p)
			if p < 40 {
				t.Errorf("Q8_0 GGUF image PSNR %.1f dB < 40 from the F16 model's", p)
			}
		})
	}
	if ran == 0 {
		t.Fatal("no dev case")
	}
}

// sdxlShapeFix is ComfyUI-GGUF's converter's SD1/SDXL shape fix: a UNet
// tensor of two or more dimensions and at least 512 values, a whole number
// of 256-value rows, whose last dimension is not a multiple of 256.
func sdxlShapeFix(name string, shape []int) bool {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return strings.HasPrefix(name, "model.diffusion_model.") && len(shape) > 1 && n >= 512 && n%256 == 0 && shape[len(shape)-1]%256 != 0
}

// TestSDXLGGUF runs the tiny SDXL base from one GGUF file of its
// checkpoint's names (as stable-diffusion.cpp converts a whole
// checkpoint), its UNet tensors flattened to rows of 256 with ComfyUI's
// orig_shape metadata: the F16 file gives the safetensors file's image
// bit for bit, the Q8_0 file an image within Q8_0's error of it. Without
// guidance (CFG 1) that error is the weights' own (51.0 dB measured; the
// Flux test's 48.7–50.4 dB); CFG 5 scales the difference of two noisy
// predictions by 5 (40.0 dB measured).
func TestSDXLGGUF(t *testing.T) {
	src := testref.Path("sdxl-tiny", "single.safetensors")
	if !testref.Exists("sdxl-tiny", "single.safetensors") {
		t.Skip("no sdxl-tiny fixture")
	}
	ctx := context.Background()
	dir := t.TempDir()
	load := func(path string) *Model {
		m, err := Load(ctx, path, cpu.New())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		useTinyTokenizer(t, m)
		return m
	}
	image := func(m *Model, cfg float64) []float32 {
		req := DefaultRequest()
		req.Model, req.Prompt, req.Negative, req.Seed, req.Steps, req.CFG = "sdxl-tiny", "a lighthouse at dusk", "blurry", 7, 4, cfg
		req.Width, req.Height = 64, 64
		res, err := m.Generate(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		pix, err := m.Decode(ctx, res.Latents, res.LatentShape)
		if err != nil {
			t.Fatal(err)
		}
		return pix
	}
	st := load(src)
	f16 := load(writeGGUF(t, src, filepath.Join(dir, "sdxl-F16.gguf"), "sdxl", false, sdxlShapeFix))
	q8 := load(writeGGUF(t, src, filepath.Join(dir, "sdxl-Q8_0.gguf"), "sdxl", true, sdxlShapeFix))
	for _, c := range []struct{ cfg, minDB float64 }{{1, 45}, {5, 38}} {
		want, got := image(st, c.cfg), image(f16, c.cfg)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("CFG %g: F16 GGUF pixel %d: %v, the safetensors file gives %v", c.cfg, i, got[i], want[i])
			}
		}
		p := testref.PSNR(image(q8, c.cfg), want)
		t.Logf("CFG %g: Q8_0 GGUF image %.1f dB from the F16 one", c.cfg, p)
		if p < c.minDB {
			t.Errorf("CFG %g: Q8_0 GGUF image PSNR %.1f dB < %g from the F16 model's", c.cfg, p, c.minDB)
		}
	}
}

// TestInspectGGUF: darkroom info reports a GGUF file's block-quantised
// tensors by their ggml type and stored size, its other tensors as
// stored.
func TestInspectGGUF(t *testing.T) {
	if !testref.Exists("flux-pipe", "bfl", "flux1-dev.safetensors") {
		t.Skip("no flux-pipe fixtures")
	}
	path := writeGGUF(t, testref.Path("flux-pipe", "bfl", "flux1-dev.safetensors"), filepath.Join(t.TempDir(), "flux-Q8_0.gguf"), "flux", true, nil)
	in, err := Inspect(ModelFiles{Model: path})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, ti := range in.Tensors {
		counts[ti.DType]++
		n := int64(1)
		for _, d := range ti.Shape {
			n *= int64(d)
		}
		if want := map[string]int64{"Q8_0": n / 32 * 34, "F16": 2 * n}[ti.DType]; ti.Size != want {
			t.Errorf("%s: %s of %d bytes, want %d", ti.Name, ti.DType, ti.Size, want)
		}
	}
	if counts["Q8_0"] == 0 || counts["F16"] == 0 || len(counts) != 2 {
		t.Errorf("dtypes %v, want Q8_0 and F16", counts)
	}
	if in.Detection.Name() != "Flux.1 (dev)" {
		t.Errorf("detected %v", in.Detection)
	}
}
