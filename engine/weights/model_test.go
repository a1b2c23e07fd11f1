package weights

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

const tinyDir = "../../testdata/reference/sd1-tiny-a"

func openModel(t *testing.T, path string) *Model {
	t.Helper()
	m, err := OpenModel(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestDiffusersMatchesSingleFile is the key test of the name maps: the
// diffusers folder and the single file hold the same weights, so their
// canonical views must agree on every name, dtype, shape and value.
func TestDiffusersMatchesSingleFile(t *testing.T) {
	single := openModel(t, filepath.Join(tinyDir, "single.safetensors"))
	diff := openModel(t, filepath.Join(tinyDir, "diffusers"))

	sn, dn := single.Names(), diff.Names()
	if len(sn) != 600 {
		t.Fatalf("single file has %d tensors, want 600", len(sn))
	}
	if strings.Join(sn, "\n") != strings.Join(dn, "\n") {
		t.Fatalf("name sets differ: %d single vs %d diffusers", len(sn), len(dn))
	}
	reshaped := 0
	for _, name := range sn {
		si, _ := single.Info(name)
		di, ok := diff.Info(name)
		if !ok || si.DType != di.DType || !si.Shape.Equal(di.Shape) || si.Size != di.Size || di.Name != name {
			t.Errorf("%s: single %v %v, diffusers %v %v", name, si.DType, si.Shape, di.DType, di.Shape)
			continue
		}
		if strings.Contains(di.File, "/vae/") && len(di.Shape) == 4 && strings.Contains(name, "mid.attn_1.") {
			reshaped++
		}
		sv, err := single.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		dv, err := diff.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range sv {
			if sv[i] != dv[i] {
				t.Errorf("%s[%d]: single %v, diffusers %v", name, i, sv[i], dv[i])
				break
			}
		}
		sr, _ := single.Raw(name)
		dr, _ := diff.Raw(name)
		if !bytes.Equal(sr, dr) {
			t.Errorf("%s: raw bytes differ", name)
		}
	}
	if reshaped != 8 {
		t.Errorf("%d VAE attention weights presented as 1x1 convs, want 8", reshaped)
	}
}

func TestOpenModelInfo(t *testing.T) {
	single := openModel(t, filepath.Join(tinyDir, "single.safetensors"))
	if single.Layout != SingleFile || len(single.Files) != 1 || single.Files[0].Size != 11750838 || single.Files[0].Tensors != 600 || single.TokenizerDir != "" {
		t.Errorf("single: layout %v files %+v tokenizer %q", single.Layout, single.Files, single.TokenizerDir)
	}
	diff := openModel(t, filepath.Join(tinyDir, "diffusers"))
	if diff.Layout != Diffusers {
		t.Errorf("layout = %v", diff.Layout)
	}
	want := []FileInfo{
		{filepath.Join(tinyDir, "diffusers/unet/diffusion_pytorch_model.safetensors"), 2274968, "unet", 304},
		{filepath.Join(tinyDir, "diffusers/vae/diffusion_pytorch_model.safetensors"), 2825782, "vae", 244},
		{filepath.Join(tinyDir, "diffusers/text_encoder/model.safetensors"), 6640096, "text_encoder", 52},
	}
	if len(diff.Files) != len(want) {
		t.Fatalf("files = %+v", diff.Files)
	}
	for i := range want {
		if diff.Files[i] != want[i] {
			t.Errorf("file %d = %+v, want %+v", i, diff.Files[i], want[i])
		}
	}
	if got := filepath.Join(tinyDir, "diffusers/tokenizer"); diff.TokenizerDir != got {
		t.Errorf("tokenizer = %q, want %q", diff.TokenizerDir, got)
	}
}

// copyComponent writes the tensors of a safetensors file into one or more
// new files, split by the given name predicate.
func readAll(t *testing.T, path string) map[string]safetensors.Tensor {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	out := map[string]safetensors.Tensor{}
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		raw, _ := f.Raw(n)
		out[n] = safetensors.Tensor{DType: info.DType, Shape: info.Shape, Data: raw}
	}
	return out
}

func writeFile(t *testing.T, path string, tensors map[string]safetensors.Tensor) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(path, tensors, nil); err != nil {
		t.Fatal(err)
	}
}

// TestShardedAndVariantFiles rebuilds the tiny diffusers folder with a
// sharded UNet, an fp16-variant VAE and a sharded fp16 text encoder, and
// checks the canonical view is unchanged.
func TestShardedAndVariantFiles(t *testing.T) {
	src := filepath.Join(tinyDir, "diffusers")
	dir := t.TempDir()

	unet := readAll(t, filepath.Join(src, "unet/diffusion_pytorch_model.safetensors"))
	a, b := map[string]safetensors.Tensor{}, map[string]safetensors.Tensor{}
	wm := map[string]string{}
	for n, tt := range unet {
		if strings.HasPrefix(n, "down_blocks.") {
			a[n], wm[n] = tt, "diffusion_pytorch_model-00001-of-00002.safetensors"
		} else {
			b[n], wm[n] = tt, "diffusion_pytorch_model-00002-of-00002.safetensors"
		}
	}
	writeFile(t, filepath.Join(dir, "unet/diffusion_pytorch_model-00001-of-00002.safetensors"), a)
	writeFile(t, filepath.Join(dir, "unet/diffusion_pytorch_model-00002-of-00002.safetensors"), b)
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 1}, "weight_map": wm})
	os.WriteFile(filepath.Join(dir, "unet/diffusion_pytorch_model.safetensors.index.json"), idx, 0o644)

	writeFile(t, filepath.Join(dir, "vae/diffusion_pytorch_model.fp16.safetensors"),
		readAll(t, filepath.Join(src, "vae/diffusion_pytorch_model.safetensors")))

	te := readAll(t, filepath.Join(src, "text_encoder/model.safetensors"))
	writeFile(t, filepath.Join(dir, "text_encoder/model.fp16-00001-of-00001.safetensors"), te)
	wm = map[string]string{}
	for n := range te {
		wm[n] = "model.fp16-00001-of-00001.safetensors"
	}
	idx, _ = json.Marshal(map[string]any{"weight_map": wm})
	os.WriteFile(filepath.Join(dir, "text_encoder/model.safetensors.index.fp16.json"), idx, 0o644)

	m := openModel(t, dir)
	ref := openModel(t, filepath.Join(tinyDir, "single.safetensors"))
	if len(m.Files) != 4 {
		t.Errorf("files = %+v, want 2 unet shards, 1 vae, 1 text encoder", m.Files)
	}
	if strings.Join(m.Names(), ",") != strings.Join(ref.Names(), ",") {
		t.Fatalf("names differ from the single file: %d vs %d", len(m.Names()), len(ref.Names()))
	}
	for _, n := range ref.Names() {
		x, _ := m.Raw(n)
		y, _ := ref.Raw(n)
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs", n)
		}
	}
	if m.TokenizerDir != "" {
		t.Errorf("tokenizer = %q, want none", m.TokenizerDir)
	}
}

func TestSingleFileCLIPWithoutTextModel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.safetensors")
	one := safetensors.Tensor{DType: tensor.F32, Shape: tensor.Shape{2, 2}, Data: make([]byte, 16)}
	writeFile(t, path, map[string]safetensors.Tensor{
		"cond_stage_model.transformer.embeddings.token_embedding.weight": one,
		"cond_stage_model.transformer.final_layer_norm.weight":           one,
		"first_stage_model.decoder.mid.attn_1.q.weight":                  one,
		"model.diffusion_model.input_blocks.0.0.weight":                  one,
	})
	m := openModel(t, path)
	want := []string{
		"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
		"cond_stage_model.transformer.text_model.final_layer_norm.weight",
		"first_stage_model.decoder.mid.attn_1.q.weight",
		"model.diffusion_model.input_blocks.0.0.weight",
	}
	if got := m.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("names = %v", got)
	}
	if info, _ := m.Info("first_stage_model.decoder.mid.attn_1.q.weight"); !info.Shape.Equal(tensor.Shape{2, 2, 1, 1}) {
		t.Errorf("linear VAE attention weight shape = %v, want [2 2 1 1]", info.Shape)
	}
}

func TestOpenModelErrors(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("empty/readme.txt", []byte("hi"))
	mk("bin/unet/diffusion_pytorch_model.bin", []byte("x"))
	mk("sdxl/model_index.json", []byte("{}"))
	os.MkdirAll(filepath.Join(dir, "sdxl/text_encoder_2"), 0o755)
	var buf bytes.Buffer
	safetensors.Encode(&buf, map[string]safetensors.Tensor{
		"conv_in.weight":                  {DType: tensor.U8, Shape: tensor.Shape{1}, Data: []byte{1}},
		"class_embedding.linear_1.weight": {DType: tensor.U8, Shape: tensor.Shape{1}, Data: []byte{1}},
	}, nil)
	mk("unknown/unet/diffusion_pytorch_model.safetensors", buf.Bytes())
	mk("badshard/unet/diffusion_pytorch_model.safetensors.index.json", []byte(`{"weight_map":{"a":"../x.safetensors"}}`))
	mk("broken/vae/diffusion_pytorch_model.safetensors", []byte("garbage!garbage!"))
	mk("liar/unet/diffusion_pytorch_model-1.safetensors", buf.Bytes())
	mk("liar/unet/diffusion_pytorch_model.safetensors.index.json", []byte(`{"weight_map":{"conv_in.weight":"diffusion_pytorch_model-1.safetensors","conv_out.weight":"diffusion_pytorch_model-1.safetensors"}}`))

	cases := []struct {
		rel, want string
		notModel  bool
	}{
		{"missing", "missing: no such file or directory", false},
		{"empty", "empty: not a model: a folder needs model_index.json", true},
		{"bin", "bin/unet: no diffusion_pytorch_model.safetensors (or .fp16 / sharded variant); PyTorch .bin files are not read", true},
		{"sdxl", `sdxl: not a model: no unet/, vae/, text_encoder/ or transformer/ weights found`, true},
		{"unknown", `unknown/unet/diffusion_pytorch_model.safetensors: 1 unknown diffusers UNet tensor names: "class_embedding.linear_1.weight"`, false},
		{"badshard", `badshard/unet/diffusion_pytorch_model.safetensors.index.json: tensor "a": shard "../x.safetensors" is not a file name in the same folder`, false},
		{"broken", "broken/vae/diffusion_pytorch_model.safetensors: header length", false},
		{"liar", `liar/unet/diffusion_pytorch_model.safetensors.index.json: 1 tensors listed for diffusion_pytorch_model-1.safetensors are missing from it, e.g. "conv_out.weight"`, false},
	}
	for _, c := range cases {
		t.Run(c.rel, func(t *testing.T) {
			m, err := OpenModel(filepath.Join(dir, c.rel))
			if err == nil {
				m.Close()
				t.Fatal("OpenModel succeeded")
			}
			want := filepath.Join(dir, c.want)
			if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error = %q\nwant prefix %q", err, want)
			}
			if errors.Is(err, ErrNotModel) != c.notModel {
				t.Errorf("errors.Is(ErrNotModel) = %v, want %v", !c.notModel, c.notModel)
			}
		})
	}
}
