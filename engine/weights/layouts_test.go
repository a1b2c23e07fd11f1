package weights

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// renamed returns the tensors with every name passed through f (a name
// f maps to "" is left out).
func renamed(tensors map[string]safetensors.Tensor, f func(string) string) map[string]safetensors.Tensor {
	out := map[string]safetensors.Tensor{}
	for n, t := range tensors {
		if to := f(n); to != "" {
			out[to] = t
		}
	}
	return out
}

func onlyPrefix(p string) func(string) string {
	return func(n string) string {
		if rest, ok := strings.CutPrefix(n, p); ok {
			return rest
		}
		return ""
	}
}

// checkSameTensors checks that m presents exactly the canonical names
// want (plus extra), each with the reference's dtype, shape and bytes.
func checkSameTensors(t *testing.T, m *Model, ref Source, want []string, extra ...string) {
	t.Helper()
	all := append(append([]string(nil), want...), extra...)
	sort.Strings(all)
	if got := m.Names(); strings.Join(got, "\n") != strings.Join(all, "\n") {
		t.Fatalf("names differ: %d presented, %d wanted; first presented %q", len(got), len(all), got[:min(3, len(got))])
	}
	for _, n := range want {
		gi, _ := m.Info(n)
		ri, _ := ref.Info(n)
		if gi.DType != ri.DType || !gi.Shape.Equal(ri.Shape) || gi.Name != n {
			t.Errorf("%s: %v %v, reference %v %v", n, gi.DType, gi.Shape, ri.DType, ri.Shape)
			continue
		}
		g, _ := m.Raw(n)
		r, _ := ref.Raw(n)
		if !bytes.Equal(g, r) {
			t.Errorf("%s: bytes differ", n)
		}
	}
}

func namesWithPrefix(src Source, p string) []string {
	var out []string
	for _, n := range src.Names() {
		if strings.HasPrefix(n, p) {
			out = append(out, n)
		}
	}
	return out
}

// TestOpenModelLayouts writes the tiny SD1 checkpoint in each layout the
// peers save (ComfyUI's savers, wrapper prefixes, one component per file)
// and checks that OpenModel presents the reference's canonical tensors.
func TestOpenModelLayouts(t *testing.T) {
	refPath := filepath.Join(tinyDir, "single.safetensors")
	ref := openModel(t, refPath)
	stored := readAll(t, refPath)
	scalar := safetensors.Tensor{DType: tensor.F32, Shape: tensor.Shape{}, Data: make([]byte, 4)}
	empty := safetensors.Tensor{DType: tensor.F32, Shape: tensor.Shape{0}, Data: nil}
	proj := safetensors.Tensor{DType: tensor.F16, Shape: tensor.Shape{64, 64}, Data: make([]byte, 2*64*64)}
	posIDs := safetensors.Tensor{DType: tensor.I64, Shape: tensor.Shape{1, 77}, Data: make([]byte, 8*77)}
	with := func(tensors map[string]safetensors.Tensor, extra map[string]safetensors.Tensor) map[string]safetensors.Tensor {
		out := renamed(tensors, func(n string) string { return n })
		for n, t := range extra {
			out[n] = t
		}
		return out
	}
	const clipRoot = "cond_stage_model.transformer."
	all := ref.Names()
	cases := []struct {
		name    string
		tensors map[string]safetensors.Tensor
		want    []string // canonical names with the reference's bytes
		extra   []string // further canonical names
	}{
		{
			name: "ComfyUI CheckpointSave with markers and position_ids",
			tensors: with(stored, map[string]safetensors.Tensor{
				"v_pred": empty, "ztsnr": empty,
				keymap.CLIPPrefix + "embeddings.position_ids": posIDs,
			}),
			want:  all,
			extra: []string{keymap.CLIPPrefix + "embeddings.position_ids", "v_pred", "ztsnr"},
		},
		{
			name: "ComfyUI checkpoint with text_projection and logit_scale",
			tensors: with(stored, map[string]safetensors.Tensor{
				keymap.TextProjection: proj, keymap.LogitScale: scalar,
			}),
			want:  all,
			extra: []string{keymap.LogitScale, keymap.TextProjection},
		},
		{
			name: "ComfyUI clip_l. names",
			tensors: with(renamed(stored, func(n string) string {
				if rest, ok := strings.CutPrefix(n, "cond_stage_model."); ok {
					return "clip_l." + rest
				}
				return n
			}), map[string]safetensors.Tensor{"clip_l.transformer.text_projection.weight": proj, "clip_l.logit_scale": scalar}),
			want:  all,
			extra: []string{keymap.LogitScale, keymap.TextProjection},
		},
		{
			name:    "EMA export: every name under model.",
			tensors: renamed(stored, func(n string) string { return "model." + n }),
			want:    all,
		},
		{
			name:    "torch DDP and torch.compile: module._orig_mod.",
			tensors: renamed(stored, func(n string) string { return "module._orig_mod." + n }),
			want:    all,
		},
		{
			name:    "UNet-only file with bare LDM names",
			tensors: renamed(stored, onlyPrefix(keymap.UNetPrefix)),
			want:    namesWithPrefix(ref, keymap.UNetPrefix),
		},
		{
			name:    "UNet-only file, DDP-wrapped, with v_pred",
			tensors: renamed(with(renamed(stored, onlyPrefix(keymap.UNetPrefix)), map[string]safetensors.Tensor{"v_pred": empty}), func(n string) string { return "module." + n }),
			want:    namesWithPrefix(ref, keymap.UNetPrefix),
			extra:   []string{"v_pred"},
		},
		{
			name:    "VAE file with bare LDM names",
			tensors: renamed(stored, onlyPrefix(keymap.VAEPrefix)),
			want:    namesWithPrefix(ref, keymap.VAEPrefix),
		},
		{
			name:    "ComfyUI CLIPSave text encoder",
			tensors: with(renamed(stored, onlyPrefix(clipRoot)), map[string]safetensors.Tensor{"text_projection.weight": proj, "logit_scale": scalar}),
			want:    namesWithPrefix(ref, clipRoot),
			extra:   []string{keymap.LogitScale, keymap.TextProjection},
		},
		{
			name:    "text encoder without text_model.",
			tensors: renamed(stored, onlyPrefix(keymap.CLIPPrefix)),
			want:    namesWithPrefix(ref, clipRoot),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.safetensors")
			writeFile(t, path, c.tensors)
			m := openModel(t, path)
			checkSameTensors(t, m, ref, c.want, c.extra...)
			// The VAE attention projections keep their 1x1 presentation.
			for _, n := range c.want {
				if strings.Contains(n, "mid.attn_1.q.weight") {
					if info, _ := m.Info(n); len(info.Shape) != 4 {
						t.Errorf("%s shape %v, want 4-D", n, info.Shape)
					}
				}
			}
		})
	}
}

// TestOpenModelOtherFamiliesKeepNames checks that files of layouts keymap
// does not convert are presented as stored, for the family probes.
func TestOpenModelOtherFamiliesKeepNames(t *testing.T) {
	one := safetensors.Tensor{DType: tensor.F16, Shape: tensor.Shape{1}, Data: make([]byte, 2)}
	for _, c := range []struct {
		name  string
		names []string
	}{
		{"Flux transformer", []string{"double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"}},
		{"Flux transformer under module.", []string{"module.double_blocks.0.img_attn.qkv.weight", "module.single_blocks.0.linear1.weight"}},
		{"T5", []string{"encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight", "encoder.final_layer_norm.weight"}},
		{"OpenCLIP-G", []string{"transformer.resblocks.0.ln_1.weight", "token_embedding.weight", "text_projection", "logit_scale"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tensors := map[string]safetensors.Tensor{}
			for _, n := range c.names {
				tensors[n] = one
			}
			path := filepath.Join(t.TempDir(), "m.safetensors")
			writeFile(t, path, tensors)
			m := openModel(t, path)
			want := append([]string(nil), c.names...)
			sort.Strings(want)
			if got := m.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("names = %v, want %v", got, want)
			}
		})
	}
}

// TestDiffusersTextEncoderLayouts rebuilds the tiny diffusers folder with a
// text encoder saved without transformers' "text_model." prefix, and with a
// CLIPTextModelWithProjection's text_projection and position_ids.
func TestDiffusersTextEncoderLayouts(t *testing.T) {
	src := filepath.Join(tinyDir, "diffusers")
	ref := openModel(t, filepath.Join(tinyDir, "single.safetensors"))
	te := readAll(t, filepath.Join(src, "text_encoder/model.safetensors"))
	proj := safetensors.Tensor{DType: tensor.F16, Shape: tensor.Shape{64, 64}, Data: bytes.Repeat([]byte{1, 2}, 64*64)}
	posIDs := safetensors.Tensor{DType: tensor.I64, Shape: tensor.Shape{1, 77}, Data: make([]byte, 8*77)}
	for _, c := range []struct {
		name    string
		tensors map[string]safetensors.Tensor
		extra   []string
	}{
		{"without text_model.", renamed(te, onlyPrefix("text_model.")), nil},
		{"with projection and position_ids", func() map[string]safetensors.Tensor {
			m := renamed(te, func(n string) string { return n })
			m["text_projection.weight"] = proj
			m["text_model.embeddings.position_ids"] = posIDs
			return m
		}(), []string{keymap.CLIPPrefix + "embeddings.position_ids", keymap.TextProjection}},
		{"without text_model., with projection", func() map[string]safetensors.Tensor {
			m := renamed(te, onlyPrefix("text_model."))
			m["text_projection.weight"] = proj
			return m
		}(), []string{keymap.TextProjection}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, comp := range []string{"unet", "vae"} {
				p := filepath.Join(comp, "diffusion_pytorch_model.safetensors")
				writeFile(t, filepath.Join(dir, p), readAll(t, filepath.Join(src, p)))
			}
			writeFile(t, filepath.Join(dir, "text_encoder/model.safetensors"), c.tensors)
			if err := os.WriteFile(filepath.Join(dir, "model_index.json"), []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
			m := openModel(t, dir)
			checkSameTensors(t, m, ref, ref.Names(), c.extra...)
			if raw, _ := m.Raw(keymap.TextProjection); c.tensors["text_projection.weight"].Data != nil && !bytes.Equal(raw, proj.Data) {
				t.Errorf("text projection bytes differ")
			}
		})
	}
}
