package flux_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/flux"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// memSource is an in-memory Source of raw tensors.
type memSource struct {
	info map[string]weights.TensorInfo
	raw  map[string][]byte
}

func (m *memSource) Names() []string {
	out := make([]string, 0, len(m.raw))
	for n := range m.raw {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (m *memSource) Info(name string) (weights.TensorInfo, bool) {
	i, ok := m.info[name]
	return i, ok
}

func (m *memSource) Raw(name string) ([]byte, error) {
	r, ok := m.raw[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", name)
	}
	return r, nil
}

func (m *memSource) Float32(name string) ([]float32, error) { return nil, fmt.Errorf("unused") }
func (m *memSource) Close() error                           { return nil }

// toBFL rewrites diffusers' tensors of src into the BFL / ComfyUI layout
// under prefix, inverting diffusers' convert_flux_transformer_checkpoint_to_diffusers:
// fused qkv and linear1, final adaLN stored (shift, scale).
func toBFL(t *testing.T, src weights.Source, prefix string, layers, single int) *memSource {
	t.Helper()
	m := &memSource{info: map[string]weights.TensorInfo{}, raw: map[string][]byte{}}
	used := map[string]bool{}
	put := func(to string, from ...string) {
		var raw []byte
		var shape tensor.Shape
		var dt tensor.DType
		for _, f := range from {
			info, ok := src.Info(f)
			if !ok {
				t.Fatalf("no %s", f)
			}
			r, err := src.Raw(f)
			if err != nil {
				t.Fatal(err)
			}
			used[f] = true
			raw = append(raw, r...)
			if shape == nil {
				shape = info.Shape.Clone()
			} else {
				shape[0] += info.Shape[0]
			}
			dt = info.DType
		}
		m.info[prefix+to] = weights.TensorInfo{Name: prefix + to, DType: dt, Shape: shape, Size: int64(len(raw))}
		m.raw[prefix+to] = raw
	}
	both := func(to string, from ...string) {
		for _, s := range []string{".weight", ".bias"} {
			fs := make([]string, len(from))
			for i, f := range from {
				fs[i] = f + s
			}
			put(to+s, fs...)
		}
	}
	both("img_in", "x_embedder")
	both("txt_in", "context_embedder")
	both("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
	both("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
	both("vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
	both("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
	if _, ok := src.Info("time_text_embed.guidance_embedder.linear_1.weight"); ok {
		both("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
		both("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
	}
	for i := range layers {
		p, d := fmt.Sprintf("double_blocks.%d.", i), fmt.Sprintf("transformer_blocks.%d.", i)
		both(p+"img_mod.lin", d+"norm1.linear")
		both(p+"txt_mod.lin", d+"norm1_context.linear")
		both(p+"img_attn.qkv", d+"attn.to_q", d+"attn.to_k", d+"attn.to_v")
		both(p+"txt_attn.qkv", d+"attn.add_q_proj", d+"attn.add_k_proj", d+"attn.add_v_proj")
		put(p+"img_attn.norm.query_norm.scale", d+"attn.norm_q.weight")
		put(p+"img_attn.norm.key_norm.scale", d+"attn.norm_k.weight")
		put(p+"txt_attn.norm.query_norm.scale", d+"attn.norm_added_q.weight")
		put(p+"txt_attn.norm.key_norm.scale", d+"attn.norm_added_k.weight")
		both(p+"img_attn.proj", d+"attn.to_out.0")
		both(p+"txt_attn.proj", d+"attn.to_add_out")
		both(p+"img_mlp.0", d+"ff.net.0.proj")
		both(p+"img_mlp.2", d+"ff.net.2")
		both(p+"txt_mlp.0", d+"ff_context.net.0.proj")
		both(p+"txt_mlp.2", d+"ff_context.net.2")
	}
	for i := range single {
		p, d := fmt.Sprintf("single_blocks.%d.", i), fmt.Sprintf("single_transformer_blocks.%d.", i)
		both(p+"modulation.lin", d+"norm.linear")
		both(p+"linear1", d+"attn.to_q", d+"attn.to_k", d+"attn.to_v", d+"proj_mlp")
		put(p+"norm.query_norm.scale", d+"attn.norm_q.weight")
		put(p+"norm.key_norm.scale", d+"attn.norm_k.weight")
		both(p+"linear2", d+"proj_out")
	}
	both("final_layer.linear", "proj_out")
	put("final_layer.adaLN_modulation.1.weight", "norm_out.linear.weight")
	put("final_layer.adaLN_modulation.1.bias", "norm_out.linear.bias")
	for _, n := range []string{"final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias"} {
		r := m.raw[prefix+n]
		h := len(r) / 2 // diffusers (scale, shift) -> BFL (shift, scale)
		m.raw[prefix+n] = append(slices.Clone(r[h:]), r[:h]...)
	}
	for _, n := range src.Names() {
		if !used[n] {
			t.Fatalf("conversion left %s out", n)
		}
	}
	return m
}

func TestBFLLayoutMatchesDiffusers(t *testing.T) {
	cases, ref := loadCases(t)
	dev := cpu.New()
	const prefix = "model.diffusion_model."
	for _, name := range []string{"dev", "schnell"} {
		src := open(t, name)
		want := load(t, src, dev, name == "dev")
		bfl := toBFL(t, src, prefix, 2, 2)
		cfg, err := flux.ConfigFromWeights(bfl, prefix)
		if err != nil {
			t.Fatal(err)
		}
		wc := want.Config
		if !cfg.BFL || cfg.Width != wc.Width || cfg.Heads != wc.Heads || cfg.HeadDim != wc.HeadDim || cfg.Layers != wc.Layers ||
			cfg.SingleLayers != wc.SingleLayers || cfg.MLP != wc.MLP || cfg.InChannels != wc.InChannels ||
			cfg.OutChannels != wc.OutChannels || cfg.JointDim != wc.JointDim || cfg.PooledDim != wc.PooledDim ||
			cfg.TimeDim != wc.TimeDim || cfg.Guidance != wc.Guidance {
			t.Fatalf("%s: BFL config %v, diffusers %v", name, cfg, wc)
		}
		cfg.AxesDim = []int{4, 6, 6}
		b := weights.NewBuilder(bfl, dev)
		m, err := flux.Load(b.Sub("model").Sub("diffusion_model"), dev, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if unused := b.Unused(prefix); len(unused) > 0 {
			t.Errorf("%s: unused tensors: %v", name, unused)
		}
		for _, c := range cases {
			if c.Model != name {
				continue
			}
			n := c.H / 2 * c.W / 2
			img := dev.Upload(ref[c.Name+"/hidden_states"], c.Batch, n, 64)
			txt := dev.Upload(ref[c.Name+"/encoder_hidden_states"], c.Batch, c.TextTokens, 32)
			pooled := dev.Upload(ref[c.Name+"/pooled"], c.Batch, 24)
			out, err := m.Forward(context.Background(), dev, img, txt, pooled, c.Timesteps, c.Guidance,
				ids(ref[c.Name+"/img_ids"]), ids(ref[c.Name+"/txt_ids"]))
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			got, _ := dev.Download(out)
			if e := testref.RelErr(got, ref[c.Name+"/out"]); e > 1e-4 {
				t.Errorf("%s (BFL names): relative error %.3g > 1e-4", c.Name, e)
			} else {
				t.Logf("%s (BFL names): relative error %.3g", c.Name, e)
			}
		}
	}
}
