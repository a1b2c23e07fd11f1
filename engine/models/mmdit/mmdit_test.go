package mmdit

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// load opens one file of the tiny SD3 fixtures and builds its transformer.
func load(t *testing.T, prefix string, path ...string) *Model {
	t.Helper()
	if !testref.Exists(path...) {
		t.Skip("no sd3 fixtures")
	}
	f, err := weights.OpenFile(testref.Path(path...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := ConfigFromWeights(f, prefix)
	if err != nil {
		t.Fatal(err)
	}
	b := weights.NewBuilder(f, cpu.New())
	m, err := Load(b.Sub(strings.TrimSuffix(prefix, ".")), cpu.New(), c)
	if err != nil {
		t.Fatal(err)
	}
	if u := b.Unused(prefix); len(u) > 0 {
		t.Fatalf("unused tensors %v", u)
	}
	return m
}

// TestLayoutsAgree loads the tiny SD3-style model (no query/key norms) from
// diffusers' names and from Stability's bare names (fused qkv, (shift,
// scale) halves of the last adaLN layers): the configurations match and
// the predictions are bit-identical, with and without skipped blocks.
func TestLayoutsAgree(t *testing.T) {
	d := load(t, "", "sd3", "sd3", "transformer", "diffusion_pytorch_model.safetensors")
	n := load(t, "", "sd3", "single", "sd3_tiny_mmdit.safetensors")
	cd, cn := d.Config, n.Config
	if cd.Native || !cn.Native {
		t.Fatalf("layouts: diffusers native=%v, Stability native=%v", cd.Native, cn.Native)
	}
	cn.Native = false
	if cd.String() != cn.String() || !slices.Equal(cd.Dual, cn.Dual) {
		t.Fatalf("configs differ:\n%v\n%v", cd, cn)
	}
	if cd.HeadDim != DefaultHeadDim || cd.QKNorm != NoQKNorm || cd.Layers != 2 {
		t.Errorf("config %v: want 2 blocks of 64-wide heads without qk norm", cd)
	}
	dev := cpu.New()
	r := rand.New(rand.NewPCG(1, 2))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	c := cd
	x := dev.Upload(randn(2*c.InChannels*6*8), 2, c.InChannels, 6, 8)
	ctx := dev.Upload(randn(2*5*c.JointDim), 2, 5, c.JointDim)
	pooled := dev.Upload(randn(2*c.PooledDim), 2, c.PooledDim)
	for _, skip := range [][]int{nil, {1}} {
		var outs [][]float32
		for _, m := range []*Model{d, n} {
			y, err := m.Forward(context.Background(), dev, x, ctx, pooled, []float32{980, 312.5}, ForwardOptions{Skip: skip})
			if err != nil {
				t.Fatal(err)
			}
			v, _ := dev.Download(y)
			outs = append(outs, v)
		}
		if !slices.Equal(outs[0], outs[1]) {
			t.Errorf("skip %v: predictions differ (relative %.3g)", skip, testref.RelErr(outs[1], outs[0]))
		}
	}
}

// TestForwardErrors: bad shapes and skip layers are one-line errors.
func TestForwardErrors(t *testing.T) {
	m := load(t, "", "sd3", "sd3", "transformer", "diffusion_pytorch_model.safetensors")
	dev := cpu.New()
	c := m.Config
	ok := func(shape ...int) []float32 {
		n := 1
		for _, s := range shape {
			n *= s
		}
		return make([]float32, n)
	}
	x := dev.Upload(ok(1, c.InChannels, 4, 4), 1, c.InChannels, 4, 4)
	odd := dev.Upload(ok(1, c.InChannels, 5, 4), 1, c.InChannels, 5, 4)
	big := dev.Upload(ok(1, c.InChannels, 2*c.PosEmbedMax+2, 2), 1, c.InChannels, 2*c.PosEmbedMax+2, 2)
	ctx := dev.Upload(ok(1, 3, c.JointDim), 1, 3, c.JointDim)
	pooled := dev.Upload(ok(1, c.PooledDim), 1, c.PooledDim)
	for _, tc := range []struct {
		name string
		x    *backend.Tensor
		skip []int
		want string
	}{
		{"odd latent", odd, nil, "multiples of 2"},
		{"too large", big, nil, "larger than the model's"},
		{"bad skip", x, []int{7}, "skip layer 7"},
	} {
		_, err := m.Forward(context.Background(), dev, tc.x, ctx, pooled, []float32{500}, ForwardOptions{Skip: tc.skip})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line with %q", tc.name, err, tc.want)
		}
	}
}
