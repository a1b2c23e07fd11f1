package weights

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/gguf"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
)

const ggufKeyshapes = keyshapes + "gguf/"

// TestGGUFKeyListsMatchSafetensors: city96's GGUF files present the same
// canonical names and shapes as the safetensors files they were made
// from: Flux.1-dev (BFL names), the SDXL UNet (LDM names; the shapes
// ComfyUI's orig_shape metadata restores), the SD3.5 Large and Medium
// transformers (Stability's names without the checkpoint prefix) and the
// T5-XXL encoder
// (llama.cpp names renamed to transformers', as ComfyUI-GGUF's loader
// does; one token embedding instead of the fp16 file's two copies).
func TestGGUFKeyListsMatchSafetensors(t *testing.T) {
	for _, q := range []string{"Q8_0", "Q4_K_S"} {
		t.Run("flux1-dev-"+q, func(t *testing.T) {
			sameUnder(t, "transformer", openModel(t, ggufKeyshapes+"flux1-dev-"+q+".component.json.gz"), "", keyList(t, "flux1-dev.single"), "")
		})
		t.Run("sdxl-unet-"+q, func(t *testing.T) {
			sameUnder(t, "UNet", openModel(t, ggufKeyshapes+"sdxl-unet-"+q+".component.json.gz"), keymap.UNetPrefix, keyList(t, "sdxl-unet.component"), keymap.UNetPrefix)
		})
	}
	for _, size := range []string{"large", "medium"} {
		t.Run("sd35-"+size, func(t *testing.T) {
			m := openModel(t, ggufKeyshapes+"sd35-"+size+"-Q8_0.component.json.gz")
			sameUnder(t, "transformer", m, "", keyList(t, "sd35-"+size+".single"), keymap.UNetPrefix)
		})
	}
	t.Run("t5xxl", func(t *testing.T) {
		flux := keyshapes + "flux1-dev.single.json.gz"
		a := openFiles(t, flux, "", ggufKeyshapes+"t5xxl-encoder-Q8_0.component.json.gz")
		b := openFiles(t, flux, "", keyshapes+"t5xxl.component.json.gz")
		root := ExtraTextEncoderPrefix + "0."
		sameUnder(t, "T5", a, root, b, root, "encoder.embed_tokens.weight")
		if info, _ := a.Info(root + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"); info.DType != tensor.F32 {
			t.Errorf("a Q8_0 tensor reads as %v, want F32 (dequantised)", info.DType)
		}
	})
}

// writeGGUF writes a GGUF file of the given tensors (ggml order dims).
func writeGGUF(t *testing.T, path, arch string, tensors []gguf.WriteTensor) string {
	t.Helper()
	var kv []gguf.KeyValue
	if arch != "" {
		kv = append(kv, gguf.KeyValue{Key: "general.architecture", Value: gguf.Value{Type: gguf.TypeString, V: arch}})
	}
	var buf bytes.Buffer
	if err := gguf.Encode(&buf, kv, tensors); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// q8Block returns one Q8_0 block of scale d and quants q[i] = i - 16.
func q8Block(d uint16) []byte {
	b := binary.LittleEndian.AppendUint16(nil, d)
	for i := range 32 {
		b = append(b, byte(int8(i-16)))
	}
	return b
}

// TestOpenGGUFFiles opens real GGUF files: a T5 encoder in llama.cpp's
// names beside a Flux transformer (renamed to transformers' names, the
// Q8_0 weight dequantised when read), and a Flux transformer file itself
// through OpenModel, whose .gguf extension used to be refused.
func TestOpenGGUFFiles(t *testing.T) {
	dir := t.TempDir()
	t5 := writeGGUF(t, filepath.Join(dir, "t5-Q8_0.gguf"), "t5encoder", []gguf.WriteTensor{
		{Name: "token_embd.weight", Type: gguf.Q8_0, Dims: []int64{32, 2}, Data: append(q8Block(0x3c00), q8Block(0xbc00)...)},
		{Name: "enc.blk.0.attn_rel_b.weight", Type: gguf.F16, Dims: []int64{1}, Data: []byte{0, 0x3c}},
		{Name: "enc.output_norm.weight", Type: gguf.F32, Dims: []int64{1}, Data: binary.LittleEndian.AppendUint32(nil, math.Float32bits(2))},
	})
	flux := writeGGUF(t, filepath.Join(dir, "flux1-dev-Q8_0.gguf"), "flux", []gguf.WriteTensor{
		{Name: "double_blocks.0.img_attn.qkv.weight", Type: gguf.Q8_0, Dims: []int64{32, 1}, Data: q8Block(0x3800)},
		{Name: "single_blocks.0.linear1.weight", Type: gguf.F16, Dims: []int64{1, 1}, Data: []byte{0, 0x3c}},
	})
	m := openFiles(t, flux, "", t5)
	root := ExtraTextEncoderPrefix + "0."
	want := []string{"double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight",
		root + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", root + "encoder.final_layer_norm.weight", root + "shared.weight"}
	if got := strings.Join(m.Names(), " "); got != strings.Join(want, " ") {
		t.Fatalf("names %s, want %s", got, strings.Join(want, " "))
	}
	emb, err := m.Float32(root + "shared.weight")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := m.Info(root + "shared.weight")
	if !info.Shape.Equal(tensor.Shape{2, 32}) || info.DType != tensor.F32 || emb[0] != -16 || emb[32+31] != -15 {
		t.Errorf("shared.weight %+v: %v", info, emb)
	}
	raw, err := m.Raw("double_blocks.0.img_attn.qkv.weight")
	if err != nil || len(raw) != 128 || math.Float32frombits(binary.LittleEndian.Uint32(raw[4*20:])) != 2 {
		t.Errorf("Raw of the Q8_0 weight: %d bytes, %v", len(raw), err)
	}
	if m.Files[0].Path != flux || m.Files[0].Tensors != 2 {
		t.Errorf("files %+v", m.Files)
	}
	bad := filepath.Join(dir, "bad.gguf")
	if err := os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00not a header at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenModel(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("a broken GGUF file: %v, want one line naming it", err)
	}
}
