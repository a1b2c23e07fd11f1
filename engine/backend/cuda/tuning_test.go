package cuda

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// TestTuningCache: measured choices survive a save and a load under the
// same key, another key or a damaged file gives none, and two processes'
// entries merge.
func TestTuningCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "cuda-tuning.json")
	key := tuningKey{GPU: "NVIDIA H200", Arch: "sm_90", Driver: "580.159.04", CUDA: "13.0", CUBLAS: "13.1.0", CUDNN: "9.13.0", Workmax: cudnnWorkspaceLimit}
	k1 := convKey{n: 2, c: 320, h: 64, w: 64, oc: 320, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1, dtype: tensor.F16}
	k2 := convKey{n: 1, c: 512, h: 128, w: 128, oc: 512, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1, dtype: tensor.BF16}
	c1 := tunedOf(k1)
	c1.Algo, c1.Math, c1.CudnnMs, c1.Im2colMs = 1, 1, 0.21, 0.35
	c2 := tunedOf(k2)
	c2.Im2col, c2.Algo, c2.CudnnMs, c2.Im2colMs = true, 6, 0.9, 0.7

	a := loadTuning(path, key)
	if len(a.conv) != 0 {
		t.Fatalf("no file: %d entries", len(a.conv))
	}
	if err := a.save(); err != nil || fileExists(path) {
		t.Fatalf("nothing measured: save %v, file written %v", err, fileExists(path))
	}
	a.record(k1, c1)
	// Another process measured k2 meanwhile.
	b := loadTuning(path, key)
	b.record(k2, c2)
	if err := b.save(); err != nil {
		t.Fatal(err)
	}
	if err := a.save(); err != nil {
		t.Fatal(err)
	}
	got := loadTuning(path, key)
	if g, ok := got.lookup(k1); !ok || g != c1 {
		t.Errorf("k1: %+v %v, want %+v", g, ok, c1)
	}
	if g, ok := got.lookup(k2); !ok || g != c2 {
		t.Errorf("k2: %+v %v, want %+v (merged from the other process)", g, ok, c2)
	}
	for _, other := range []tuningKey{{GPU: "NVIDIA H100"}, func() tuningKey { o := key; o.CUDNN = "9.14.0"; return o }(), func() tuningKey { o := key; o.TF32 = true; return o }()} {
		if n := len(loadTuning(path, other).conv); n != 0 {
			t.Errorf("key %+v: %d entries from another key's file", other, n)
		}
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := loadTuning(path, key)
	if len(d.conv) != 0 {
		t.Errorf("damaged file: %d entries", len(d.conv))
	}
	d.record(k1, c1)
	if err := d.save(); err != nil {
		t.Fatalf("damaged file is replaced: %v", err)
	}
	if g, ok := loadTuning(path, key).lookup(k1); !ok || g != c1 {
		t.Errorf("after replacing a damaged file: %+v %v", g, ok)
	}
	var nilTuning *tuning
	nilTuning.record(k1, c1)
	if _, ok := nilTuning.lookup(k1); ok || nilTuning.save() != nil {
		t.Error("a nil cache (off) must answer nothing and save nothing")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
