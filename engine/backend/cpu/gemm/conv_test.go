package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// refConv computes the convolution in float64, and for each output the sum
// of magnitudes that bounds its rounding error.
func refConv(x []float32, n, c, h, w int, weight []float32, oc, kh, kw, sh, sw, ph, pw int, bias []float32) (want, scale []float64) {
	oh := (h+2*ph-kh)/sh + 1
	ow := (w+2*pw-kw)/sw + 1
	want = make([]float64, n*oc*oh*ow)
	scale = make([]float64, len(want))
	for b := 0; b < n; b++ {
		for o := 0; o < oc; o++ {
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					var s, sa float64
					if bias != nil {
						s, sa = float64(bias[o]), math.Abs(float64(bias[o]))
					}
					for ci := 0; ci < c; ci++ {
						for ky := 0; ky < kh; ky++ {
							iy := oy*sh - ph + ky
							if iy < 0 || iy >= h {
								continue
							}
							for kx := 0; kx < kw; kx++ {
								ix := ox*sw - pw + kx
								if ix < 0 || ix >= w {
									continue
								}
								v := float64(x[((b*c+ci)*h+iy)*w+ix]) * float64(weight[((o*c+ci)*kh+ky)*kw+kx])
								s += v
								sa += math.Abs(v)
							}
						}
					}
					i := ((b*oc+o)*oh+oy)*ow + ox
					want[i], scale[i] = s, sa
				}
			}
		}
	}
	return want, scale
}

// convTol is the allowed error relative to an output's sum of magnitudes.
const convTol = 1e-5

func TestConv2D(t *testing.T) {
	tests := []struct {
		n, c, h, w, oc, kh, kw, sh, sw, ph, pw int
		bias                                   bool
	}{
		{1, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, true},     // odd sizes, c not a multiple of 8
		{2, 5, 11, 6, 7, 3, 3, 1, 1, 1, 1, false},   // batch 2, no bias
		{2, 4, 9, 13, 6, 3, 3, 2, 2, 1, 1, true},    // stride 2, odd input
		{1, 6, 8, 8, 4, 3, 3, 2, 2, 0, 0, false},    // stride 2 unpadded (after explicit padding)
		{2, 9, 5, 7, 11, 1, 1, 1, 1, 0, 0, true},    // 1×1 as plain GEMM
		{1, 3, 6, 5, 2, 1, 1, 2, 2, 0, 0, false},    // 1×1 stride 2
		{1, 4, 16, 16, 40, 3, 3, 1, 1, 1, 1, true},  // wide output rows, several strips per row
		{1, 17, 5, 3, 33, 3, 3, 1, 1, 1, 1, true},   // rows narrower than a strip
		{1, 2, 7, 7, 3, 5, 3, 1, 2, 2, 1, false},    // non-square kernel and stride
		{1, 40, 12, 12, 37, 3, 3, 1, 1, 1, 1, true}, // depth 360 > one panel
		{2, 4, 1, 1, 8, 3, 3, 1, 1, 1, 1, true},     // 1×1 image: only the centre tap
		{1, 300, 6, 6, 20, 3, 3, 1, 1, 1, 1, false}, // depth 2700: several panels
		{1, 8, 64, 64, 16, 3, 3, 1, 1, 1, 1, true},  // pixels > one task chunk
		{1, 3, 33, 65, 320, 3, 3, 2, 2, 1, 1, true}, // oc > pixels: shared cols
		{1, 16, 3, 4, 200, 1, 1, 1, 1, 0, 0, false}, // 1×1, oc > pixels
	}
	short := testing.Short() || raceEnabled
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tt := range tests {
		if short && tt.c*tt.kh*tt.kw*tt.h*tt.w*tt.oc > 3_000_000 {
			continue
		}
		name := fmt.Sprintf("n%d_c%d_%dx%d_oc%d_k%dx%d_s%dx%d_p%dx%d_bias%v", tt.n, tt.c, tt.h, tt.w, tt.oc, tt.kh, tt.kw, tt.sh, tt.sw, tt.ph, tt.pw, tt.bias)
		t.Run(name, func(t *testing.T) {
			x := randSlice(rng, tt.n*tt.c*tt.h*tt.w)
			weight := randSlice(rng, tt.oc*tt.c*tt.kh*tt.kw)
			var bias []float32
			if tt.bias {
				bias = randSlice(rng, tt.oc)
			}
			x0, w0, b0 := slices.Clone(x), slices.Clone(weight), slices.Clone(bias)
			oh := (tt.h+2*tt.ph-tt.kh)/tt.sh + 1
			ow := (tt.w+2*tt.pw-tt.kw)/tt.sw + 1
			size := tt.n * tt.oc * oh * ow
			dst := make([]float32, size+5)
			want, scale := refConv(x, tt.n, tt.c, tt.h, tt.w, weight, tt.oc, tt.kh, tt.kw, tt.sh, tt.sw, tt.ph, tt.pw, bias)
			for _, path := range convPaths() {
				for i := range dst {
					dst[i] = float32(math.NaN()) // must all be overwritten, and the tail kept
				}
				path.run(dst, x, tt.n, tt.c, tt.h, tt.w, weight, tt.oc, tt.kh, tt.kw, tt.sh, tt.sw, tt.ph, tt.pw, bias)
				if err := checkConv(dst, size, want, scale); err != nil {
					t.Errorf("%s: %v", path.name, err)
				}
			}
			if !slices.Equal(x, x0) || !slices.Equal(weight, w0) || !slices.Equal(bias, b0) {
				t.Error("inputs were modified")
			}
		})
	}
}

// convPath is one way to run Conv2D.
type convPath struct {
	name string
	run  func(dst, x []float32, n, c, h, w int, weight []float32, oc, kh, kw, sh, sw, ph, pw int, bias []float32)
}

// convPaths are the public entry point, then for each kernel: packing from
// the original image with bounds checks rather than from a padded copy, and
// single-threaded.
func convPaths() []convPath {
	paths := []convPath{{"Conv2D", Conv2D}}
	for _, kern := range availableKernels() {
		paths = append(paths,
			convPath{kern.name + "/unpadded", func(dst, x []float32, n, c, h, w int, weight []float32, oc, kh, kw, sh, sw, ph, pw int, bias []float32) {
				conv2D(kern, 3, 0, dst, x, n, c, h, w, weight, oc, kh, kw, sh, sw, ph, pw, bias)
			}},
			convPath{kern.name + "/w1", func(dst, x []float32, n, c, h, w int, weight []float32, oc, kh, kw, sh, sw, ph, pw int, bias []float32) {
				conv2D(kern, 1, maxPaddedCopy, dst, x, n, c, h, w, weight, oc, kh, kw, sh, sw, ph, pw, bias)
			}},
		)
	}
	return paths
}

// checkConv compares dst with the reference and checks that the elements
// after the output were not written.
func checkConv(dst []float32, size int, want, scale []float64) error {
	worst, wi := 0.0, -1
	for i, wv := range want {
		g := float64(dst[i])
		e := math.Abs(g-wv) / (scale[i] + 1e-30)
		if math.IsNaN(g) {
			e = math.Inf(1)
		}
		if e > worst {
			worst, wi = e, i
		}
	}
	if worst > convTol {
		return fmt.Errorf("dst[%d] = %v, want %v (error %.3g of magnitude sum, tolerance %g)", wi, dst[wi], want[wi], worst, convTol)
	}
	for i := size; i < len(dst); i++ {
		if !math.IsNaN(float64(dst[i])) {
			return fmt.Errorf("dst[%d] past the output was written: %v", i, dst[i])
		}
	}
	return nil
}

func TestConv2DPanics(t *testing.T) {
	x := make([]float32, 2*3*4*4)
	w := make([]float32, 5*3*3*3)
	dst := make([]float32, 2*5*4*4)
	tests := []struct {
		name string
		f    func()
	}{
		{"zero stride", func() { Conv2D(dst, x, 2, 3, 4, 4, w, 5, 3, 3, 0, 1, 1, 1, nil) }},
		{"short x", func() { Conv2D(dst, x[:10], 2, 3, 4, 4, w, 5, 3, 3, 1, 1, 1, 1, nil) }},
		{"short weight", func() { Conv2D(dst, x, 2, 3, 4, 4, w[:20], 5, 3, 3, 1, 1, 1, 1, nil) }},
		{"short dst", func() { Conv2D(dst[:7], x, 2, 3, 4, 4, w, 5, 3, 3, 1, 1, 1, 1, nil) }},
		{"short bias", func() { Conv2D(dst, x, 2, 3, 4, 4, w, 5, 3, 3, 1, 1, 1, 1, make([]float32, 2)) }},
		{"kernel too large", func() { Conv2D(dst, x, 2, 3, 4, 4, make([]float32, 5*3*7*7), 5, 7, 7, 1, 1, 0, 0, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tt.f()
		})
	}
}
