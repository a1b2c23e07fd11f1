package weights

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// TestOpenFilesErrors covers separate component files: what is refused
// names the flag and the file, a second file for one component is refused,
// and a text encoder of a layout keymap does not convert (here T5 names)
// keeps its names under ExtraTextEncoderPrefix for its family.
func TestOpenFilesErrors(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(tinyDir, "single.safetensors")
	te := filepath.Join(tinyDir, "diffusers", "text_encoder", "model.safetensors")
	one := safetensors.Tensor{DType: tensor.F16, Shape: tensor.Shape{2}, Data: make([]byte, 4)}
	t5 := filepath.Join(dir, "t5xxl.safetensors")
	if err := safetensors.Write(t5, map[string]safetensors.Tensor{"encoder.block.0.layer.0.SelfAttention.q.weight": one, "shared.weight": one}, nil); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.safetensors")
	if err := safetensors.Write(empty, map[string]safetensors.Tensor{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, vae string
		tes       []string
		want      string
	}{
		{"missing vae", filepath.Join(dir, "nope.safetensors"), nil, "--vae " + filepath.Join(dir, "nope.safetensors") + ": no such file"},
		{"folder", dir, nil, "is a folder"},
		{"empty", "", []string{empty}, "holds no tensors"},
		{"two clips", "", []string{te, te}, "fills the same component as --text-encoder " + te},
		{"clip as vae", te, nil, "--vae " + te + ": "},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := OpenFiles(main, c.vae, c.tes)
			if err == nil {
				m.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line containing %q", err, c.want)
			}
		})
	}
	m, err := OpenFiles(main, "", []string{t5})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, ok := m.Info(ExtraTextEncoderPrefix + "0.shared.weight"); !ok {
		t.Errorf("T5 file not under %s0.: %v", ExtraTextEncoderPrefix, m.Names()[len(m.Names())-3:])
	}
	if _, ok := m.Info("cond_stage_model.transformer.text_model.final_layer_norm.weight"); !ok {
		t.Error("the checkpoint's CLIP was dropped for an unrelated text encoder")
	}
	if _, err := os.Stat(t5); err != nil {
		t.Fatal(err)
	}
}
