package engine

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// fluxLoRAModule is one module of the tiny Flux LoRAs: the name it is
// saved under and its ΔW's [out, in].
type fluxLoRAModule struct {
	key     string
	out, in int
}

// fluxTinyLoRAs are two LoRAs for the tiny FLUX.1-dev pipeline: "kohya"
// names BFL's layers (the fused qkv and linear1, img_mod, the final
// layer's (shift, scale) modulation) and kohya's text encoders (lora_te1_
// CLIP-L, lora_te3_ T5); "peft" names diffusers' layers (to_k, proj_mlp,
// norm_out's (scale, shift), ff) and the text_encoder / text_encoder_2
// ones. Each must move both layouts of the model the same way.
var fluxTinyLoRAs = map[string][]fluxLoRAModule{
	"kohya": {
		{"lora_unet_double_blocks_0_img_attn_qkv", 96, 32},
		{"lora_unet_double_blocks_1_txt_attn_qkv", 96, 32},
		{"lora_unet_double_blocks_0_img_mod_lin", 192, 32},
		{"lora_unet_single_blocks_1_linear1", 224, 32},
		{"lora_unet_single_blocks_0_linear2", 32, 160},
		{"lora_unet_final_layer_adaLN_modulation_1", 64, 32},
		{"lora_unet_img_in", 32, 64},
		{"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 24, 24},
		{"lora_te3_encoder_block_0_layer_0_SelfAttention_q", 64, 32},
	},
	"peft": {
		{"transformer.transformer_blocks.1.attn.to_k", 32, 32},
		{"transformer.transformer_blocks.0.attn.add_v_proj", 32, 32},
		{"transformer.single_transformer_blocks.0.proj_mlp", 128, 32},
		{"transformer.single_transformer_blocks.1.attn.to_q", 32, 32},
		{"transformer.norm_out.linear", 64, 32},
		{"transformer.transformer_blocks.0.ff.net.0.proj", 128, 32},
		{"transformer.context_embedder", 32, 32},
		{"text_encoder.text_model.encoder.layers.1.self_attn.v_proj", 24, 24},
		{"text_encoder_2.encoder.block.1.layer.1.DenseReluDense.wo", 32, 64},
	},
}

// writeFluxLoRA writes a random rank-4 LoRA over mods (kohya's
// lora_down/lora_up/alpha or peft's lora_A/lora_B).
func writeFluxLoRA(t *testing.T, name string, mods []fluxLoRAModule) string {
	t.Helper()
	r := rand.New(rand.NewPCG(5, uint64(len(name))))
	const rank = 4
	tensorOf := func(n int, shape ...int) safetensors.Tensor {
		b := make([]byte, 4*n)
		for i := range n {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(r.NormFloat64()*0.3)))
		}
		return safetensors.Tensor{DType: tensor.F32, Shape: shape, Data: b}
	}
	ts := map[string]safetensors.Tensor{}
	for _, m := range mods {
		down, up := ".lora_A.weight", ".lora_B.weight"
		if strings.HasPrefix(m.key, "lora_") {
			down, up = ".lora_down.weight", ".lora_up.weight"
			a := tensorOf(1)
			binary.LittleEndian.PutUint32(a.Data, math.Float32bits(2))
			ts[m.key+".alpha"] = a
		}
		ts[m.key+down] = tensorOf(rank*m.in, rank, m.in)
		ts[m.key+up] = tensorOf(m.out*rank, m.out, rank)
	}
	p := filepath.Join(t.TempDir(), name+".safetensors")
	if err := safetensors.Write(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// fluxLoRALatent runs the tiny dev pipeline 2 steps at 32×32 under
// diffusers' convention and returns the final latent.
func fluxLoRALatent(t *testing.T, m *Model) []float32 {
	t.Helper()
	req := DefaultRequest()
	req.Model, req.Prompt, req.Seed, req.Steps = "flux-tiny", "a red fox in the snow", 7, 2
	req.Width, req.Height, req.Convention = 32, 32, "diffusers"
	req.Sampler, req.Scheduler, req.CFG, req.Guidance, req.MaxSequenceLength = "euler", "simple", 1, 3.5, 32
	for _, l := range m.LoRAs() {
		req.LoRAs = append(req.LoRAs, l.String())
	}
	res, err := m.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Latents
}

// TestFluxLoRALayouts applies each tiny LoRA (BFL-named kohya, and
// diffusers-named peft, each with CLIP-L and T5 modules) to the tiny
// FLUX.1-dev pipeline from the diffusers folder and from BFL's split
// files: the two final latents agree (relative 1e-5) and differ from the
// LoRA-free one; at strength 0 the latent is the LoRA-free one bit for bit.
func TestFluxLoRALayouts(t *testing.T) {
	if testing.Short() || !testref.Exists("flux-pipe", "bfl", "flux1-dev.safetensors") {
		t.Skip("no tiny Flux pipeline, or -short")
	}
	plain := fluxLayouts(t, "dev")
	base := fluxLoRALatent(t, plain["diffusers"])
	check(t, "no LoRA: bfl against diffusers", fluxLoRALatent(t, plain["bfl"]), base, 1e-5)
	for name, mods := range fluxTinyLoRAs {
		path := writeFluxLoRA(t, name, mods)
		t.Run(name, func(t *testing.T) {
			ms := fluxLayoutsWith(t, "dev", []LoRA{{Path: path, Strength: 0.8, ClipStrength: 1.2}})
			d, b := fluxLoRALatent(t, ms["diffusers"]), fluxLoRALatent(t, ms["bfl"])
			check(t, "bfl against diffusers", b, d, 1e-5)
			if e := testref.RelErr(d, base); e < 1e-3 {
				t.Errorf("the LoRA moves the latent by only %.3g", e)
			} else {
				t.Logf("the LoRA moves the latent by %.3g (relative)", e)
			}
		})
		t.Run(name+"/strength0", func(t *testing.T) {
			ms := fluxLayoutsWith(t, "dev", []LoRA{{Path: path}})
			for layout, m := range ms {
				got := fluxLoRALatent(t, m)
				want := fluxLoRALatent(t, plain[layout])
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s: latent[%d] %g, want %g bit for bit", layout, i, got[i], want[i])
					}
				}
			}
		})
	}
}
