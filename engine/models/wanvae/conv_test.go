package wanvae

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
	"github.com/darkroom-ai/darkroom/engine/internal/testref"
	"github.com/darkroom-ai/darkroom/engine/tensor"
	"github.com/darkroom-ai/darkroom/engine/weights"
)

// memSource is a weights.Source of float32 tensors held in memory.
type memSource struct {
	data   map[string][]float32
	shapes map[string][]int
}

func (m memSource) Names() []string {
	var out []string
	for n := range m.data {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (m memSource) Info(name string) (weights.TensorInfo, bool) {
	s, ok := m.shapes[name]
	if !ok {
		return weights.TensorInfo{}, false
	}
	return weights.TensorInfo{Name: name, DType: tensor.F32, Shape: tensor.Shape(s).Clone(), Size: int64(4 * len(m.data[name]))}, true
}

func (m memSource) Raw(name string) ([]byte, error) {
	v, ok := m.data[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", name)
	}
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return out, nil
}

func (m memSource) Float32(name string) ([]float32, error) { return slices.Clone(m.data[name]), nil }
func (m memSource) Close() error                           { return nil }

// TestCausalConvOneFrame proves the reduction the package rests on: a
// causal 3-D convolution (time padded with 2p zero frames in front, none
// behind; spatial padding p; kernel 2p+1 in every axis) of a one-frame
// input equals the 2-D convolution with the kernel's last temporal slice.
// The reference is the 3-D convolution written out, every temporal tap
// included.
func TestCausalConvOneFrame(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	const in, out, h, w = 5, 4, 7, 6
	for _, k := range []int{1, 3} {
		t.Run(fmt.Sprintf("k%d", k), func(t *testing.T) {
			p := k / 2
			wt, bias, x := randn(out*in*k*k*k), randn(out), randn(in*h*w)
			src := memSource{
				data:   map[string][]float32{"c.weight": wt, "c.bias": bias},
				shapes: map[string][]int{"c.weight": {out, in, k, k, k}, "c.bias": {out}},
			}
			dev := cpu.New()
			b := weights.NewBuilder(src, dev)
			c := loadConv(b, "c.", in, out, k)
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			y, err := dev.Download(c.Forward(dev, dev.Upload(x, 1, in, h, w)))
			if err != nil {
				t.Fatal(err)
			}
			// The 3-D convolution over the time-padded input [2p zero frames, x].
			frames := 2*p + 1
			at := func(f, i, yy, xx int) float64 {
				if f < 2*p || yy < 0 || yy >= h || xx < 0 || xx >= w {
					return 0
				}
				return float64(x[(i*h+yy)*w+xx])
			}
			want := make([]float32, out*h*w)
			for o := range out {
				for yy := range h {
					for xx := range w {
						s := float64(bias[o])
						for i := range in {
							for tau := range k {
								if tau >= frames {
									continue
								}
								for dy := range k {
									for dx := range k {
										s += float64(wt[(((o*in+i)*k+tau)*k+dy)*k+dx]) * at(tau, i, yy+dy-p, xx+dx-p)
									}
								}
							}
						}
						want[(o*h+yy)*w+xx] = float32(s)
					}
				}
			}
			if e := testref.RelErr(y, want); e > 1e-6 {
				t.Errorf("relative error %.3g", e)
			}
		})
	}
}
