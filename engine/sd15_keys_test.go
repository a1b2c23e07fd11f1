package engine

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/families/sd1"
	"github.com/darkroom-ai/darkroom/engine/family"
	"github.com/darkroom-ai/darkroom/engine/models/clip"
	"github.com/darkroom-ai/darkroom/engine/models/unet"
	"github.com/darkroom-ai/darkroom/engine/models/vae"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// shapeSource is a weights.Source that knows names and shapes only (the
// SD1.5 key lists in engine/weights/keymap/testdata); Raw returns nil.
type shapeSource struct{ infos map[string]weights.TensorInfo }

func (s shapeSource) Names() []string {
	var n []string
	for k := range s.infos {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}
func (s shapeSource) Info(name string) (weights.TensorInfo, bool) {
	i, ok := s.infos[name]
	return i, ok
}
func (s shapeSource) Raw(string) ([]byte, error)        { return nil, nil }
func (s shapeSource) Float32(string) ([]float32, error) { return nil, nil }
func (s shapeSource) Close() error                      { return nil }

// shapeDevice records uploads without storing anything.
type shapeDevice struct{ backend.Device }

func (shapeDevice) UploadRaw(_ []byte, dt tensor.DType, shape ...int) (*backend.Tensor, error) {
	return &backend.Tensor{Shape: tensor.Shape(shape).Clone(), DType: dt}, nil
}

func readKeys(t *testing.T, src shapeSource, file string) {
	t.Helper()
	f, err := os.Open(filepath.Join("weights", "keymap", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, dims, _ := strings.Cut(line, " ")
		var shape tensor.Shape
		for _, d := range strings.Split(dims, ",") {
			v, err := strconv.Atoi(d)
			if err != nil {
				t.Fatalf("%s: bad line %q", file, line)
			}
			shape = append(shape, v)
		}
		src.infos[name] = weights.TensorInfo{Name: name, DType: tensor.F16, Shape: shape}
	}
}

// TestSD15Layout checks, against the full SD1.5 key list, that the configs
// inferred from shapes are SD1.5's and that loading asks for every tensor of
// the checkpoint and for nothing else.
func TestSD15Layout(t *testing.T) {
	src := shapeSource{infos: map[string]weights.TensorInfo{}}
	for _, f := range []string{"sd15_unet.keys", "sd15_vae.keys", "sd15_clip.keys"} {
		readKeys(t, src, f)
	}
	if _, d, err := family.Detect(family.NewKeys(&weights.Model{Source: src})); err != nil || d.Family != sd1.Name {
		t.Fatalf("family %v (%v)", d, err)
	}
	uc, err := unet.ConfigFromWeights(src, sd1.PrefixUNet)
	if err != nil {
		t.Fatal(err)
	}
	if uc.String() != unet.SD15().String() {
		t.Errorf("unet config\n got %v\nwant %v", uc, unet.SD15())
	}
	vc, err := vae.ConfigFromWeights(src, sd1.PrefixVAE)
	if err != nil {
		t.Fatal(err)
	}
	if vc.String() != sd15VAEWithEncoder().String() {
		t.Errorf("vae config\n got %v\nwant %v", vc, sd15VAEWithEncoder())
	}
	cc, err := clip.ConfigFromWeights(src, sd1.PrefixCLIP)
	if err != nil {
		t.Fatal(err)
	}
	if cc.Width != 768 || cc.Layers != 12 || cc.Heads != 12 || cc.MLP != 3072 || cc.Vocab != 49408 || cc.Positions != 77 {
		t.Errorf("clip config %v", cc)
	}
	b := weights.NewBuilder(src, shapeDevice{})
	clip.Load(b.Sub(strings.TrimSuffix(sd1.PrefixCLIP, ".")), cc)
	unet.Load(b.Sub(strings.TrimSuffix(sd1.PrefixUNet, ".")), uc)
	vae.Load(b.Sub(strings.TrimSuffix(sd1.PrefixVAE, ".")), vc)
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sd1.PrefixUNet, sd1.PrefixVAE, sd1.PrefixCLIP} {
		if u := b.Unused(p); len(u) > 0 {
			t.Errorf("%d tensors under %s not used, e.g. %v", len(u), p, u[:min(3, len(u))])
		}
	}
}

// sd15VAEWithEncoder is the full SD1.x autoencoder configuration.
func sd15VAEWithEncoder() vae.Config {
	c := SD15VAE()
	c.HasEncoder = true
	return c
}
