package family

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// keys builds probe input from names (all of shape [2]).
func keys(t *testing.T, names ...string) *Keys {
	t.Helper()
	files := map[string]weights.KeyListFile{}
	kl := &weights.KeyList{Name: "test", Layout: "single-file", Files: files}
	f := weights.KeyListFile{Tensors: map[string][2]json.RawMessage{}}
	for _, n := range names {
		f.Tensors[n] = [2]json.RawMessage{json.RawMessage(`"F16"`), json.RawMessage(`[2]`)}
	}
	files["x.safetensors"] = f
	m, err := kl.Open()
	if err != nil {
		t.Fatal(err)
	}
	return NewKeys(m)
}

// probeFamily is a family whose probe claims names with a prefix.
type probeFamily struct{ name, prefix string }

func (p probeFamily) Name() string { return p.name }
func (p probeFamily) Probe(k *Keys) (Detection, bool) {
	if key := k.First(p.prefix); key != "" {
		return Detection{Evidence: []string{Key(key)}, Runnable: true}, true
	}
	return Detection{}, false
}
func (p probeFamily) Load(context.Context, *Source, Env) (*Components, error) { return nil, nil }

func withRegistry(t *testing.T, fams ...Family) {
	t.Helper()
	saved := registry.families
	registry.families = nil
	t.Cleanup(func() { registry.families = saved })
	for _, f := range fams {
		Register(f)
	}
}

func TestDetect(t *testing.T) {
	withRegistry(t, probeFamily{"A", "a."}, probeFamily{"B", "b."}, probeFamily{"AB", "a.b."})
	_, d, err := Detect(keys(t, "b.x", "c.y"))
	if err != nil || d.Family != "B" || d.String() != `B (found key "b.x")` {
		t.Errorf("got %v, %v", d, err)
	}
	_, _, err = Detect(keys(t, "c.y", "c.z", "lonely"))
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "3 tensors, names starting c. (2), lonely (1)") {
		t.Errorf("unknown: %v", err)
	}
	_, _, err = Detect(keys(t, "a.b.c"))
	if err == nil || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), `A (found key "a.b.c")`) || !strings.Contains(err.Error(), "AB") {
		t.Errorf("ambiguous: %v", err)
	}
	if names := familyNames(); !slices.Equal(names, []string{"A", "AB", "B"}) {
		t.Errorf("families %v", names)
	}
}

func familyNames() []string {
	var out []string
	for _, f := range Families() {
		out = append(out, f.Name())
	}
	return out
}

func TestRegisterTwicePanics(t *testing.T) {
	withRegistry(t, probeFamily{"A", "a."})
	defer func() {
		if recover() == nil {
			t.Error("registering a name twice did not panic")
		}
	}()
	Register(probeFamily{"A", "b."})
}

func TestRecognisedRefuses(t *testing.T) {
	r := Recognised{FamilyName: "X", Match: func(k *Keys) (Detection, bool) {
		return Detection{Variant: "big", Evidence: []string{Key("x.y")}}, k.Has("x.")
	}}
	k := keys(t, "x.y")
	d, ok := r.Probe(k)
	if !ok || d.Runnable || d.Family != "X" {
		t.Fatalf("probe %v %v", d, ok)
	}
	src := &Source{keys: k}
	_, err := r.Load(context.Background(), src, Env{})
	if !errors.Is(err, ErrNotSupported) || err.Error() != `recognised as X (big) (found key "x.y"); X is not supported yet` {
		t.Errorf("load error %q", err)
	}
}

func TestParseConvention(t *testing.T) {
	for _, c := range []struct {
		name, sampler string
		want          Convention
	}{
		{"", "euler", ConventionComfy},
		{"comfyui", "dpmpp_2m", ConventionComfy},
		{"diffusers", "euler", ConventionDiffusers},
		{"diffusers", "heun", ConventionDiffusers},
		{"diffusers", "dpmpp_2m", ConventionDiffusersRounded},
		{"diffusers", "uni_pc", ConventionDiffusersRounded},
	} {
		if got, err := ParseConvention(c.name, c.sampler); err != nil || got != c.want {
			t.Errorf("%q/%s: %v %v, want %v", c.name, c.sampler, got, err, c.want)
		}
	}
	if _, err := ParseConvention("a1111", "euler"); err == nil {
		t.Error("unknown convention accepted")
	}
}

func TestLatentFormatShape(t *testing.T) {
	img := LatentFormat{Channels: 4, Factor: 8}
	if s := img.Shape(2, 512, 768, 0); !slices.Equal(s, []int{2, 4, 96, 64}) {
		t.Errorf("image shape %v", s)
	}
	video := LatentFormat{Channels: 16, Factor: 8, TemporalFactor: 4}
	if s := video.Shape(1, 832, 480, 81); !slices.Equal(s, []int{1, 16, 21, 60, 104}) {
		t.Errorf("video shape %v", s)
	}
}

// TestBatchContexts repeats contexts of different lengths to their least
// common multiple, as ComfyUI batches cond and uncond, and keeps values.
func TestBatchContexts(t *testing.T) {
	dev := cpu.New()
	a := dev.Upload([]float32{1, 2, 3, 4}, 1, 2, 2)        // T=2
	b := dev.Upload([]float32{5, 6, 7, 8, 9, 10}, 1, 3, 2) // T=3
	out, err := BatchContexts(dev, []*Cond{{Context: a}, {Context: b}, {Context: a}})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Shape.Equal(tensor.Shape{3, 6, 2}) {
		t.Fatalf("shape %v", out.Shape)
	}
	v, _ := dev.Download(out)
	want := []float32{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}
	if !slices.Equal(v, want) {
		t.Errorf("values %v", v)
	}
	if _, err := BatchContexts(dev, []*Cond{{Context: a}, {Context: dev.Upload(make([]float32, 3), 1, 1, 3)}}); err == nil {
		t.Error("different widths accepted")
	}
}

// TestComponentHints: a lone component file gets an unknown-family message
// that says what it looks like and which flag takes it.
func TestComponentHints(t *testing.T) {
	withRegistry(t)
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"down_blocks.0.resnets.0.conv1.weight", "conv_in.weight", "time_embedding.linear_1.weight"}, "diffusers UNet"},
		{[]string{"first_stage_model.encoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight"}, "--vae"},
		{[]string{"cond_stage_model.transformer.text_model.final_layer_norm.weight"}, "--text-encoder"},
		{[]string{"encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"}, "--text-encoder"},
		{[]string{"model.diffusion_model.input_blocks.0.0.weight"}, "--vae and --text-encoder"},
		{[]string{"foo.bar"}, ""},
	} {
		_, _, err := Detect(keys(t, c.names...))
		if !errors.Is(err, ErrUnknown) {
			t.Fatalf("%v: %v", c.names, err)
		}
		if got := strings.Contains(err.Error(), "; it looks like"); got != (c.want != "") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %q, want a hint with %q", c.names, err, c.want)
		}
	}
}
