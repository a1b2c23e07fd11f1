package flux_test

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/models/flux"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// The tiny FluxTransformer2DModels of tools/reference/gen_flux_fixtures.py.
const fixture = "flux-tiny"

type fluxCase struct {
	Name       string    `json:"name"`
	Model      string    `json:"model"`
	Batch      int       `json:"batch"`
	H          int       `json:"latent_h"`
	W          int       `json:"latent_w"`
	TextTokens int       `json:"text_tokens"`
	Timesteps  []float32 `json:"timesteps"`
	Guidance   []float32 `json:"guidance"`
	IDs        string    `json:"ids"`
}

func loadCases(t *testing.T) ([]fluxCase, map[string][]float32) {
	t.Helper()
	if !testref.Exists(fixture, "cases.json") {
		t.Skipf("testdata/reference/%s absent: make it with tools/reference/gen_flux_fixtures.py", fixture)
	}
	data, err := os.ReadFile(testref.Path(fixture, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []fluxCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("cases.json: %v", err)
	}
	return f.Cases, testref.Tensors(t, fixture+"/cases.safetensors")
}

func open(t *testing.T, model string) *safetensors.File {
	t.Helper()
	src, err := safetensors.Open(testref.Path(fixture, model+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func load(t *testing.T, src weights.Source, dev backend.Device, guidance bool) *flux.Model {
	t.Helper()
	cfg, err := flux.ConfigFromWeights(src, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != 32 || cfg.Heads != 2 || cfg.HeadDim != 16 || cfg.Layers != 2 || cfg.SingleLayers != 2 ||
		cfg.InChannels != 64 || cfg.OutChannels != 64 || cfg.JointDim != 32 || cfg.PooledDim != 24 ||
		cfg.TimeDim != 256 || cfg.MLP != 128 || cfg.Guidance != guidance || cfg.AxesDim != nil {
		t.Fatalf("config %v", cfg)
	}
	cfg.AxesDim = []int{4, 6, 6}
	b := weights.NewBuilder(src, dev)
	m, err := flux.Load(b, dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if unused := b.Unused(""); len(unused) > 0 {
		t.Errorf("unused tensors: %v", unused)
	}
	return m
}

func ids(v []float32) [][3]float32 {
	out := make([][3]float32, len(v)/3)
	for i := range out {
		out[i] = [3]float32{v[3*i], v[3*i+1], v[3*i+2]}
	}
	return out
}

func TestTransformerMatchesDiffusers(t *testing.T) {
	cases, ref := loadCases(t)
	dev := cpu.New()
	models := map[string]*flux.Model{
		"dev":     load(t, open(t, "dev"), dev, true),
		"schnell": load(t, open(t, "schnell"), dev, false),
	}
	for _, c := range cases {
		m := models[c.Model]
		g := func(k string) []float32 {
			v, ok := ref[c.Name+"/"+k]
			if !ok {
				t.Fatalf("fixture has no %s/%s", c.Name, k)
			}
			return v
		}
		n := c.H / 2 * c.W / 2
		img := dev.Upload(g("hidden_states"), c.Batch, n, 64)
		txt := dev.Upload(g("encoder_hidden_states"), c.Batch, c.TextTokens, 32)
		pooled := dev.Upload(g("pooled"), c.Batch, 24)
		out, err := m.Forward(context.Background(), dev, img, txt, pooled, c.Timesteps, c.Guidance,
			ids(g("img_ids")), ids(g("txt_ids")))
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		got, err := dev.Download(out)
		if err != nil {
			t.Fatal(err)
		}
		if e := testref.RelErr(got, g("out")); e > 1e-4 {
			t.Errorf("%s: relative error %.3g > 1e-4", c.Name, e)
		} else {
			t.Logf("%s (%d×%d image + %d text tokens): relative error %.3g", c.Name, c.Batch, n, c.TextTokens, e)
		}
	}
}

func TestRopeMatchesDiffusers(t *testing.T) {
	_, ref := loadCases(t)
	all := append(ids(ref["dev_a/txt_ids"]), ids(ref["dev_a/img_ids"])...)
	cos, sin := flux.Rope(all, []int{4, 6, 6})
	if e := testref.RelErr(cos, ref["dev_a/rope_cos"]); e > 1e-6 {
		t.Errorf("cos: relative error %.3g", e)
	}
	if e := testref.RelErr(sin, ref["dev_a/rope_sin"]); e > 1e-6 {
		t.Errorf("sin: relative error %.3g", e)
	}
}

func TestPackMatchesPipeline(t *testing.T) {
	cases, ref := loadCases(t)
	dev := cpu.New()
	for _, c := range cases {
		lat := dev.Upload(ref[c.Name+"/latent"], c.Batch, 16, c.H, c.W)
		p, err := flux.Pack(dev, lat)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := dev.Download(p)
		if !slices.Equal(got, ref[c.Name+"/hidden_states"]) {
			t.Errorf("%s: Pack differs from _pack_latents", c.Name)
		}
		n := c.H / 2 * c.W / 2
		u, err := flux.Unpack(dev, dev.Upload(ref[c.Name+"/out"], c.Batch, n, 64), c.H, c.W)
		if err != nil {
			t.Fatal(err)
		}
		got, _ = dev.Download(u)
		if !slices.Equal(got, ref[c.Name+"/out_unpacked"]) {
			t.Errorf("%s: Unpack differs from _unpack_latents", c.Name)
		}
		if c.IDs == "pipeline" {
			want := ids(ref[c.Name+"/img_ids"])
			if !slices.Equal(flux.ImageIDs(c.H, c.W), want) {
				t.Errorf("%s: ImageIDs differ from _prepare_latent_image_ids", c.Name)
			}
			if !slices.Equal(flux.TextIDs(c.TextTokens), ids(ref[c.Name+"/txt_ids"])) {
				t.Errorf("%s: TextIDs differ", c.Name)
			}
		}
	}
	if _, err := flux.Pack(dev, dev.Upload(make([]float32, 16*3*4), 1, 16, 3, 4)); err == nil {
		t.Error("Pack of an odd height: no error")
	}
	if _, err := flux.Unpack(dev, dev.Upload(make([]float32, 4*64), 1, 4, 64), 4, 6); err == nil {
		t.Error("Unpack to the wrong size: no error")
	}
}

// without hides one tensor of a Source.
type without struct {
	weights.Source
	name string
}

func (w without) Info(name string) (weights.TensorInfo, bool) {
	if name == w.name {
		return weights.TensorInfo{}, false
	}
	return w.Source.Info(name)
}

func (w without) Names() []string {
	return slices.DeleteFunc(w.Source.Names(), func(n string) bool { return n == w.name })
}

func oneLine(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: error spans lines: %q", what, err)
	}
	t.Logf("%s: %v", what, err)
}

func TestBadInput(t *testing.T) {
	dev := cpu.New()
	if !testref.Exists(fixture, "dev.safetensors") {
		t.Skip("fixture absent")
	}
	src := open(t, "dev")
	m := load(t, src, dev, true)
	img := dev.Upload(make([]float32, 16*64), 1, 16, 64)
	txt := dev.Upload(make([]float32, 7*32), 1, 7, 32)
	pooled := dev.Upload(make([]float32, 24), 1, 24)
	ctx := context.Background()
	ii, ti := flux.ImageIDs(8, 8), flux.TextIDs(7)
	call := func(img, txt, pooled *backend.Tensor, ts, g []float32, ii, ti [][3]float32) error {
		_, err := m.Forward(ctx, dev, img, txt, pooled, ts, g, ii, ti)
		return err
	}
	if err := call(img, txt, pooled, []float32{1}, []float32{3.5}, ii, ti); err != nil {
		t.Fatalf("good input: %v", err)
	}
	oneLine(t, "image width", call(dev.Upload(make([]float32, 16*60), 1, 16, 60), txt, pooled, []float32{1}, []float32{3.5}, ii, ti))
	oneLine(t, "text width", call(img, dev.Upload(make([]float32, 7*30), 1, 7, 30), pooled, []float32{1}, []float32{3.5}, ii, ti))
	oneLine(t, "text batch", call(img, dev.Upload(make([]float32, 2*7*32), 2, 7, 32), pooled, []float32{1}, []float32{3.5}, ii, ti))
	oneLine(t, "pooled", call(img, txt, dev.Upload(make([]float32, 20), 1, 20), []float32{1}, []float32{3.5}, ii, ti))
	oneLine(t, "timesteps", call(img, txt, pooled, []float32{1, 2}, []float32{3.5}, ii, ti))
	oneLine(t, "no guidance", call(img, txt, pooled, []float32{1}, nil, ii, ti))
	oneLine(t, "image ids", call(img, txt, pooled, []float32{1}, []float32{3.5}, ii[:3], ti))
	oneLine(t, "text ids", call(img, txt, pooled, []float32{1}, []float32{3.5}, ii, ti[:2]))
	oneLine(t, "nil", call(nil, txt, pooled, []float32{1}, []float32{3.5}, ii, ti))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := m.Forward(cctx, dev, img, txt, pooled, []float32{1}, []float32{3.5}, ii, ti)
	oneLine(t, "cancelled", err)

	schnell := load(t, open(t, "schnell"), dev, false)
	_, err = schnell.Forward(ctx, dev, img, txt, pooled, []float32{1}, []float32{3.5}, ii, ti)
	oneLine(t, "guidance for schnell", err)

	cfg, _ := flux.ConfigFromWeights(src, "")
	_, err = flux.Load(weights.NewBuilder(src, dev), dev, cfg)
	oneLine(t, "no axes", err)
	cfg.AxesDim = []int{4, 6, 4}
	_, err = flux.Load(weights.NewBuilder(src, dev), dev, cfg)
	oneLine(t, "axes sum", err)
	cfg.AxesDim = []int{4, 6, 6}
	_, err = flux.Load(weights.NewBuilder(without{src, "transformer_blocks.1.attn.norm_added_k.weight"}, dev), dev, cfg)
	oneLine(t, "missing tensor", err)
	_, err = flux.ConfigFromWeights(without{src, "x_embedder.weight"}, "")
	oneLine(t, "no x_embedder", err)
	_, err = flux.ConfigFromWeights(src, "model.diffusion_model.")
	oneLine(t, "wrong prefix", err)
}
