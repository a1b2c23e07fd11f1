package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/families/sdxl"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// TestLoRASDXLSmoke runs the tiny SDXL checkpoint with a LoRA on its UNet,
// CLIP-L (te1) and OpenCLIP bigG (te2, whose q/k/v are rows of the fused
// in_proj the loader splits): the image changes, and at strength 0 it is
// bit-identical to the run without the LoRA. (No peer fixture for SDXL:
// the merged tensors are checked in engine/weights/lora.)
func TestLoRASDXLSmoke(t *testing.T) {
	path := testref.Path("sdxl-tiny", "single.safetensors")
	if !testref.Exists("sdxl-tiny", "single.safetensors") {
		t.Skip("no tiny SDXL model")
	}
	tok := tinyTokenizer(t)
	r := rand.New(rand.NewPCG(9, 10))
	f32 := func(shape ...int) safetensors.Tensor {
		n := tensor.Shape(shape).NumElements()
		b := make([]byte, 4*n)
		for i := range n {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(r.NormFloat64()*0.3)))
		}
		return safetensors.Tensor{DType: tensor.F32, Shape: shape, Data: b}
	}
	lora := map[string]safetensors.Tensor{}
	for key, io := range map[string][2]int{
		"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": {64, 128},
		"lora_unet_down_blocks_1_attentions_0_proj_in":               {64, 64},
		"lora_te1_text_model_encoder_layers_0_self_attn_q_proj":      {64, 64},
		"lora_te2_text_model_encoder_layers_0_self_attn_v_proj":      {64, 64},
		"lora_te2_text_model_encoder_layers_1_mlp_fc2":               {64, 128},
	} {
		lora[key+".lora_up.weight"], lora[key+".lora_down.weight"] = f32(io[0], 4), f32(4, io[1])
	}
	lp := filepath.Join(t.TempDir(), "xl.safetensors")
	if err := safetensors.Write(lp, lora, nil); err != nil {
		t.Fatal(err)
	}
	te2 := map[string]safetensors.Tensor{}
	for k, v := range lora {
		if len(k) > 9 && k[:9] == "lora_te2_" {
			te2[k] = v
		}
	}
	lp2 := filepath.Join(t.TempDir(), "xl-te2.safetensors")
	if err := safetensors.Write(lp2, te2, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run := func(loras ...LoRA) []byte {
		t.Helper()
		m, err := LoadFiles(ctx, ModelFiles{Model: path, LoRAs: loras}, cpu.New())
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		text := m.c.Text.(*sdxl.Conditioner)
		text.L.Tok, text.G.Tok = tok, tok
		text.L.Pad = tok.EOS()
		req := DefaultRequest()
		req.Model, req.Prompt, req.Negative, req.Seed, req.Steps, req.Width, req.Height = path, "a cat", "", 3, 2, 64, 64
		for _, l := range loras {
			req.LoRAs = append(req.LoRAs, l.String())
		}
		res, err := m.Generate(ctx, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 4*len(res.Latents))
		for i, v := range res.Latents {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out
	}
	base := run()
	if !bytes.Equal(run(LoRA{Path: lp}), base) {
		t.Error("strength 0 changed the latents")
	}
	if bytes.Equal(run(LoRA{Path: lp, Strength: 1, ClipStrength: 0}), base) {
		t.Error("the UNet part changed nothing")
	}
	if bytes.Equal(run(LoRA{Path: lp, Strength: 0, ClipStrength: 1}), base) {
		t.Error("the text-encoder part changed nothing")
	}
	if bytes.Equal(run(LoRA{Path: lp2, Strength: 1, ClipStrength: 1}), base) {
		t.Error("bigG's part (rows of the fused in_proj, and c_proj) changed nothing")
	}
}
