package weights

import (
	"fmt"
	"sort"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// fakeSource is a Source with names and shapes only.
type fakeSource map[string]tensor.Shape

var _ Source = fakeSource(nil)

func (f fakeSource) Names() []string {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
func (f fakeSource) Info(name string) (TensorInfo, bool) {
	s, ok := f[name]
	return TensorInfo{Name: name, DType: tensor.F16, Shape: s}, ok
}
func (f fakeSource) Raw(name string) ([]byte, error)        { return nil, fmt.Errorf("fake") }
func (f fakeSource) Float32(name string) ([]float32, error) { return nil, fmt.Errorf("fake") }
func (f fakeSource) Close() error                           { return nil }

func keys(names ...string) fakeSource {
	f := fakeSource{}
	for _, n := range names {
		f[n] = tensor.Shape{4}
	}
	return f
}

func (f fakeSource) with(name string, shape ...int) fakeSource {
	f[name] = shape
	return f
}

const (
	kUNet    = "model.diffusion_model.input_blocks.0.0.weight"
	kAttn2K  = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
	kCLIP    = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
	kOpenCLI = "cond_stage_model.model.ln_final.weight"
	kLabel   = "model.diffusion_model.label_emb.0.0.weight"
	kEmb0HF  = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
	kEmb0OC  = "conditioner.embedders.0.model.ln_final.weight"
	kEmb1    = "conditioner.embedders.1.model.ln_final.weight"
	kJoint   = "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight"
	kDouble  = "double_blocks.0.img_attn.qkv.weight"
	kSingle  = "single_blocks.0.linear1.weight"
)

func TestProbeSD1(t *testing.T) {
	src := keys(kUNet, kCLIP, "first_stage_model.decoder.conv_in.weight").with(kAttn2K, 320, 768)
	d := DetectFamily(src)
	if d.Family != FamilySD1 || d.Key != kCLIP {
		t.Errorf("got %v", d)
	}
	if err := d.Supported(); err != nil {
		t.Errorf("Supported() = %v", err)
	}
	// The tiny reference model has a 64-wide context: still SD1.
	if d := DetectFamily(keys(kUNet, kCLIP).with(kAttn2K, 32, 64)); d.Family != FamilySD1 {
		t.Errorf("context 64: got %v", d)
	}
}

func TestProbeSD2(t *testing.T) {
	cases := map[string]struct {
		src fakeSource
		key string
	}{
		"openclip":     {keys(kUNet, kOpenCLI).with(kAttn2K, 320, 1024), kOpenCLI},
		"context 1024": {keys(kUNet, kCLIP).with(kAttn2K, 320, 1024), kAttn2K},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := DetectFamily(c.src)
			if d.Family != FamilySD2 || d.Key != c.key {
				t.Errorf("got %v, want SD2.x via %q", d, c.key)
			}
			want := fmt.Sprintf("looks like SD2.x (found key %q); SD2.x is not supported yet", c.key)
			if err := d.Supported(); err == nil || err.Error() != want {
				t.Errorf("Supported() = %v, want %s", err, want)
			}
		})
	}
}

func TestProbeSDXL(t *testing.T) {
	d := DetectFamily(keys(kUNet, kLabel, kEmb0HF, kEmb1).with(kAttn2K, 640, 2048))
	if d.Family != FamilySDXL || d.Key != kEmb1 {
		t.Errorf("got %v", d)
	}
	want := `looks like SDXL (found key "conditioner.embedders.1.model.ln_final.weight"); SDXL is not supported yet`
	if err := d.Supported(); err == nil || err.Error() != want {
		t.Errorf("Supported() = %v", err)
	}
}

func TestProbeSDXLRefiner(t *testing.T) {
	d := DetectFamily(keys(kUNet, kLabel, kEmb0OC).with(kAttn2K, 384, 1280))
	if d.Family != FamilySDXLRefiner || d.Key != kEmb0OC {
		t.Errorf("got %v", d)
	}
}

func TestProbeSD3(t *testing.T) {
	d := DetectFamily(keys(kJoint, "model.diffusion_model.x_embedder.proj.weight", "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"))
	if d.Family != FamilySD3 || d.Key != kJoint {
		t.Errorf("got %v", d)
	}
}

func TestProbeFlux(t *testing.T) {
	for _, prefix := range []string{"", "model.diffusion_model."} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			d := DetectFamily(keys(prefix+kDouble, prefix+kSingle, prefix+"img_in.weight"))
			if d.Family != FamilyFlux || d.Key != prefix+kDouble {
				t.Errorf("got %v", d)
			}
		})
	}
}

func TestProbeUnknown(t *testing.T) {
	cases := map[string]struct {
		src    fakeSource
		reason string
	}{
		"empty":       {keys(), "no known key pattern"},
		"vae only":    {keys("first_stage_model.decoder.conv_in.weight"), "no known key pattern"},
		"unet only":   {keys(kUNet), "no known key pattern"},
		"taesd":       {keys("decoder.layers.0.weight"), "no known key pattern"},
		"double only": {keys(kDouble), "no known key pattern"},
		"ambiguous":   {keys(kJoint, kDouble, kSingle), `ambiguous: SD3 (found key "` + kJoint + `"), Flux (found key "` + kDouble + `")`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := DetectFamily(c.src)
			if d.Family != FamilyUnknown || d.Reason != c.reason {
				t.Errorf("got %+v, want unknown (%s)", d, c.reason)
			}
			if err := d.Supported(); err == nil {
				t.Error("Supported() = nil for an unknown family")
			}
		})
	}
}
