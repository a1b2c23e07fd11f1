package cuda

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// The tuning cache keeps what a device measured per convolution geometry —
// cuDNN's fastest algorithm (cudnnFindConvolutionForwardAlgorithm) and
// whether im2col + cuBLAS beat it — in a file, so that the next process on
// the same GPU, driver and libraries measures nothing (TensorRT's timing
// cache, cuDNN's find cache). A file made for another GPU, driver, CUDA,
// cuBLAS or cuDNN version, precision rule or format is ignored; an
// unreadable or damaged one too (it is a cache: the device measures again
// and writes a new one). Several processes may share it: each merges what
// it measured into the file as it is on disk, by an atomic rename.

// tuningFormat is the file's format version.
const tuningFormat = 1

// tuningKey is what a measured choice is valid for.
type tuningKey struct {
	GPU     string `json:"gpu"`
	Arch    string `json:"arch"`
	Driver  string `json:"driver"`
	CUDA    string `json:"cuda"`
	CUBLAS  string `json:"cublas"`
	CUDNN   string `json:"cudnn"`
	TF32    bool   `json:"tf32"`
	Workmax uint64 `json:"workspace_limit"`
}

// tunedConv is one geometry's measured choice.
type tunedConv struct {
	N, C, H, W, OC, KH, KW int
	StrideH, StrideW       int
	PadH, PadW             int
	DType                  string
	// Im2col says im2col + cuBLAS was faster than cuDNN's best.
	Im2col bool
	// Algo and Math are cuDNN's algorithm and math type (with Im2col too:
	// the cuDNN plan is kept for ConvCudnn).
	Algo, Math        int32
	CudnnMs, Im2colMs float32
}

func (t tunedConv) key() (convKey, bool) {
	var dt tensor.DType
	switch t.DType {
	case "f32":
		dt = tensor.F32
	case "f16":
		dt = tensor.F16
	case "bf16":
		dt = tensor.BF16
	default:
		return convKey{}, false
	}
	return convKey{n: t.N, c: t.C, h: t.H, w: t.W, oc: t.OC, kh: t.KH, kw: t.KW, strideH: t.StrideH, strideW: t.StrideW,
		padH: t.PadH, padW: t.PadW, dtype: dt}, true
}

func tunedOf(k convKey) tunedConv {
	return tunedConv{N: k.n, C: k.c, H: k.h, W: k.w, OC: k.oc, KH: k.kh, KW: k.kw, StrideH: k.strideH, StrideW: k.strideW,
		PadH: k.padH, PadW: k.padW, DType: kernelSuffix(k.dtype)}
}

type tuningFile struct {
	Format int         `json:"format"`
	Key    tuningKey   `json:"key"`
	Conv   []tunedConv `json:"conv"`
}

// tuning is a device's view of its cache file (owner goroutine).
type tuning struct {
	path  string
	key   tuningKey
	conv  map[convKey]tunedConv
	dirty bool
}

// DefaultTuningCache is the cache file devices use when Options.TuningCache
// is empty: $DARKROOM_CUDA_TUNING_CACHE when set ("off" turns the cache
// off), else cuda-tuning.json in the user's cache directory
// ($XDG_CACHE_HOME/darkroom or ~/.cache/darkroom), or "" when there is none.
func DefaultTuningCache() string {
	if p := os.Getenv("DARKROOM_CUDA_TUNING_CACHE"); p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "darkroom", "cuda-tuning.json")
}

// loadTuning reads the entries of path that were measured under key; a
// missing, damaged or foreign file gives none.
func loadTuning(path string, key tuningKey) *tuning {
	t := &tuning{path: path, key: key, conv: map[convKey]tunedConv{}}
	if f, err := readTuning(path); err == nil && f.Format == tuningFormat && f.Key == key {
		for _, c := range f.Conv {
			if k, ok := c.key(); ok {
				t.conv[k] = c
			}
		}
	}
	return t
}

func readTuning(path string) (*tuningFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f tuningFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// lookup returns the cached choice of a geometry.
func (t *tuning) lookup(k convKey) (tunedConv, bool) {
	if t == nil {
		return tunedConv{}, false
	}
	c, ok := t.conv[k]
	return c, ok
}

// record keeps a measured choice for saving.
func (t *tuning) record(k convKey, c tunedConv) {
	if t == nil {
		return
	}
	t.conv[k] = c
	t.dirty = true
}

// save merges the measured choices into the file as it is now on disk
// (entries another process added since are kept; a file of another key is
// replaced) and writes it atomically. Nothing happens when nothing was
// measured.
func (t *tuning) save() error {
	if t == nil || !t.dirty || t.path == "" {
		return nil
	}
	all := map[convKey]tunedConv{}
	if f, err := readTuning(t.path); err == nil && f.Format == tuningFormat && f.Key == t.key {
		for _, c := range f.Conv {
			if k, ok := c.key(); ok {
				all[k] = c
			}
		}
	}
	for k, c := range t.conv {
		all[k] = c
	}
	f := tuningFile{Format: tuningFormat, Key: t.key}
	for _, c := range all {
		f.Conv = append(f.Conv, c)
	}
	sort.Slice(f.Conv, func(i, j int) bool {
		a, b := f.Conv[i], f.Conv[j]
		return fmt.Sprint(a.DType, a.N, a.C, a.H, a.W, a.OC, a.KH, a.StrideH, a.PadH) < fmt.Sprint(b.DType, b.N, b.C, b.H, b.W, b.OC, b.KH, b.StrideH, b.PadH)
	})
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(t.path), 0o755); err != nil {
		return fmt.Errorf("tuning cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(t.path), ".cuda-tuning-*")
	if err != nil {
		return fmt.Errorf("tuning cache: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("tuning cache %s: %w", t.path, err)
	}
	if err := os.Rename(tmp.Name(), t.path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("tuning cache %s: %w", t.path, err)
	}
	t.dirty = false
	return nil
}
