package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// ListModels follows symbolic links to files and folders (a linked file
// has its target's size), lists what two links reach once, survives link
// loops and dangling links, and marks files whose header does not read
// as Broken (issue 23 bugs 6 and 7).
func TestListModelsLinksAndBroken(t *testing.T) {
	t.Setenv("HF_HUB_CACHE", t.TempDir()) // no models of a real cache in the list
	store, root := t.TempDir(), t.TempDir()
	good := filepath.Join(store, "good.safetensors")
	if err := safetensors.Write(good, map[string]safetensors.Tensor{"w": {DType: tensor.F32, Shape: tensor.Shape{256}, Data: make([]byte, 1024)}}, nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(good)
	if err != nil {
		t.Fatal(err)
	}
	diff := filepath.Join(store, "pipe")
	if err := os.MkdirAll(diff, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(diff, "model_index.json"), []byte(`{"_class_name":"StableDiffusionPipeline"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "broken.safetensors"), []byte("not a safetensors file at all"), 0o644))
	must(os.Symlink(good, filepath.Join(root, "linked.safetensors")))
	must(os.Symlink(good, filepath.Join(root, "again.safetensors"))) // a second link to one file
	must(os.Symlink(diff, filepath.Join(root, "linked-pipe")))
	must(os.Symlink(filepath.Join(root, "nowhere"), filepath.Join(root, "dangling.safetensors")))
	must(os.Symlink(filepath.Join(root, "loop.safetensors"), filepath.Join(root, "loop.safetensors")))
	must(os.Symlink(root, filepath.Join(root, "checkpoints"))) // checkpoints -> the root itself

	e, err := Open(Options{Device: "cpu", ModelDirs: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	got := map[string]ModelEntry{}
	var names []string
	for _, m := range e.ListModels() {
		got[m.Name] = m
		names = append(names, m.Name)
	}
	if len(names) != 4 {
		t.Errorf("models %v, want the built-in, broken, one of again/linked, linked-pipe", names)
	}
	link, ok := got["again"]
	if !ok {
		link, ok = got["linked"]
	}
	if !ok || link.Size != st.Size() || link.Broken != "" {
		t.Errorf("linked file: %+v, want size %d and not broken", link, st.Size())
	}
	if m, ok := got["linked-pipe"]; !ok || m.Broken != "" {
		t.Errorf("linked diffusers folder: %+v, %v", m, ok)
	}
	if m := got["broken"]; m.Broken == "" {
		t.Errorf("broken file not marked: %+v", m)
	}
	if m := got[DefaultModel]; m.Broken != "" {
		t.Errorf("built-in model marked broken: %q", m.Broken)
	}
	// -m NAME resolves through a linked folder.
	if p, err := e.Resolve("linked-pipe"); err != nil || !strings.HasSuffix(p, "linked-pipe") {
		t.Errorf("Resolve(linked-pipe) = %q, %v", p, err)
	}
}
