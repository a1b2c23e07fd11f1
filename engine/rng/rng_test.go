package rng

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

const refDir = "../../testdata/reference/"

// readF32Safetensors is a minimal safetensors reader for the fixtures: it
// returns every F32 tensor by name. It is deliberately independent of the
// engine's safetensors package.
func readF32Safetensors(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	if len(b) < 8 {
		t.Fatalf("%s: too short", path)
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		t.Fatalf("%s: header length %d out of range", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	data := b[8+n:]
	out := map[string][]float32{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			DType   string   `json:"dtype"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &info); err != nil {
			t.Fatalf("%s: tensor %s: %v", path, name, err)
		}
		if info.DType != "F32" {
			continue
		}
		lo, hi := info.Offsets[0], info.Offsets[1]
		if lo < 0 || hi < lo || hi > int64(len(data)) || (hi-lo)%4 != 0 {
			t.Fatalf("%s: tensor %s: bad offsets %v", path, name, info.Offsets)
		}
		v := make([]float32, (hi-lo)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[lo+int64(i)*4:]))
		}
		out[name] = v
	}
	return out
}

type randnCase struct {
	Key   string `json:"key"`
	Seed  uint64 `json:"seed"`
	Shape []int  `json:"shape"`
}

func readRandnCases(t *testing.T) []randnCase {
	t.Helper()
	b, err := os.ReadFile(refDir + "randn.json")
	if err != nil {
		t.Fatalf("read randn.json: %v", err)
	}
	var cases []randnCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatalf("parse randn.json: %v", err)
	}
	if len(cases) == 0 {
		t.Fatal("randn.json has no cases")
	}
	return cases
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// TestRandnMatchesTorch compares every fixture tensor bit for bit.
func TestRandnMatchesTorch(t *testing.T) {
	tensors := readF32Safetensors(t, refDir+"randn.safetensors")
	for _, c := range readRandnCases(t) {
		t.Run(fmt.Sprintf("%s_seed%d_%v", c.Key, c.Seed, c.Shape), func(t *testing.T) {
			want, ok := tensors[c.Key]
			if !ok {
				t.Fatalf("fixture has no tensor %q", c.Key)
			}
			if len(want) != numel(c.Shape) {
				t.Fatalf("fixture %s has %d values, shape %v wants %d", c.Key, len(want), c.Shape, numel(c.Shape))
			}
			got := NewTorch(c.Seed).Randn(len(want))
			mismatches := 0
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					if mismatches < 5 {
						t.Errorf("element %d: got %v (%#08x), want %v (%#08x)", i,
							got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
					}
					mismatches++
				}
			}
			if mismatches > 0 {
				t.Errorf("%d of %d elements differ", mismatches, len(want))
			}
		})
	}
}
