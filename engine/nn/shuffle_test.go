package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
)

func randVals(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// TestPixelShuffle checks both shuffles against torch's index formula
// (out[c, h·r+i, w·r+j] = in[c·r²+i·r+j, h, w]) and each other.
func TestPixelShuffle(t *testing.T) {
	dev := cpu.New()
	const n, c, r, h, w = 2, 3, 2, 3, 5
	x := randVals(n*c*r*r*h*w, 1)
	orig := slices.Clone(x)
	xt := dev.Upload(x, n, c*r*r, h, w)
	y := PixelShuffle(dev, xt, r)
	got, _ := dev.Download(y)
	for b := range n {
		for ch := range c {
			for yy := range h * r {
				for xx := range w * r {
					want := x[(((b*c+ch)*r*r+(yy%r)*r+xx%r)*h+yy/r)*w+xx/r]
					if g := got[((b*c+ch)*h*r+yy)*w*r+xx]; g != want {
						t.Fatalf("shuffle [%d %d %d %d] = %g, want %g", b, ch, yy, xx, g, want)
					}
				}
			}
		}
	}
	back, _ := dev.Download(PixelUnshuffle(dev, y, r))
	if !slices.Equal(back, x) || !slices.Equal(x, orig) {
		t.Error("unshuffle(shuffle(x)) != x, or x changed")
	}
}

func TestActivations(t *testing.T) {
	dev := cpu.New()
	x := randVals(2*3*4*5, 2)
	xt := dev.Upload(x, 2, 3, 4, 5)
	leaky, _ := dev.Download(LeakyReLU(dev, xt, 0.2))
	slopes := []float32{0.1, 0.25, -0.5}
	p := &PReLU{aMinus1: dev.Upload([]float32{slopes[0] - 1, slopes[1] - 1, slopes[2] - 1}, 1, 3, 1, 1)}
	prelu, _ := dev.Download(p.Forward(dev, xt))
	up := dev.Upload(randVals(2*3*12*15, 3), 2, 3, 12, 15)
	upv, _ := dev.Download(up)
	near, _ := dev.Download(AddNearest(dev, up, xt, 3))
	for i, v := range x {
		want := float64(v)
		if v < 0 {
			want *= 0.2
		}
		if d := math.Abs(float64(leaky[i]) - want); d > 1e-6*math.Abs(want)+1e-7 {
			t.Fatalf("leaky(%g) = %g, want %g", v, leaky[i], want)
		}
		want = float64(v)
		if v < 0 {
			want *= float64(slopes[(i/20)%3])
		}
		if d := math.Abs(float64(prelu[i]) - want); d > 1e-6*math.Abs(want)+1e-7 {
			t.Fatalf("prelu(%g) = %g, want %g", v, prelu[i], want)
		}
	}
	for i := range near {
		xx, yy, pl := i%15, (i/15)%12, i/(15*12)
		if want := upv[i] + x[(pl*4+yy/3)*5+xx/3]; near[i] != want {
			t.Fatalf("add nearest %d = %g, want %g", i, near[i], want)
		}
	}
}
