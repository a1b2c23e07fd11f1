// Package testref loads the reference fixtures under testdata/reference for
// tests, and compares tensors the way the project's tolerances are stated.
package testref

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights/safetensors"
)

// Dir returns the absolute path of testdata/reference in the repository,
// or $DARKROOM_TESTDATA when set (a test binary built here and run on
// another machine, with the fixtures it needs copied beside it).
func Dir() string {
	if d := os.Getenv("DARKROOM_TESTDATA"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "reference")
}

// Path joins elements under Dir.
func Path(elem ...string) string { return filepath.Join(append([]string{Dir()}, elem...)...) }

// Tensors reads every tensor of a fixture file as float32.
func Tensors(t testing.TB, name string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(Path(name))
	if err != nil {
		t.Fatalf("open fixture: %v", err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, n := range f.Names() {
		v, err := f.Float32(n)
		if err != nil {
			t.Fatalf("fixture %s: %v", n, err)
		}
		out[n] = v
	}
	return out
}

// RelErr returns ‖got − want‖₂ / ‖want‖₂ (computed in float64).
func RelErr(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		if math.IsNaN(d) {
			return math.NaN()
		}
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// PSNR returns the peak signal-to-noise ratio in dB of two images with
// values in 0..1.
func PSNR(got, want []float32) float64 {
	var mse float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		mse += d * d
	}
	mse /= float64(len(got))
	if mse == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(1/mse)
}

// Exists reports whether a fixture file exists.
func Exists(elem ...string) bool {
	_, err := os.Stat(Path(elem...))
	return err == nil
}

// ShapeDevice is a device that records the shapes of uploads and stores
// nothing: for loading a real-size key list (weights.KeyList) through a
// family's loader, to prove it asks for exactly the tensors a real file
// holds.
type ShapeDevice struct{ backend.Device }

// UploadRaw returns a tensor of the shape, holding no data.
func (ShapeDevice) UploadRaw(_ []byte, dt tensor.DType, shape ...int) (*backend.Tensor, error) {
	return &backend.Tensor{Shape: tensor.Shape(shape).Clone(), DType: dt}, nil
}

// Alloc returns a tensor of the shape, holding no data.
func (ShapeDevice) Alloc(shape ...int) *backend.Tensor {
	return &backend.Tensor{Shape: tensor.Shape(shape).Clone(), DType: tensor.F32}
}

// Concat does nothing (loaders join stored tensors with it).
func (ShapeDevice) Concat(*backend.Tensor, int, ...*backend.Tensor) {}

// Free does nothing.
func (ShapeDevice) Free(*backend.Tensor) {}
