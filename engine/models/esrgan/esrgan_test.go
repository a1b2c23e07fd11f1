package esrgan

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// fixtureCases are the nets of tools/reference/gen_upscaler_fixtures.py
// with the configuration each must be read as.
var fixtureCases = []struct {
	name string
	want Config
}{
	{"esrgan_old_x4", Config{Arch: RRDB, InChannels: 3, OutChannels: 3, Scale: 4, Features: 8, Blocks: 2, Growth: 4, Unshuffle: 1}},
	{"esrgan_old_x2", Config{Arch: RRDB, InChannels: 3, OutChannels: 3, Scale: 2, Features: 8, Blocks: 2, Growth: 4, Unshuffle: 1}},
	{"rrdb_x4", Config{Arch: RRDB, InChannels: 3, OutChannels: 3, Scale: 4, Features: 8, Blocks: 2, Growth: 4, Unshuffle: 1}},
	{"rrdb_x2", Config{Arch: RRDB, InChannels: 3, OutChannels: 3, Scale: 2, Features: 8, Blocks: 2, Growth: 4, Unshuffle: 2}},
	{"rrdb_x1", Config{Arch: RRDB, InChannels: 3, OutChannels: 3, Scale: 1, Features: 8, Blocks: 2, Growth: 4, Unshuffle: 4}},
	{"compact_x4", Config{Arch: Compact, InChannels: 3, OutChannels: 3, Scale: 4, Features: 8, Blocks: 3, Unshuffle: 1}},
	{"compact_x2", Config{Arch: Compact, InChannels: 3, OutChannels: 3, Scale: 2, Features: 8, Blocks: 3, Unshuffle: 1}},
}

func load(t testing.TB, path string) *Net {
	t.Helper()
	m, err := weights.OpenUpscaler(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	n, err := Load(m, cpu.New())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// TestReference runs each tiny net of spandrel's definitions on the
// fixture input and compares with spandrel's float32 output.
func TestReference(t *testing.T) {
	if !testref.Exists("upscale", "cases.safetensors") {
		t.Skip("no fixtures in testdata/reference/upscale (run tools/reference/gen_upscaler_fixtures.py)")
	}
	ref := testref.Tensors(t, "upscale/cases.safetensors")
	in := ref["input"]
	const h, w = 17, 22
	for _, c := range fixtureCases {
		t.Run(c.name, func(t *testing.T) {
			n := load(t, testref.Path("upscale", c.name+".safetensors"))
			if n.Config != c.want {
				t.Fatalf("config %+v, want %+v", n.Config, c.want)
			}
			orig := slices.Clone(in)
			got, err := n.Run(context.Background(), cpu.New(), in, h, w)
			if err != nil {
				t.Fatal(err)
			}
			want := ref[c.name+"/output"]
			rel, maxAbs := testref.RelErr(got, want), maxAbsDiff(got, want)
			t.Logf("%s: relative L2 error %.2e, max abs %.2e", n.Config, rel, maxAbs)
			if rel > 1e-4 || maxAbs > 1e-4 {
				t.Errorf("relative error %.3g, max abs %.3g (want <= 1e-4)", rel, maxAbs)
			}
			if !slices.Equal(in, orig) {
				t.Error("the input changed")
			}
		})
	}
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// TestPthTwin loads torch.save({"params_ema": state_dict}) and checks
// that it holds exactly its .safetensors twin's tensors.
func TestPthTwin(t *testing.T) {
	if !testref.Exists("upscale", "rrdb_x4.pth") {
		t.Skip("no fixtures in testdata/reference/upscale")
	}
	p, err := weights.OpenUpscaler(testref.Path("upscale", "rrdb_x4.pth"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := weights.OpenUpscaler(testref.Path("upscale", "rrdb_x4.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !slices.Equal(p.Names(), s.Names()) {
		t.Fatalf("names differ: %v vs %v", p.Names(), s.Names())
	}
	for _, n := range s.Names() {
		a, _ := p.Raw(n)
		b, _ := s.Raw(n)
		pi, _ := p.Info(n)
		si, _ := s.Info(n)
		if !bytes.Equal(a, b) || pi.DType != si.DType || !pi.Shape.Equal(si.Shape) {
			t.Errorf("%s differs", n)
		}
	}
}

// shapeSource is a Source of shapes only, for configuration tests of
// real-size models.
type shapeSource map[string][]int

func (s shapeSource) Names() []string {
	var out []string
	for n := range s {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
func (s shapeSource) Info(n string) (weights.TensorInfo, bool) {
	sh, ok := s[n]
	return weights.TensorInfo{Name: n, DType: tensor.F32, Shape: sh}, ok
}
func (s shapeSource) Raw(string) ([]byte, error)        { return nil, errors.New("shapes only") }
func (s shapeSource) Float32(string) ([]float32, error) { return nil, errors.New("shapes only") }
func (s shapeSource) Close() error                      { return nil }

// oldRRDB returns the old ESRGAN layout's names and shapes.
func oldRRDB(in, nf, nb, gc, ups int) map[string][]int {
	m := map[string][]int{}
	conv := func(name string, o, i int) {
		m[name+".weight"] = []int{o, i, 3, 3}
		m[name+".bias"] = []int{o}
	}
	conv("model.0", nf, in)
	for b := range nb {
		for r := 1; r <= 3; r++ {
			for c := 1; c <= 5; c++ {
				o := gc
				if c == 5 {
					o = nf
				}
				conv(fmt.Sprintf("model.1.sub.%d.RDB%d.conv%d.0", b, r, c), o, nf+(c-1)*gc)
			}
		}
	}
	conv(fmt.Sprintf("model.1.sub.%d", nb), nf, nf)
	for k := 1; k <= ups; k++ {
		conv(fmt.Sprintf("model.%d", 3*k), nf, nf)
	}
	conv(fmt.Sprintf("model.%d", 3*ups+2), nf, nf)
	conv(fmt.Sprintf("model.%d", 3*ups+4), 3, nf)
	return m
}

// renamed applies keymap.Upscaler to a shape table.
func renamed(t *testing.T, m map[string][]int) shapeSource {
	t.Helper()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	rs, err := keymap.Upscaler(names)
	if err != nil {
		t.Fatal(err)
	}
	out := shapeSource{}
	for _, r := range rs {
		out[r.To] = m[r.From]
	}
	return out
}

// TestConfigRealSizes reads the configurations of released models from
// their shapes: ESRGAN / 4x-UltraSharp (old layout), RealESRGAN_x4plus,
// x2plus (pixel unshuffle), anime_6B, BSRGAN, realesr-general-x4v3.
func TestConfigRealSizes(t *testing.T) {
	newLayout := func(in, nb, ups int, bsr bool) map[string][]int {
		old := oldRRDB(in, 64, nb, 32, ups)
		names := make([]string, 0, len(old))
		for n := range old {
			names = append(names, n)
		}
		rs, _ := keymap.Upscaler(names)
		out := map[string][]int{}
		for _, r := range rs {
			to := r.To
			if bsr {
				to = strings.NewReplacer("body.", "RRDB_trunk.", "rdb", "RDB", "conv_body", "trunk_conv", "conv_up", "upconv", "conv_hr", "HRconv").Replace(to)
			}
			out[to] = old[r.From]
		}
		return out
	}
	compact := map[string][]int{}
	for i := range 34 {
		o, c := 64, 64
		if i == 0 {
			c = 3
		}
		if i == 33 {
			o = 48
		}
		compact[fmt.Sprintf("body.%d.weight", 2*i)] = []int{o, c, 3, 3}
		compact[fmt.Sprintf("body.%d.bias", 2*i)] = []int{o}
		if i < 33 {
			compact[fmt.Sprintf("body.%d.weight", 2*i+1)] = []int{64}
		}
	}
	cases := []struct {
		name  string
		src   map[string][]int
		want  Config
		model string
	}{
		{"4x-UltraSharp (old)", oldRRDB(3, 64, 23, 32, 2), Config{RRDB, 3, 3, 4, 64, 23, 32, 1}, "RRDBNet 4× (nf 64, nb 23, gc 32)"},
		{"RealESRGAN_x4plus", newLayout(3, 23, 2, false), Config{RRDB, 3, 3, 4, 64, 23, 32, 1}, ""},
		{"RealESRGAN_x2plus", newLayout(12, 23, 2, false), Config{RRDB, 3, 3, 2, 64, 23, 32, 2}, "RRDBNet 2× (nf 64, nb 23, gc 32, pixel-unshuffle 2)"},
		{"anime_6B", newLayout(3, 6, 2, false), Config{RRDB, 3, 3, 4, 64, 6, 32, 1}, ""},
		{"BSRGAN", newLayout(3, 23, 2, true), Config{RRDB, 3, 3, 4, 64, 23, 32, 1}, ""},
		{"8x old", oldRRDB(3, 64, 23, 32, 3), Config{RRDB, 3, 3, 8, 64, 23, 32, 1}, ""},
		{"realesr-general-x4v3", compact, Config{Compact, 3, 3, 4, 64, 32, 0, 1}, "SRVGGNetCompact 4× (64 features, 32 convolutions)"},
	}
	for _, c := range cases {
		got, err := ConfigFromWeights(renamed(t, c.src))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		if c.model != "" && got.String() != c.model {
			t.Errorf("%s: %q, want %q", c.name, got, c.model)
		}
	}
	plus := oldRRDB(3, 64, 1, 32, 2)
	plus["model.1.sub.0.RDB1.conv1x1.weight"] = []int{32, 64, 1, 1}
	if _, err := ConfigFromWeights(renamed(t, plus)); err == nil || !strings.Contains(err.Error(), "ESRGAN+") {
		t.Errorf("ESRGAN+: %v", err)
	}
	if _, err := ConfigFromWeights(shapeSource{"x.weight": {3}}); err == nil || !strings.Contains(err.Error(), `not an upscaler darkroom knows (ESRGAN / Real-ESRGAN RRDBNet, SRVGGNetCompact): 1 tensors such as "x.weight"`) {
		t.Errorf("unknown: %v", err)
	}
}

// writeRandom writes a random net of the shapes in m (He-initialised
// convolutions, small biases, PReLU slopes in 0.05..0.4) to a file.
func writeRandom(t testing.TB, m map[string][]int, seed uint64) string {
	return writeScaled(t, m, seed, "", 1, 0)
}

// writeScaled is writeRandom with the convolution last (its name without
// ".weight") multiplied by mul and add added to its bias.
func writeScaled(t testing.TB, m map[string][]int, seed uint64, last string, mul, add float64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	ts := map[string]safetensors.Tensor{}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names) // the same values for a seed on every run
	for _, name := range names {
		sh := m[name]
		n := tensor.Shape(sh).NumElements()
		b := make([]byte, 4*n)
		for i := range n {
			var v float64
			switch {
			case len(sh) == 4:
				v = r.NormFloat64() * math.Sqrt(2/float64(sh[1]*9))
			case strings.HasSuffix(name, "bias"):
				v = 0.02 * r.NormFloat64()
			default:
				v = 0.05 + 0.35*r.Float64()
			}
			switch name {
			case last + ".weight":
				v *= mul
			case last + ".bias":
				v = v*mul + add
			}
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(v)))
		}
		ts[name] = safetensors.Tensor{DType: tensor.F32, Shape: sh, Data: b}
	}
	p := filepath.Join(t.TempDir(), fmt.Sprintf("net%g.safetensors", mul))
	if err := safetensors.Write(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// calibrated writes a random net whose last convolution is rescaled so
// that on img the output varies by about 0.2 around 0.5 (RRDBNet), or
// the residual over the nearest-upsampled input by about 0.15
// (SRVGGNetCompact): outputs that are neither flat nor clamped away.
func calibrated(t testing.TB, m map[string][]int, seed uint64, last string, img []float32, h, w int) *Net {
	t.Helper()
	n := load(t, writeRandom(t, m, seed))
	out, err := n.Run(context.Background(), cpu.New(), img, h, w)
	if err != nil {
		t.Fatal(err)
	}
	s := n.Config.Scale
	if n.Config.Arch == Compact {
		for i := range out {
			x, y, ch := i%(w*s), (i/(w*s))%(h*s), i/(w*s*h*s)
			out[i] -= img[(ch*h+y/s)*w+x/s]
		}
	}
	var sum, sq float64
	for _, v := range out {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	mean := sum / float64(len(out))
	std := math.Sqrt(sq/float64(len(out)) - mean*mean)
	if n.Config.Arch == Compact {
		return load(t, writeScaled(t, m, seed, last, 0.15/std, 0))
	}
	mul := 0.2 / std
	return load(t, writeScaled(t, m, seed, last, mul, 0.5-mean*mul))
}

func testImage(c, h, w int) []float32 {
	r := rand.New(rand.NewPCG(3, 3))
	img := make([]float32, c*h*w)
	for ch := range c {
		for y := range h {
			for x := range w {
				v := 0.5 + 0.35*math.Sin(float64(x)/5+float64(ch))*math.Cos(float64(y)/7) + 0.08*r.NormFloat64()
				img[(ch*h+y)*w+x] = float32(min(max(v, 0), 1))
			}
		}
	}
	return img
}

// TestTiledMatchesWhole upscales an image in overlapping tiles and whole
// and asks for at least 45 dB between them, for RRDBNet ×4, ×2 with pixel
// unshuffle and SRVGGNetCompact.
func TestTiledMatchesWhole(t *testing.T) {
	compact := map[string][]int{}
	for i := range 5 {
		o, c := 16, 16
		if i == 0 {
			c = 3
		}
		if i == 4 {
			o = 48
		}
		compact[fmt.Sprintf("body.%d.weight", 2*i)] = []int{o, c, 3, 3}
		compact[fmt.Sprintf("body.%d.bias", 2*i)] = []int{o}
		if i < 4 {
			compact[fmt.Sprintf("body.%d.weight", 2*i+1)] = []int{16}
		}
	}
	nets := []struct {
		name, last string
		m          map[string][]int
	}{
		{"rrdb x4", "model.10", oldRRDB(3, 8, 2, 4, 2)},
		{"rrdb x2 u2", "model.10", oldRRDB(12, 8, 2, 4, 2)},
		{"compact x4", "body.8", compact},
	}
	const h, w = 61, 83
	img := testImage(3, h, w)
	dev := cpu.New()
	for _, c := range nets {
		t.Run(c.name, func(t *testing.T) {
			n := calibrated(t, c.m, 5, c.last, img, h, w)
			whole, err := n.Upscale(context.Background(), dev, img, h, w, Tiling{})
			if err != nil {
				t.Fatal(err)
			}
			tiles := 0
			tiled, err := n.Upscale(context.Background(), dev, img, h, w, Tiling{Tile: 40, Overlap: 16, OnTile: func(done, total int) { tiles = total }})
			if err != nil {
				t.Fatal(err)
			}
			clamp := func(v []float32) []float32 {
				out := make([]float32, len(v))
				for i, x := range v {
					out[i] = min(max(x, 0), 1)
				}
				return out
			}
			psnr := testref.PSNR(clamp(tiled), clamp(whole))
			t.Logf("%s, %d tiles: %.1f dB", n.Config, tiles, psnr)
			if tiles < 6 || psnr < 45 {
				t.Errorf("%d tiles, %.1f dB (want several tiles and >= 45 dB)", tiles, psnr)
			}
		})
	}
}

// TestCancel checks that a cancelled context stops a tiled upscale.
func TestCancel(t *testing.T) {
	n := load(t, writeRandom(t, oldRRDB(3, 8, 1, 4, 1), 9))
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := n.Upscale(ctx, cpu.New(), testImage(3, 40, 40), 40, 40, Tiling{Tile: 16, Overlap: 4, OnTile: func(int, int) { calls++; cancel() }})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("err %v after %d tiles, want context.Canceled after 1", err, calls)
	}
}
