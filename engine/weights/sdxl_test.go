package weights

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/keymap"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// The tests of this file open the real-size key lists of
// testdata/keyshapes (names, dtypes and shapes of the released SD2 and
// SDXL files) and check the canonical names every layout is presented
// under: the UNet under keymap.UNetPrefix, the VAE under
// keymap.VAEPrefix, text encoders at their keymap.Slots.

const keyshapes = "../../testdata/keyshapes/"

func keyList(t *testing.T, name string) *Model {
	t.Helper()
	return openModel(t, keyshapes+name+".json.gz")
}

// countPrefixes counts m's names under each prefix (the longest that
// fits); a name under none counts as "".
func countPrefixes(m Source, prefixes []string) map[string]int {
	out := map[string]int{}
	for _, n := range m.Names() {
		best := ""
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) && len(p) > len(best) {
				best = p
			}
		}
		out[best]++
	}
	return out
}

const (
	clipLRoot = "cond_stage_model.transformer."
	sdxlCLIPL = "conditioner.embedders.0.transformer."
	refinerG  = "conditioner.embedders.0.model."
)

var canonicalPrefixes = []string{
	keymap.UNetPrefix, keymap.VAEPrefix, keymap.CLIPPrefix, keymap.TextProjection,
	keymap.CLIPGPrefix, keymap.OpenCLIPGPrefix, keymap.OpenCLIPHPrefix, sdxlCLIPL + "text_model.", refinerG,
}

// TestKeyListsCanonicalNames opens every SD2/SDXL layout and its separate
// files and checks the number of tensors under each canonical prefix
// (every name accounted for) and a few exact names with their shapes.
func TestKeyListsCanonicalNames(t *testing.T) {
	for _, c := range []struct {
		list   string
		counts map[string]int
		shapes map[string][]int
	}{
		{"sdxl-base.single", map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, sdxlCLIPL + "text_model.": 197, keymap.OpenCLIPGPrefix: 390},
			map[string][]int{
				keymap.UNetPrefix + "label_emb.0.0.weight":                              {1280, 2816},
				sdxlCLIPL + "text_model.embeddings.token_embedding.weight":              {49408, 768},
				keymap.OpenCLIPGPrefix + "transformer.resblocks.31.attn.in_proj_weight": {3840, 1280},
				keymap.OpenCLIPGPrefix + "text_projection":                              {1280, 1280},
			}},
		{"sdxl-base.diffusers", map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, keymap.CLIPPrefix: 196, keymap.CLIPGPrefix: 517},
			map[string][]int{
				keymap.UNetPrefix + "label_emb.0.0.weight":                                    {1280, 2816},
				keymap.UNetPrefix + "label_emb.0.2.bias":                                      {1280},
				keymap.UNetPrefix + "input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": {1280, 2048},
				keymap.UNetPrefix + "output_blocks.2.2.conv.weight":                           {1280, 1280, 3, 3},
				keymap.CLIPPrefix + "embeddings.token_embedding.weight":                       {49408, 768},
				keymap.CLIPGPrefix + "text_model.encoder.layers.0.self_attn.q_proj.weight":    {1280, 1280},
				keymap.CLIPGPrefix + "text_model.encoder.layers.31.mlp.fc1.weight":            {5120, 1280},
				keymap.CLIPGPrefix + "text_projection.weight":                                 {1280, 1280},
			}},
		{"sdxl-refiner.single", map[string]int{keymap.UNetPrefix: 1220, keymap.VAEPrefix: 248, refinerG: 390},
			map[string][]int{keymap.UNetPrefix + "label_emb.0.0.weight": {1536, 2560}, refinerG + "token_embedding.weight": {49408, 1280}}},
		{"sdxl-refiner.diffusers", map[string]int{keymap.UNetPrefix: 1220, keymap.VAEPrefix: 248, keymap.CLIPGPrefix: 517},
			map[string][]int{
				keymap.UNetPrefix + "label_emb.0.0.weight":                                  {1536, 2560},
				keymap.UNetPrefix + "input_blocks.0.0.weight":                               {384, 4, 3, 3},
				keymap.UNetPrefix + "output_blocks.2.1.conv.weight":                         {1536, 1536, 3, 3},
				keymap.UNetPrefix + "middle_block.1.transformer_blocks.3.attn1.to_q.weight": {1536, 1536},
				keymap.CLIPGPrefix + "text_model.embeddings.token_embedding.weight":         {49408, 1280},
			}},
		{"sdxl-unet.component", map[string]int{keymap.UNetPrefix: 1680},
			map[string][]int{keymap.UNetPrefix + "label_emb.0.0.weight": {1280, 2816}}},
		{"clip_l.component", map[string]int{keymap.CLIPPrefix: 196, keymap.TextProjection: 1},
			map[string][]int{keymap.CLIPPrefix + "embeddings.token_embedding.weight": {49408, 768}, keymap.TextProjection: {768, 768}}},
		{"clip_g.component", map[string]int{keymap.CLIPGPrefix: 517},
			map[string][]int{
				keymap.CLIPGPrefix + "text_model.encoder.layers.0.self_attn.q_proj.weight": {1280, 1280},
				keymap.CLIPGPrefix + "text_projection.weight":                              {1280, 1280},
			}},
		{"sd21-768v.single", map[string]int{keymap.UNetPrefix: 686, keymap.VAEPrefix: 248, keymap.OpenCLIPHPrefix: 294, "": 12},
			map[string][]int{keymap.OpenCLIPHPrefix + "token_embedding.weight": {49408, 1024}}},
		{"sd21-768v.diffusers", map[string]int{keymap.UNetPrefix: 686, keymap.VAEPrefix: 248, keymap.CLIPPrefix: 373},
			map[string][]int{
				keymap.CLIPPrefix + "embeddings.token_embedding.weight":         {49408, 1024},
				keymap.CLIPPrefix + "encoder.layers.22.self_attn.q_proj.weight": {1024, 1024},
				keymap.UNetPrefix + "input_blocks.1.1.proj_in.weight":           {320, 320},
			}},
	} {
		t.Run(c.list, func(t *testing.T) {
			m := keyList(t, c.list)
			got := countPrefixes(m, canonicalPrefixes)
			if !mapsEqual(got, c.counts) {
				t.Errorf("tensors per prefix %v, want %v", got, c.counts)
			}
			for n, shape := range c.shapes {
				info, ok := m.Info(n)
				if !ok {
					t.Errorf("no %s", n)
				} else if !info.Shape.Equal(tensor.Shape(shape)) {
					t.Errorf("%s: shape %v, want %v", n, info.Shape, shape)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// sameUnder checks that a's names under pa and b's under pb are the same
// (after the prefix) with the same presented shapes; skip drops names
// (after the prefix) from the comparison.
func sameUnder(t *testing.T, what string, a Source, pa string, b Source, pb string, skip ...string) {
	t.Helper()
	list := func(s Source, p string) []string {
		var out []string
		for _, n := range namesWithPrefix(s, p) {
			if rest := n[len(p):]; !slices.Contains(skip, rest) {
				out = append(out, rest)
			}
		}
		return out
	}
	na, nb := list(a, pa), list(b, pb)
	if len(na) == 0 || strings.Join(na, "\n") != strings.Join(nb, "\n") {
		t.Errorf("%s: %d names under %s, %d under %s; first differing %q", what, len(na), pa, len(nb), pb, firstDiff(na, nb))
		return
	}
	for _, n := range na {
		ia, _ := a.Info(pa + n)
		ib, _ := b.Info(pb + n)
		if !ia.Shape.Equal(ib.Shape) {
			t.Errorf("%s: %s shape %v, %s %v", what, pa+n, ia.Shape, pb+n, ib.Shape)
		}
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i] + " / " + b[i]
		}
	}
	if len(a) != len(b) {
		return "(one list is longer)"
	}
	return ""
}

// TestDiffusersMatchesSingleFileRealSizes converts the diffusers UNet of
// the SDXL base, the refiner and SD2.1 and checks it equals the single
// file's UNet name for name and shape for shape; the same for the VAE,
// and for CLIP-L and bigG between the layouts that store them alike.
func TestDiffusersMatchesSingleFileRealSizes(t *testing.T) {
	for _, name := range []string{"sdxl-base", "sdxl-refiner", "sd21-768v", "sd15"} {
		t.Run(name, func(t *testing.T) {
			single, diff := keyList(t, name+".single"), keyList(t, name+".diffusers")
			sameUnder(t, "UNet", single, keymap.UNetPrefix, diff, keymap.UNetPrefix)
			sameUnder(t, "VAE", single, keymap.VAEPrefix, diff, keymap.VAEPrefix)
			if name == "sdxl-base" {
				sameUnder(t, "CLIP-L", single, sdxlCLIPL, diff, clipLRoot, "text_model.embeddings.position_ids")
				sameUnder(t, "bigG", diff, keymap.CLIPGPrefix, keyList(t, "clip_g.component"), keymap.CLIPGPrefix)
			}
		})
	}
}

// writeKeyList writes a one-file key list holding the tensors of src's
// file whose names f maps to a non-empty name, under that name (for a
// diffusers list, of the file under the component folder given as
// "folder/" in front of src).
func writeKeyList(t *testing.T, path, src string, f func(string) string) string {
	folder, src, ok := strings.Cut(src, "/")
	if !ok {
		folder, src = "", folder
	}
	t.Helper()
	kl, err := ReadKeyList(keyshapes + src + ".json.gz")
	if err != nil {
		t.Fatal(err)
	}
	out := KeyList{Name: filepath.Base(path), Layout: "component", Files: map[string]KeyListFile{}}
	for rel, file := range kl.Files {
		if !strings.HasPrefix(rel, folder) {
			continue
		}
		tensors := map[string][2]json.RawMessage{}
		for n, v := range file.Tensors {
			if to := f(n); to != "" {
				tensors[to] = v
			}
		}
		if len(tensors) > 0 {
			out.Files[filepath.Base(rel)] = KeyListFile{Tensors: tensors}
		}
	}
	if len(out.Files) != 1 {
		t.Fatalf("%s: %d files selected", src, len(out.Files))
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// under selects the names below p (prefix kept, or cut when cut is set).
func under(p string, cut bool) func(string) string {
	return func(n string) string {
		if rest, ok := strings.CutPrefix(n, p); ok {
			if cut {
				return rest
			}
			return n
		}
		return ""
	}
}

func openFiles(t *testing.T, main, vae string, tes ...string) *Model {
	t.Helper()
	m, err := OpenFiles(main, vae, tes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestUNetOnlyFilesRealSize opens the SDXL base UNet alone in each layout
// a UNet-only file has: bare LDM names, LDM names under the checkpoint
// prefix, diffusers names.
func TestUNetOnlyFilesRealSize(t *testing.T) {
	dir := t.TempDir()
	single := keyList(t, "sdxl-base.single")
	for name, f := range map[string]string{
		"bare":      keyshapes + "sdxl-unet.component.json.gz",
		"prefixed":  writeKeyList(t, filepath.Join(dir, "prefixed.json"), "sdxl-base.single", under(keymap.UNetPrefix, false)),
		"diffusers": writeKeyList(t, filepath.Join(dir, "diffusers.json"), "unet/sdxl-base.diffusers", func(n string) string { return n }),
	} {
		t.Run(name, func(t *testing.T) {
			m := openModel(t, f)
			sameUnder(t, "UNet", m, keymap.UNetPrefix, single, keymap.UNetPrefix)
			if len(m.Names()) != 1680 {
				t.Errorf("%d tensors, want the UNet's 1680", len(m.Names()))
			}
		})
	}
}

// TestOpenFilesSDXLSplit opens the SDXL base as ComfyUI users keep it:
// the UNet alone (diffusion_models/), CLIP-L and bigG (text_encoders/) and
// the VAE (vae/). UNet and VAE get the single file's names, CLIP-L the
// single file's below "cond_stage_model.transformer.", bigG the diffusers
// text_encoder_2/'s.
func TestOpenFilesSDXLSplit(t *testing.T) {
	dir := t.TempDir()
	vae := writeKeyList(t, filepath.Join(dir, "sdxl_vae.json"), "sdxl-base.single", under(keymap.VAEPrefix, true))
	m := openFiles(t, keyshapes+"sdxl-unet.component.json.gz", vae, keyshapes+"clip_l.component.json.gz", keyshapes+"clip_g.component.json.gz")
	single, diff := keyList(t, "sdxl-base.single"), keyList(t, "sdxl-base.diffusers")
	sameUnder(t, "UNet", m, keymap.UNetPrefix, single, keymap.UNetPrefix)
	sameUnder(t, "VAE", m, keymap.VAEPrefix, single, keymap.VAEPrefix)
	sameUnder(t, "CLIP-L", m, keymap.CLIPPrefix, single, sdxlCLIPL+"text_model.", "embeddings.position_ids")
	sameUnder(t, "bigG", m, keymap.CLIPGPrefix, diff, keymap.CLIPGPrefix)
	want := map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, keymap.CLIPPrefix: 196, keymap.TextProjection: 1, keymap.CLIPGPrefix: 517}
	if got := countPrefixes(m, canonicalPrefixes); !mapsEqual(got, want) {
		t.Errorf("tensors per prefix %v, want %v", got, want)
	}
	if len(m.Files) != 4 || m.Files[1].Component != string(keymap.ComponentVAE) || m.Files[3].Component != string(keymap.ComponentTextEncoder) {
		t.Errorf("files %+v", m.Files)
	}
}

// TestOpenFilesReplacesSlot gives separate text encoders beside the SDXL
// and SD2 checkpoints: each replaces its own slot only, in whatever
// layout the checkpoint holds it; two files for one slot are refused,
// naming both.
func TestOpenFilesReplacesSlot(t *testing.T) {
	dir := t.TempDir()
	base := keyshapes + "sdxl-base.single.json.gz"
	clipL := keyshapes + "clip_l.component.json.gz"
	clipG := keyshapes + "clip_g.component.json.gz"
	bigGOpenCLIP := writeKeyList(t, filepath.Join(dir, "bigG_openclip.json"), "sdxl-base.single", under(keymap.OpenCLIPGPrefix, true))
	bigGPrefixed := writeKeyList(t, filepath.Join(dir, "bigG_prefixed.json"), "sdxl-base.single", under(keymap.OpenCLIPGPrefix, false))
	vitH := writeKeyList(t, filepath.Join(dir, "vit_h.json"), "text_encoder/sd21-768v.diffusers", under("text_model.", false))
	single := keyList(t, "sdxl-base.single")
	for _, c := range []struct {
		name, main string
		tes        []string
		want       map[string]int
	}{
		{"SDXL + CLIP-L", base, []string{clipL},
			map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, keymap.CLIPPrefix: 196, keymap.TextProjection: 1, keymap.OpenCLIPGPrefix: 390}},
		{"SDXL + bigG (transformers)", base, []string{clipG},
			map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, sdxlCLIPL + "text_model.": 197, keymap.CLIPGPrefix: 517}},
		{"SDXL + bigG (OpenCLIP, bare)", base, []string{bigGOpenCLIP},
			map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, sdxlCLIPL + "text_model.": 197, keymap.OpenCLIPGPrefix: 390}},
		{"SDXL + bigG (OpenCLIP, checkpoint prefix) + CLIP-L", base, []string{bigGPrefixed, clipL},
			map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, keymap.CLIPPrefix: 196, keymap.TextProjection: 1, keymap.OpenCLIPGPrefix: 390}},
		{"refiner + bigG", keyshapes + "sdxl-refiner.single.json.gz", []string{clipG},
			map[string]int{keymap.UNetPrefix: 1220, keymap.VAEPrefix: 248, keymap.CLIPGPrefix: 517}},
		{"SD2 + ViT-H (transformers)", keyshapes + "sd21-768v.single.json.gz", []string{vitH},
			map[string]int{keymap.UNetPrefix: 686, keymap.VAEPrefix: 248, keymap.CLIPPrefix: 373, "": 12}},
		{"SDXL diffusers + bigG", keyshapes + "sdxl-base.diffusers.json.gz", []string{clipG},
			map[string]int{keymap.UNetPrefix: 1680, keymap.VAEPrefix: 248, keymap.CLIPPrefix: 196, keymap.CLIPGPrefix: 517}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := openFiles(t, c.main, "", c.tes...)
			if got := countPrefixes(m, canonicalPrefixes); !mapsEqual(got, c.want) {
				t.Errorf("tensors per prefix %v, want %v", got, c.want)
			}
			// What stays of the checkpoint is its own tensors.
			for _, n := range m.Names() {
				if info, _ := m.Info(n); strings.Contains(info.File, "sd_xl_base") {
					if si, ok := single.Info(n); !ok || !si.Shape.Equal(info.Shape) {
						t.Errorf("%s: not the checkpoint's", n)
					}
				}
			}
			if c.tes[0] == bigGOpenCLIP {
				sameUnder(t, "bigG", m, keymap.OpenCLIPGPrefix, single, keymap.OpenCLIPGPrefix)
				if info, _ := m.Info(keymap.OpenCLIPGPrefix + "text_projection"); !strings.Contains(info.File, "bigG_openclip") {
					t.Errorf("bigG read from %s, want the separate file", info.File)
				}
			}
		})
	}
	for _, c := range []struct {
		name string
		tes  []string
	}{
		{"two bigG files", []string{clipG, bigGOpenCLIP}},
		{"two CLIP-L files", []string{clipL, clipL}},
		{"CLIP-L and ViT-H in one place", []string{clipL, vitH}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := OpenFiles(base, "", c.tes)
			if err == nil {
				m.Close()
				t.Fatal("opened")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "--text-encoder "+c.tes[1]+": fills the same component as --text-encoder "+c.tes[0]) || strings.Contains(msg, "\n") {
				t.Errorf("error %q does not name both files", msg)
			}
		})
	}
}

// TestSDXLFolderTokenizers checks that an SDXL diffusers folder lists both
// tokenizer folders and places its text_encoder_2/ (bigG, told by its
// width) under keymap.CLIPGPrefix.
func TestSDXLFolderTokenizers(t *testing.T) {
	src := filepath.Join(tinyDir, "diffusers")
	dir := t.TempDir()
	for _, p := range []string{"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"} {
		writeFile(t, filepath.Join(dir, p), readAll(t, filepath.Join(src, p)))
	}
	for _, tok := range []string{"tokenizer", "tokenizer_2"} {
		for _, f := range []string{"vocab.json", "merges.txt"} {
			b, err := os.ReadFile(filepath.Join(src, "tokenizer", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, tok), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tok, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	g := func(shape ...int) safetensors.Tensor {
		return safetensors.Tensor{DType: tensor.F16, Shape: tensor.Shape(shape), Data: make([]byte, 2*tensor.Shape(shape).NumElements())}
	}
	writeFile(t, filepath.Join(dir, "text_encoder_2/model.safetensors"), map[string]safetensors.Tensor{
		"text_model.embeddings.token_embedding.weight":    g(4, 1280),
		"text_model.embeddings.position_embedding.weight": g(2, 1280),
		"text_model.final_layer_norm.weight":              g(1280),
		"text_projection.weight":                          g(8, 1280),
	})
	if err := os.WriteFile(filepath.Join(dir, "model_index.json"), []byte(`{"_class_name": "StableDiffusionXLPipeline"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m := openModel(t, dir)
	want := map[string]string{"tokenizer": filepath.Join(dir, "tokenizer"), "tokenizer_2": filepath.Join(dir, "tokenizer_2")}
	if len(m.TokenizerDirs) != 2 || m.TokenizerDirs["tokenizer"] != want["tokenizer"] || m.TokenizerDirs["tokenizer_2"] != want["tokenizer_2"] || m.TokenizerDir != want["tokenizer"] {
		t.Errorf("tokenizers %v (%q), want %v", m.TokenizerDirs, m.TokenizerDir, want)
	}
	got := namesWithPrefix(m, keymap.CLIPGPrefix)
	sort.Strings(got)
	if len(got) != 4 || got[3] != keymap.CLIPGPrefix+"text_projection.weight" {
		t.Errorf("bigG names %v", got)
	}
	if len(namesWithPrefix(m, "text_encoder_2.")) != 0 {
		t.Error("text_encoder_2/ kept its stored names")
	}

	// Outside SDXL pipelines (SD3, Flux: a T5 there) text_encoder_2/
	// keeps its stored names for its family.
	if err := os.WriteFile(filepath.Join(dir, "model_index.json"), []byte(`{"_class_name": "FluxPipeline"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m = openModel(t, dir)
	if len(namesWithPrefix(m, "text_encoder_2.")) != 4 || len(namesWithPrefix(m, keymap.CLIPGPrefix)) != 0 {
		t.Errorf("FluxPipeline text_encoder_2/ renamed")
	}
}
