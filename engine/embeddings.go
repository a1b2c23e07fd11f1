package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/darkroom-ai/darkroom/engine/weights"
)

// embeddingExts are the file names an embedding NAME is looked up as, in
// order: A1111's and ComfyUI's safetensors and torch pickles (read by the
// safe reader, which refuses any code).
var embeddingExts = []string{".safetensors", ".pt", ".bin", ".pth", ""}

// embeddingStore finds textual-inversion embeddings in folders (ComfyUI's
// models/embeddings, A1111's embeddings/) and keeps their vectors; it
// implements family.Embeddings.
type embeddingStore struct {
	dirs  []string
	mu    sync.Mutex
	cache map[string]map[string][][]float32 // path → tensor name → vectors
}

// newEmbeddingStore returns a store over dirs, or nil when there are none.
func newEmbeddingStore(dirs []string) *embeddingStore {
	if len(dirs) == 0 {
		return nil
	}
	return &embeddingStore{dirs: dirs, cache: map[string]map[string][][]float32{}}
}

// Vectors implements family.Embeddings: the file's tensor for the
// encoder's slot ("clip_l", "clip_g": SDXL embeddings hold both), else
// A1111's "emb_params" (safetensors) or "string_to_param.*" (.pt), else its
// only tensor; it must be [n, width] or [width].
func (s *embeddingStore) Vectors(name, slot string, width int) ([][]float32, error) {
	path, err := s.find(name)
	if err != nil {
		return nil, err
	}
	tensors, err := s.read(path)
	if err != nil {
		return nil, err
	}
	var names []string
	for n := range tensors {
		names = append(names, n)
	}
	slices.Sort(names)
	pick := ""
	for _, want := range []string{slot, "emb_params", "string_to_param.*"} {
		if _, ok := tensors[want]; ok && want != "" {
			pick = want
			break
		}
	}
	if pick == "" && len(names) == 1 {
		pick = names[0]
	}
	if pick == "" {
		return nil, fmt.Errorf("embedding %s (%s): no tensor for %s among %s", name, path, slot, strings.Join(names, ", "))
	}
	v := tensors[pick]
	if len(v) == 0 || len(v[0]) != width {
		got := 0
		if len(v) > 0 {
			got = len(v[0])
		}
		return nil, fmt.Errorf("embedding %s (%s): its vectors are %d wide, this model's %s text encoder %d (an embedding for another model family)", name, path, got, slot, width)
	}
	return v, nil
}

// find resolves a name to a file in the folders (subfolders allowed,
// never outside them).
func (s *embeddingStore) find(name string) (string, error) {
	clean := filepath.Clean(name)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("embedding %q: a name inside the embeddings folders, not a path", name)
	}
	for _, dir := range s.dirs {
		for _, ext := range embeddingExts {
			p := filepath.Join(dir, clean+ext)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("embedding %q: none of that name (.safetensors, .pt, .bin) in %s", name, strings.Join(s.dirs, ", "))
}

// read loads (once) every tensor of an embedding file as rows of vectors.
func (s *embeddingStore) read(path string) (map[string][][]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.cache[path]; ok {
		return t, nil
	}
	f, err := weights.OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("embedding %s: %w", path, err)
	}
	defer f.Close()
	out := map[string][][]float32{}
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		if len(info.Shape) == 0 || len(info.Shape) > 2 || !info.DType.IsFloat() {
			continue // A1111's step counters and token ids
		}
		v, err := f.Float32(n)
		if err != nil {
			return nil, fmt.Errorf("embedding %s: %q: %w", path, n, err)
		}
		w := info.Shape[len(info.Shape)-1]
		var rows [][]float32
		for i := 0; i+w <= len(v) && w > 0; i += w {
			rows = append(rows, v[i:i+w])
		}
		out[n] = rows
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("embedding %s: holds no vectors", path)
	}
	s.cache[path] = out
	return out, nil
}
