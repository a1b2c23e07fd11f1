package engine

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// writeFluxGGUF writes a BFL-named safetensors transformer as a GGUF file
// of BFL names, as ComfyUI-GGUF's converter keeps them: every tensor as
// stored (F16), or with q8 every matrix whose rows are whole Q8_0 blocks
// quantised (gguf.QuantizeQ8_0, ggml's quantiser), as llama-quantize does
// for a Q8_0 file.
func writeFluxGGUF(t *testing.T, src, dst string, q8 bool) string {
	t.Helper()
	st, err := safetensors.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var tensors []gguf.WriteTensor
	quantised := 0
	for _, name := range st.Names() {
		info, _ := st.Info(name)
		typ := map[string]gguf.Type{"F16": gguf.F16, "BF16": gguf.BF16, "F32": gguf.F32}[info.DType.String()]
		dims := make([]int64, len(info.Shape))
		for i, d := range info.Shape {
			dims[len(dims)-1-i] = int64(d)
		}
		raw, _ := st.Raw(name)
		wt := gguf.WriteTensor{Name: name, Type: typ, Dims: dims, Data: raw}
		if q8 && len(dims) == 2 && strings.HasSuffix(name, "weight") && dims[0]%32 == 0 {
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
	if q8 && quantised == 0 {
		t.Fatal("no tensor quantised")
	}
	var buf bytes.Buffer
	kv := []gguf.KeyValue{{Key: "general.architecture", Value: gguf.Value{Type: gguf.TypeString, V: "flux"}}}
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
	f16 := fluxBFL(t, folder, writeFluxGGUF(t, bfl, filepath.Join(dir, "flux1-dev-F16.gguf"), false), nil)
	q8 := fluxBFL(t, folder, writeFluxGGUF(t, bfl, filepath.Join(dir, "flux1-dev-Q8_0.gguf"), true), nil)
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
