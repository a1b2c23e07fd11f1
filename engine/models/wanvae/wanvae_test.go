package wanvae_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/wanvae"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// renamed presents src under new names (new → stored).
type renamed struct {
	src    weights.Source
	stored map[string]string
	names  []string
}

func rename(src weights.Source, f func(string) string) *renamed {
	r := &renamed{src: src, stored: map[string]string{}}
	for _, n := range src.Names() {
		to := f(n)
		r.stored[to] = n
		r.names = append(r.names, to)
	}
	slices.Sort(r.names)
	return r
}

func (r *renamed) Names() []string { return r.names }
func (r *renamed) Info(name string) (weights.TensorInfo, bool) {
	info, ok := r.src.Info(r.stored[name])
	info.Name = name
	return info, ok
}
func (r *renamed) Raw(name string) ([]byte, error)        { return r.src.Raw(r.stored[name]) }
func (r *renamed) Float32(name string) ([]float32, error) { return r.src.Float32(r.stored[name]) }
func (r *renamed) Close() error                           { return nil }

// wanName maps a diffusers AutoencoderKLQwenImage name to the original
// Wan 2.1 name ComfyUI's qwen_image_vae.safetensors uses: the inverse of
// diffusers' convert_wan_vae_to_diffusers, for numResBlocks residual
// blocks per encoder level.
func wanName(name string, numResBlocks int) string {
	resPart := func(rest string) string {
		for _, p := range [][2]string{{"norm1.", "residual.0."}, {"conv1.", "residual.2."}, {"norm2.", "residual.3."}, {"conv2.", "residual.6."}, {"conv_shortcut.", "shortcut."}} {
			if r, ok := strings.CutPrefix(rest, p[0]); ok {
				return p[1] + r
			}
		}
		return rest
	}
	switch {
	case strings.HasPrefix(name, "quant_conv."):
		return "conv1." + strings.TrimPrefix(name, "quant_conv.")
	case strings.HasPrefix(name, "post_quant_conv."):
		return "conv2." + strings.TrimPrefix(name, "post_quant_conv.")
	}
	side, rest, _ := strings.Cut(name, ".")
	f := strings.Split(rest, ".")
	tail := func(i int) string { return strings.Join(f[i:], ".") }
	switch f[0] {
	case "conv_in":
		return side + ".conv1." + tail(1)
	case "norm_out":
		return side + ".head.0." + tail(1)
	case "conv_out":
		return side + ".head.2." + tail(1)
	case "mid_block":
		if f[1] == "attentions" {
			return side + ".middle.1." + tail(3)
		}
		return fmt.Sprintf("%s.middle.%d.%s", side, 2*atoi(f[2]), resPart(tail(3)))
	case "down_blocks":
		return side + ".downsamples." + f[1] + "." + resPart(tail(2))
	case "up_blocks":
		i := atoi(f[1])
		if f[2] == "upsamplers" {
			return fmt.Sprintf("%s.upsamples.%d.%s", side, i*(numResBlocks+2)+numResBlocks+1, tail(4))
		}
		return fmt.Sprintf("%s.upsamples.%d.%s", side, i*(numResBlocks+2)+atoi(f[3]), resPart(tail(4)))
	}
	panic("unexpected name " + name)
}

func atoi(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return v
}

// keyList is a real checkpoint's names and shapes, no data.
type keyList map[string]weights.TensorInfo

func (k keyList) Names() []string {
	var out []string
	for n := range k {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
func (k keyList) Info(name string) (weights.TensorInfo, bool) { i, ok := k[name]; return i, ok }
func (k keyList) Raw(string) ([]byte, error)                  { return nil, nil }
func (k keyList) Float32(string) ([]float32, error) {
	return nil, fmt.Errorf("a key list holds no data")
}
func (k keyList) Close() error { return nil }

func readKeyList(t *testing.T, file, part string) keyList {
	t.Helper()
	kl, err := weights.ReadKeyList(file)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := kl.Files[part]
	if !ok {
		t.Fatalf("%s has no %s", file, part)
	}
	out := keyList{}
	for name, pair := range f.Tensors {
		var dt string
		var shape []int
		if err := json.Unmarshal(pair[0], &dt); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(pair[1], &shape); err != nil {
			t.Fatal(err)
		}
		d, err := tensor.ParseDType(dt)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = weights.TensorInfo{Name: name, DType: d, Shape: shape}
	}
	return out
}

// load builds the model from src under prefix on dev, requiring that it
// uses every tensor.
func load(t *testing.T, src weights.Source, prefix string, dev backend.Device) *wanvae.Model {
	t.Helper()
	c, err := wanvae.ConfigFromWeights(src, prefix)
	if err != nil {
		t.Fatal(err)
	}
	b := weights.NewBuilder(src, dev)
	m := wanvae.Load(b.Sub(strings.TrimSuffix(prefix, ".")), c)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	if unused := b.Unused(prefix); len(unused) > 0 {
		t.Fatalf("%d unused tensors: %v", len(unused), unused)
	}
	return m
}

// TestLoadRealKeyList loads Qwen-Image's released VAE (the key list of
// Qwen/Qwen-Image's vae/ folder) in diffusers' names and, renamed, in the
// Wan names of ComfyUI's qwen_image_vae.safetensors, with a prefix, on a
// device that stores nothing: no tensor missing, misshaped or unused.
func TestLoadRealKeyList(t *testing.T) {
	kl := readKeyList(t, "../../../testdata/keyshapes/qwen-image.diffusers.json.gz", "vae/diffusion_pytorch_model.safetensors")
	decoderOnly := keyList{}
	for n, info := range kl {
		if !strings.HasPrefix(n, "encoder.") && !strings.HasPrefix(n, "quant_conv.") {
			decoderOnly[n] = info
		}
	}
	const want = "base 96 × [1 2 4 4], 2 res blocks/level, 16 latent channels, factor 8, temporal downsample [false true true], "
	for _, tc := range []struct {
		name   string
		src    weights.Source
		prefix string
		layout string
	}{
		{"diffusers", kl, "", "diffusers names"},
		{"wan", rename(kl, func(n string) string { return wanName(n, 2) }), "", "Wan names"},
		{"wan prefixed", rename(kl, func(n string) string { return "vae." + wanName(n, 2) }), "vae.", "Wan names"},
		{"diffusers decoder only", decoderOnly, "", "diffusers names, decoder only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := load(t, tc.src, tc.prefix, testref.ShapeDevice{})
			if got := m.Config.String(); got != want+tc.layout {
				t.Errorf("config\n got %s\nwant %s", got, want+tc.layout)
			}
		})
	}
}

// TestConfigErrors: a file that is not this VAE is refused with a message
// naming what is missing; a decoder-only model refuses to encode.
func TestConfigErrors(t *testing.T) {
	kl := readKeyList(t, "../../../testdata/keyshapes/qwen-image.diffusers.json.gz", "vae/diffusion_pytorch_model.safetensors")
	if _, err := wanvae.ConfigFromWeights(kl, "vae."); err == nil || !strings.Contains(err.Error(), "vae.decoder.conv_in.weight") {
		t.Errorf("wrong prefix: %v", err)
	}
	dec := keyList{}
	for n, info := range kl {
		if !strings.HasPrefix(n, "encoder.") {
			dec[n] = info
		}
	}
	c, err := wanvae.ConfigFromWeights(dec, "")
	if err != nil {
		t.Fatal(err)
	}
	m := wanvae.Load(weights.NewBuilder(dec, testref.ShapeDevice{}), c)
	if _, err := m.Encode(t.Context(), testref.ShapeDevice{}, &backend.Tensor{Shape: []int{1, 3, 64, 64}}); err == nil || !strings.Contains(err.Error(), "no encoder") {
		t.Errorf("decoder-only encode: %v", err)
	}
}
