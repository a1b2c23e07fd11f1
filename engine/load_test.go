package engine

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// A checkpoint of another family is refused with the key that gave it
// away, never run.
func TestLoadRefusesOtherFamilies(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		keys []string
		want string
	}{
		{"sdxl", []string{"conditioner.embedders.1.model.ln_final.weight", "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.input_blocks.0.0.weight"}, "looks like SDXL"},
		{"sd3", []string{"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"}, "looks like SD3"},
		{"flux", []string{"double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"}, "looks like Flux"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".safetensors")
			tensors := map[string]safetensors.Tensor{}
			for _, k := range c.keys {
				tensors[k] = safetensors.Tensor{DType: tensor.F16, Shape: []int{2}, Data: make([]byte, 4)}
			}
			err := safetensors.Write(path, tensors, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(context.Background(), path, cpu.New())
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "not supported yet") || !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error %v, want %q … not supported yet, prefixed by the path", err, c.want)
			}
		})
	}
}

// A checkpoint missing tensors names them all in one error.
func TestLoadReportsMissingTensors(t *testing.T) {
	src := layouts[0].path
	f, err := safetensors.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	tensors := map[string]safetensors.Tensor{}
	for _, n := range f.Names() {
		if strings.Contains(n, "middle_block.1.proj_out") || strings.Contains(n, "decoder.mid.attn_1.q.") {
			continue
		}
		info, _ := f.Info(n)
		raw, _ := f.Raw(n)
		tensors[n] = safetensors.Tensor{DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), raw...)}
	}
	f.Close()
	path := filepath.Join(t.TempDir(), "broken.safetensors")
	if err := safetensors.Write(path, tensors, nil); err != nil {
		t.Fatal(err)
	}
	_, err = Load(context.Background(), path, cpu.New())
	if err == nil {
		t.Fatal("loaded a checkpoint with missing tensors")
	}
	for _, want := range []string{"4 tensor problems", `missing "model.diffusion_model.middle_block.1.proj_out.weight"`, `missing "first_stage_model.decoder.mid.attn_1.q.weight"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
