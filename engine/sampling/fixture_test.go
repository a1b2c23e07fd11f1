package sampling

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
)

// A minimal safetensors reader for the tests (F32, F64 and I64 tensors only);
// the engine's real reader lives in engine/weights.

type stTensor struct {
	DType   string    `json:"dtype"`
	Shape   []int     `json:"shape"`
	Offsets [2]int    `json:"data_offsets"`
	data    []byte    // raw little-endian bytes
	f32     []float32 // values of F32, F64 and I64 tensors
	f64     []float64 // F64 tensors only
}

type stFile map[string]*stTensor

func readSafetensors(path string) (stFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("read %s: short file", path)
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("read %s: header length %d beyond file", path, n)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("read %s: header: %w", path, err)
	}
	body := b[8+n:]
	out := stFile{}
	for k, v := range raw {
		if k == "__metadata__" {
			continue
		}
		t := &stTensor{}
		if err := json.Unmarshal(v, t); err != nil {
			return nil, fmt.Errorf("read %s: tensor %s: %w", path, k, err)
		}
		if t.Offsets[0] < 0 || t.Offsets[1] > len(body) || t.Offsets[0] > t.Offsets[1] {
			return nil, fmt.Errorf("read %s: tensor %s: bad offsets", path, k)
		}
		t.data = body[t.Offsets[0]:t.Offsets[1]]
		switch t.DType {
		case "F32":
			t.f32 = make([]float32, len(t.data)/4)
			for i := range t.f32 {
				t.f32[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.data[4*i:]))
			}
		case "F64":
			t.f64 = make([]float64, len(t.data)/8)
			t.f32 = make([]float32, len(t.f64))
			for i := range t.f64 {
				t.f64[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.data[8*i:]))
				t.f32[i] = float32(t.f64[i])
			}
		case "I64":
			t.f32 = make([]float32, len(t.data)/8)
			for i := range t.f32 {
				t.f32[i] = float32(int64(binary.LittleEndian.Uint64(t.data[8*i:])))
			}
		}
		out[k] = t
	}
	return out, nil
}

// get returns the float32 values of a tensor, failing the test if absent.
func (f stFile) get(t *testing.T, name string) []float32 {
	t.Helper()
	v, ok := f[name]
	if !ok || v.f32 == nil {
		t.Fatalf("fixture has no float tensor %q", name)
	}
	return v.f32
}

// relErr returns max_i |got-want| / max(|want|, floor) and its index.
func relErr(got, want []float32, floor float64) (float64, int) {
	worst, at := 0.0, -1
	for i := range want {
		d := math.Abs(float64(got[i])-float64(want[i])) / math.Max(math.Abs(float64(want[i])), floor)
		if d > worst || at < 0 {
			worst, at = d, i
		}
	}
	return worst, at
}

func fmtSlice(v []float32) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.9g", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
