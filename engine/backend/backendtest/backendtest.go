// Package backendtest is the conformance suite every backend.Device must
// pass. Each case computes a float64 reference on the host from the op's
// definition and compares the device's result with an absolute plus
// relative tolerance, and checks that the inputs were not modified.
//
// A backend hooks it up in one line:
//
//	func TestConformance(t *testing.T) { backendtest.Run(t, func() backend.Device { return cpu.New() }, 1e-5) }
package backendtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
)

// Run runs every case against the device. tol is the relative tolerance
// of the device's compute precision (about 1e-5 for float32, 1e-2 for fp16).
func Run(t *testing.T, newDevice func() backend.Device, tol float64) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &harness{t: t, dev: newDevice(), tol: tol, rng: rand.New(rand.NewPCG(1, uint64(len(c.name))))}
			c.fn(h)
		})
	}
}

type harness struct {
	t   *testing.T
	dev backend.Device
	tol float64
	rng *rand.Rand
}

// input is a host tensor uploaded to the device, remembered to check it is unchanged.
type input struct {
	host  []float32
	t     *backend.Tensor
	shape []int
}

func (h *harness) rand(shape ...int) *input {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(h.rng.NormFloat64())
	}
	t := h.dev.Upload(v, shape...)
	// A device with 16-bit storage rounds the values: the references use
	// what the device holds.
	return &input{host: h.download(t), t: t, shape: shape}
}

func (h *harness) download(t *backend.Tensor) []float32 {
	h.t.Helper()
	v, err := h.dev.Download(t)
	if err != nil {
		h.t.Fatalf("download: %v", err)
	}
	return v
}

// poisoned allocates dst filled with NaN so unwritten elements show up.
func (h *harness) poisoned(shape ...int) *backend.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return h.dev.Upload(v, shape...)
}

// check compares got with want (float64) elementwise with
// |got−want| ≤ tol·(1 + |want|) and reports the largest difference.
func (h *harness) check(what string, got []float32, want []float64, ins ...*input) {
	h.t.Helper()
	if len(got) != len(want) {
		h.t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst, at := 0.0, -1
	for i := range got {
		d := math.Abs(float64(got[i]) - want[i])
		if math.IsNaN(d) {
			h.t.Fatalf("%s: element %d is NaN (want %g)", what, i, want[i])
		}
		if r := d / (1 + math.Abs(want[i])); r > worst {
			worst, at = r, i
		}
	}
	if worst > h.tol {
		h.t.Errorf("%s: max scaled error %.3g at %d (got %g want %g) > %g", what, worst, at, got[at], want[at], h.tol)
	}
	for _, in := range ins {
		if !slices.Equal(h.download(in.t), in.host) {
			h.t.Errorf("%s: an input of shape %v was modified", what, in.shape)
		}
	}
}

type testCase struct {
	name string
	fn   func(h *harness)
}

var cases = []testCase{
	{"matmul", testMatMul},
	{"linear", testLinear},
	{"conv2d", testConv2D},
	{"conv2d_add", testConv2DAdd},
	{"linear_add", testLinearAdd},
	{"linear_channels", testLinearChannels},
	{"groupnorm", testGroupNorm},
	{"layernorm", testLayerNorm},
	{"rmsnorm", testRMSNorm},
	{"softmax", testSoftmax},
	{"attention", testAttention},
	{"unary", testUnary},
	{"binary", testBinary},
	{"affine", testAffine},
	{"clamp", testClamp},
	{"geglu", testGEGLU},
	{"upsample", testUpsample},
	{"concat_slice", testConcatSlice},
	{"permute", testPermute},
	{"rank6", testRank6},
	{"embedding", testEmbedding},
	{"timestep", testTimestep},
}

func testMatMul(h *harness) {
	for _, s := range []struct {
		batch, m, k, n   int
		transB, batchedB bool
	}{{1, 1, 1, 1, false, false}, {1, 7, 13, 5, false, false}, {3, 17, 33, 9, true, false}, {2, 65, 8, 31, false, true}, {4, 5, 70, 3, true, true}} {
		a := h.rand(s.batch, s.m, s.k)
		bs := []int{s.k, s.n}
		if s.transB {
			bs = []int{s.n, s.k}
		}
		if s.batchedB {
			bs = append([]int{s.batch}, bs...)
		}
		b := h.rand(bs...)
		dst := h.poisoned(s.batch, s.m, s.n)
		h.dev.MatMul(dst, a.t, b.t, s.transB)
		want := make([]float64, s.batch*s.m*s.n)
		for bi := range s.batch {
			boff := 0
			if s.batchedB {
				boff = bi * s.k * s.n
			}
			for i := range s.m {
				for j := range s.n {
					var acc float64
					for p := range s.k {
						bv := b.host[boff+p*s.n+j]
						if s.transB {
							bv = b.host[boff+j*s.k+p]
						}
						acc += float64(a.host[(bi*s.m+i)*s.k+p]) * float64(bv)
					}
					want[(bi*s.m+i)*s.n+j] = acc
				}
			}
		}
		h.check(fmt.Sprintf("matmul %+v", s), h.download(dst), want, a, b)
	}
}

func testLinear(h *harness) {
	for _, s := range []struct {
		rows, in, out int
		bias          bool
	}{{1, 1, 1, true}, {5, 17, 9, true}, {77, 64, 256, false}, {3, 130, 33, true}} {
		x, w := h.rand(s.rows, s.in), h.rand(s.out, s.in)
		var b *input
		var bt *backend.Tensor
		if s.bias {
			b = h.rand(s.out)
			bt = b.t
		}
		dst := h.poisoned(s.rows, s.out)
		h.dev.Linear(dst, x.t, w.t, bt)
		var bh []float32
		ins := []*input{x, w}
		if b != nil {
			bh = b.host
			ins = append(ins, b)
		}
		want := linear64(x.host, w.host, bh, s.rows, s.in, s.out)
		h.check(fmt.Sprintf("linear %+v", s), h.download(dst), want, ins...)
	}
}

func testConv2D(h *harness) {
	for _, s := range []struct {
		n, c, hh, ww, o, k int
		p                  backend.Conv2DParams
		bias               bool
	}{
		{1, 3, 8, 8, 4, 3, backend.Conv2DSame(1, 1), true},
		{2, 5, 9, 7, 6, 3, backend.Conv2DSame(1, 1), false},
		{1, 4, 9, 11, 3, 3, backend.Conv2DSame(2, 1), true},
		{1, 8, 6, 6, 8, 3, backend.Conv2DParams{StrideH: 2, StrideW: 2, PadBottom: 1, PadRight: 1}, true},
		{2, 6, 5, 3, 7, 1, backend.Conv2DSame(1, 0), true},
		{1, 33, 4, 4, 2, 3, backend.Conv2DSame(1, 1), true},
	} {
		x, w := h.rand(s.n, s.c, s.hh, s.ww), h.rand(s.o, s.c, s.k, s.k)
		var b *input
		var bt *backend.Tensor
		ins := []*input{x, w}
		if s.bias {
			b = h.rand(s.o)
			bt = b.t
			ins = append(ins, b)
		}
		oh, ow := s.p.OutSize(s.hh, s.ww, s.k, s.k)
		dst := h.poisoned(s.n, s.o, oh, ow)
		h.dev.Conv2D(dst, x.t, w.t, bt, s.p)
		var bh []float32
		if b != nil {
			bh = b.host
		}
		want := conv64(x.host, w.host, bh, s.n, s.c, s.hh, s.ww, s.o, s.k, s.p)
		h.check(fmt.Sprintf("conv2d %+v", s), h.download(dst), want, ins...)
	}
}

// conv64 is the float64 reference convolution of NCHW x with w [o, c, k, k]
// plus bias (nil for none).
func conv64(x, w, bias []float32, n, c, hh, ww, o, k int, p backend.Conv2DParams) []float64 {
	oh, ow := p.OutSize(hh, ww, k, k)
	want := make([]float64, n*o*oh*ow)
	for ni := range n {
		for oc := range o {
			for y := range oh {
				for xx := range ow {
					var acc float64
					if bias != nil {
						acc = float64(bias[oc])
					}
					for ci := range c {
						for ky := range k {
							for kx := range k {
								iy, ix := y*p.StrideH+ky-p.PadTop, xx*p.StrideW+kx-p.PadLeft
								if iy < 0 || iy >= hh || ix < 0 || ix >= ww {
									continue
								}
								acc += float64(x[((ni*c+ci)*hh+iy)*ww+ix]) * float64(w[((oc*c+ci)*k+ky)*k+kx])
							}
						}
					}
					want[((ni*o+oc)*oh+y)*ow+xx] = acc
				}
			}
		}
	}
	return want
}

// testConv2DAdd checks the convolution accumulated onto a residual: a full
// skip connection, a per-channel term [N, O, 1, 1], and dst itself.
func testConv2DAdd(h *harness) {
	for _, s := range []struct {
		n, c, hh, ww, o, k int
		p                  backend.Conv2DParams
		res                string // "full", "channel" or "inplace"
		bias               bool
	}{
		{2, 5, 9, 7, 6, 3, backend.Conv2DSame(1, 1), "full", true},
		{2, 5, 9, 7, 6, 3, backend.Conv2DSame(1, 1), "channel", true},
		{1, 4, 9, 11, 3, 3, backend.Conv2DSame(2, 1), "inplace", true},
		{2, 6, 5, 3, 7, 1, backend.Conv2DSame(1, 0), "full", false},
		{1, 3, 6, 6, 4, 3, backend.Conv2DSame(1, 1), "channel", false},
		{1, 3, 6, 6, 4, 3, backend.Conv2DSame(1, 1), "inplace", false},
		{2, 4, 8, 8, 6, 3, backend.Conv2DSame(1, 1), "full", true}, // 16-byte accumulator fill
		{2, 4, 8, 8, 6, 3, backend.Conv2DSame(1, 1), "channel", true},
	} {
		x, w := h.rand(s.n, s.c, s.hh, s.ww), h.rand(s.o, s.c, s.k, s.k)
		ins := []*input{x, w}
		var bh []float32
		var bt *backend.Tensor
		if s.bias {
			b := h.rand(s.o)
			bh, bt = b.host, b.t
			ins = append(ins, b)
		}
		oh, ow := s.p.OutSize(s.hh, s.ww, s.k, s.k)
		want := conv64(x.host, w.host, bh, s.n, s.c, s.hh, s.ww, s.o, s.k, s.p)
		var dst, res *backend.Tensor
		switch s.res {
		case "full":
			r := h.rand(s.n, s.o, oh, ow)
			for i := range want {
				want[i] += float64(r.host[i])
			}
			dst, res = h.poisoned(s.n, s.o, oh, ow), r.t
			ins = append(ins, r)
		case "channel":
			r := h.rand(s.n, s.o, 1, 1)
			for i := range want {
				want[i] += float64(r.host[i/(oh*ow)])
			}
			dst, res = h.poisoned(s.n, s.o, oh, ow), r.t
			ins = append(ins, r)
		default:
			r := h.rand(s.n, s.o, oh, ow)
			for i := range want {
				want[i] += float64(r.host[i])
			}
			dst, res = r.t, r.t
		}
		h.dev.Conv2DAdd(dst, x.t, w.t, bt, res, s.p)
		h.check(fmt.Sprintf("conv2d add %+v", s), h.download(dst), want, ins...)
	}
}

// linear64 is the float64 reference of x [rows, in]·wᵀ + bias.
func linear64(x, w, bias []float32, rows, in, out int) []float64 {
	want := make([]float64, rows*out)
	for r := range rows {
		for o := range out {
			var acc float64
			if bias != nil {
				acc = float64(bias[o])
			}
			for i := range in {
				acc += float64(x[r*in+i]) * float64(w[o*in+i])
			}
			want[r*out+o] = acc
		}
	}
	return want
}

// testLinearAdd checks dst = x·wᵀ + bias + res with res separate and dst.
func testLinearAdd(h *harness) {
	for _, s := range []struct {
		rows, in, out int
		bias, inplace bool
	}{{5, 17, 9, true, false}, {77, 64, 48, false, true}, {3, 130, 33, true, true}, {1, 1, 1, true, false}} {
		x, w := h.rand(s.rows, s.in), h.rand(s.out, s.in)
		ins := []*input{x, w}
		var bh []float32
		var bt *backend.Tensor
		if s.bias {
			b := h.rand(s.out)
			bh, bt = b.host, b.t
			ins = append(ins, b)
		}
		want := linear64(x.host, w.host, bh, s.rows, s.in, s.out)
		r := h.rand(s.rows, s.out)
		for i := range want {
			want[i] += float64(r.host[i])
		}
		dst := r.t
		if !s.inplace {
			dst = h.poisoned(s.rows, s.out)
			ins = append(ins, r)
		}
		h.dev.LinearAdd(dst, x.t, w.t, bt, r.t)
		h.check(fmt.Sprintf("linear add %+v", s), h.download(dst), want, ins...)
	}
}

// testLinearChannels checks LinearFromChannels and LinearToChannels
// against a transposed Linear (with and without a residual).
func testLinearChannels(h *harness) {
	for _, s := range []struct {
		n, c, l, out int
		bias, conv   bool
		res          string // "", "full" or "inplace" (LinearToChannels)
	}{{1, 3, 5, 4, true, false, ""}, {2, 16, 35, 12, true, true, "full"}, {2, 8, 64, 8, false, false, "inplace"}, {2, 8, 64, 8, true, false, "full"}, {3, 7, 9, 5, true, false, "inplace"}} {
		wshape := []int{s.out, s.c}
		if s.conv {
			wshape = []int{s.out, s.c, 1, 1}
		}
		x, w := h.rand(s.n, s.c, s.l), h.rand(wshape...)
		ins := []*input{x, w}
		var bh []float32
		var bt *backend.Tensor
		if s.bias {
			b := h.rand(s.out)
			bh, bt = b.host, b.t
			ins = append(ins, b)
		}
		// From channels: tokens[n][l][o] = Σ_c x[n][c][l]·w[o][c] + bias.
		xt := make([]float32, s.n*s.l*s.c)
		for ni := range s.n {
			for ci := range s.c {
				for li := range s.l {
					xt[(ni*s.l+li)*s.c+ci] = x.host[(ni*s.c+ci)*s.l+li]
				}
			}
		}
		want := linear64(xt, w.host, bh, s.n*s.l, s.c, s.out)
		dst := h.poisoned(s.n, s.l, s.out)
		h.dev.LinearFromChannels(dst, x.t, w.t, bt)
		h.check(fmt.Sprintf("linear from channels %+v", s), h.download(dst), want, ins...)

		// To channels: x as tokens [N, L, C] -> [N, out, L].
		tok := h.rand(s.n, s.l, s.c)
		ins[0] = tok
		lin := linear64(tok.host, w.host, bh, s.n*s.l, s.c, s.out)
		want = make([]float64, s.n*s.out*s.l)
		for ni := range s.n {
			for o := range s.out {
				for li := range s.l {
					want[(ni*s.out+o)*s.l+li] = lin[(ni*s.l+li)*s.out+o]
				}
			}
		}
		// Channels-first outputs are maps [N, out, H, W] in the models.
		oshape := []int{s.n, s.out, s.l}
		if s.l%5 == 0 {
			oshape = []int{s.n, s.out, 5, s.l / 5}
		} else if s.l%8 == 0 {
			oshape = []int{s.n, s.out, 8, s.l / 8}
		}
		var res *backend.Tensor
		out := h.poisoned(oshape...)
		if s.res != "" {
			r := h.rand(oshape...)
			for i := range want {
				want[i] += float64(r.host[i])
			}
			res = r.t
			if s.res == "inplace" {
				out = r.t
			} else {
				ins = append(ins, r)
			}
		}
		h.dev.LinearToChannels(out, tok.t, w.t, bt, res)
		h.check(fmt.Sprintf("linear to channels %+v", s), h.download(out), want, ins...)
	}
}

func testGroupNorm(h *harness) {
	for _, s := range []struct {
		n, c, hw, g int
		silu        bool
	}{{1, 32, 16, 32, false}, {2, 64, 9, 32, true}, {1, 6, 5, 3, true}, {2, 4, 7, 1, false},
		{2, 64, 64, 8, true}, {1, 4, 6152, 1, true}} { // the last two: 16-byte and split (3 chunks) kernels on the GPU
		x, gm, bt := h.rand(s.n, s.c, s.hw), h.rand(s.c), h.rand(s.c)
		dst := h.poisoned(s.n, s.c, s.hw)
		const eps = 1e-5
		h.dev.GroupNorm(dst, x.t, gm.t, bt.t, s.g, eps, s.silu)
		want := make([]float64, len(x.host))
		cpg := s.c / s.g
		for ni := range s.n {
			for g := range s.g {
				base := (ni*s.c + g*cpg) * s.hw
				seg := x.host[base : base+cpg*s.hw]
				var mean, vr float64
				for _, v := range seg {
					mean += float64(v)
				}
				mean /= float64(len(seg))
				for _, v := range seg {
					vr += (float64(v) - mean) * (float64(v) - mean)
				}
				vr /= float64(len(seg))
				for i := range seg {
					ch := g*cpg + i/s.hw
					y := (float64(seg[i])-mean)/math.Sqrt(vr+eps)*float64(gm.host[ch]) + float64(bt.host[ch])
					if s.silu {
						y = y / (1 + math.Exp(-y))
					}
					want[base+i] = y
				}
			}
		}
		h.check(fmt.Sprintf("groupnorm %+v", s), h.download(dst), want, x, gm, bt)
	}
}

func testLayerNorm(h *harness) {
	for _, s := range []struct{ rows, dim int }{{1, 1}, {7, 64}, {3, 320}, {9, 1280}, {2, 1536}, {2, 1537}, {3, 3000}} {
		x, g, b := h.rand(s.rows, s.dim), h.rand(s.dim), h.rand(s.dim)
		dst := h.poisoned(s.rows, s.dim)
		h.dev.LayerNorm(dst, x.t, g.t, b.t, 1e-5)
		want := make([]float64, len(x.host))
		for r := range s.rows {
			row := x.host[r*s.dim : (r+1)*s.dim]
			var mean, vr float64
			for _, v := range row {
				mean += float64(v)
			}
			mean /= float64(s.dim)
			for _, v := range row {
				vr += (float64(v) - mean) * (float64(v) - mean)
			}
			vr /= float64(s.dim)
			for i, v := range row {
				want[r*s.dim+i] = (float64(v)-mean)/math.Sqrt(vr+1e-5)*float64(g.host[i]) + float64(b.host[i])
			}
		}
		h.check(fmt.Sprintf("layernorm %+v", s), h.download(dst), want, x, g, b)
	}
}

// testRMSNorm checks RMSNorm against a float64 reference, with and
// without a weight, on rows with large values (T5's hidden states reach
// thousands) and rows that do not divide the block size.
func testRMSNorm(h *harness) {
	for _, s := range []struct {
		rows, dim int
		weight    bool
		scale     float32
	}{{1, 1, true, 1}, {7, 64, true, 1}, {3, 320, false, 1}, {5, 4096, true, 1}, {2, 1537, true, 1}, {4, 3000, false, 1}, {3, 512, true, 300}} {
		x, w := h.rand(s.rows, s.dim), h.rand(s.dim)
		if s.scale != 1 {
			for i := range x.host {
				x.host[i] *= s.scale
			}
			x.t = h.dev.Upload(x.host, s.rows, s.dim)
			x.host = h.download(x.t)
		}
		dst := h.poisoned(s.rows, s.dim)
		var wt *backend.Tensor
		if s.weight {
			wt = w.t
		}
		const eps = 1e-6
		h.dev.RMSNorm(dst, x.t, wt, eps)
		want := make([]float64, len(x.host))
		for r := range s.rows {
			row := x.host[r*s.dim : (r+1)*s.dim]
			var sq float64
			for _, v := range row {
				sq += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(sq/float64(s.dim)+eps)
			for i, v := range row {
				y := float64(v) * inv
				if s.weight {
					y *= float64(w.host[i])
				}
				want[r*s.dim+i] = y
			}
		}
		ins := []*input{x}
		if s.weight {
			ins = append(ins, w)
		}
		h.check(fmt.Sprintf("rmsnorm %+v", s), h.download(dst), want, ins...)
	}
}

func softmax64(row []float64) {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, v)
	}
	var sum float64
	for i, v := range row {
		row[i] = math.Exp(v - mx)
		sum += row[i]
	}
	for i := range row {
		row[i] /= sum
	}
}

func testSoftmax(h *harness) {
	x := h.rand(5, 33)
	for i := range x.host {
		x.host[i] *= 10
	}
	x.t = h.dev.Upload(x.host, 5, 33)
	x.host = h.download(x.t) // what a 16-bit device holds
	dst := h.poisoned(5, 33)
	h.dev.Softmax(dst, x.t)
	want := make([]float64, len(x.host))
	for r := range 5 {
		row := want[r*33 : (r+1)*33]
		for i := range row {
			row[i] = float64(x.host[r*33+i])
		}
		softmax64(row)
	}
	h.check("softmax", h.download(dst), want, x)
}

func testAttention(h *harness) {
	for _, s := range []struct {
		b, nq, nk, heads, dh int
		causal               bool
	}{{1, 1, 1, 1, 4, false}, {2, 77, 77, 1, 64, true}, {2, 130, 77, 8, 5, false}, {1, 300, 300, 2, 8, false}, {1, 65, 65, 3, 7, true}, {1, 70, 70, 1, 512, false}} {
		hd := s.heads * s.dh
		q, k, v := h.rand(s.b, s.nq, hd), h.rand(s.b, s.nk, hd), h.rand(s.b, s.nk, hd)
		scale := 1 / math.Sqrt(float64(s.dh))
		dst := h.poisoned(s.b, s.nq, hd)
		h.dev.Attention(dst, q.t, k.t, v.t, backend.AttentionParams{Heads: s.heads, Scale: float32(scale), Causal: s.causal})
		want := make([]float64, s.b*s.nq*hd)
		row := make([]float64, s.nk)
		for bi := range s.b {
			for hh := range s.heads {
				for i := range s.nq {
					for j := range s.nk {
						var dot float64
						for d := range s.dh {
							dot += float64(q.host[(bi*s.nq+i)*hd+hh*s.dh+d]) * float64(k.host[(bi*s.nk+j)*hd+hh*s.dh+d])
						}
						row[j] = dot * scale
						if s.causal && j > i {
							row[j] = math.Inf(-1)
						}
					}
					softmax64(row)
					for d := range s.dh {
						var acc float64
						for j := range s.nk {
							acc += row[j] * float64(v.host[(bi*s.nk+j)*hd+hh*s.dh+d])
						}
						want[(bi*s.nq+i)*hd+hh*s.dh+d] = acc
					}
				}
			}
		}
		h.check(fmt.Sprintf("attention %+v", s), h.download(dst), want, q, k, v)
	}
}

func testUnary(h *harness) {
	ref := map[backend.UnaryOp]func(float64) float64{
		backend.SiLU:      func(x float64) float64 { return x / (1 + math.Exp(-x)) },
		backend.GELU:      func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) },
		backend.GELUTanh:  func(x float64) float64 { return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))) },
		backend.QuickGELU: func(x float64) float64 { return x / (1 + math.Exp(-1.702*x)) },
		backend.ReLU:      func(x float64) float64 { return math.Max(x, 0) },
		backend.Tanh:      math.Tanh,
		backend.Sigmoid:   func(x float64) float64 { return 1 / (1 + math.Exp(-x)) },
		backend.Exp:       math.Exp,
		backend.Neg:       func(x float64) float64 { return -x },
	}
	for op := backend.SiLU; op <= backend.Neg; op++ {
		x := h.rand(3, 1000)
		dst := h.poisoned(3, 1000)
		h.dev.Unary(op, dst, x.t)
		want := make([]float64, len(x.host))
		for i, v := range x.host {
			want[i] = ref[op](float64(v))
		}
		h.check("unary "+op.String(), h.download(dst), want, x)
	}
}

func testBinary(h *harness) {
	ref := map[backend.BinaryOp]func(a, b float64) float64{
		backend.Add: func(a, b float64) float64 { return a + b },
		backend.Sub: func(a, b float64) float64 { return a - b },
		backend.Mul: func(a, b float64) float64 { return a * b },
		backend.Div: func(a, b float64) float64 { return a / b },
	}
	shapes := []struct{ out, a, b []int }{
		{[]int{2, 3, 4}, []int{2, 3, 4}, []int{2, 3, 4}},
		{[]int{2, 3, 4, 5}, []int{2, 3, 4, 5}, []int{2, 3, 1, 1}},
		{[]int{2, 3, 4}, []int{2, 3, 4}, []int{4}},
		{[]int{2, 3, 4}, []int{1, 3, 1}, []int{2, 1, 4}},
		{[]int{5, 7}, []int{5, 1}, []int{5, 7}},
		{[]int{3, 1}, []int{3, 1}, []int{1}},
		// Row broadcasts (the CUDA backend's binary_rows): modulation
		// vectors [B, 1, D], RoPE tables [1, L, 1, hd], either operand.
		{[]int{2, 5, 16}, []int{2, 5, 16}, []int{2, 1, 16}},
		{[]int{2, 5, 12}, []int{2, 1, 12}, []int{2, 5, 12}},
		{[]int{1, 6, 3, 8}, []int{1, 6, 3, 8}, []int{1, 6, 1, 8}},
		{[]int{2, 6, 3, 8}, []int{1, 6, 1, 8}, []int{2, 6, 3, 8}},
		{[]int{3, 5, 7}, []int{3, 5, 7}, []int{7}},
	}
	for op := backend.Add; op <= backend.Div; op++ {
		for _, s := range shapes {
			a, b := h.rand(s.a...), h.rand(s.b...)
			dst := h.poisoned(s.out...)
			h.dev.Binary(op, dst, a.t, b.t)
			want := make([]float64, prod(s.out))
			for i := range want {
				want[i] = ref[op](float64(a.host[bcastIndex(i, s.out, s.a)]), float64(b.host[bcastIndex(i, s.out, s.b)]))
			}
			h.check(fmt.Sprintf("binary %v %v %v", op, s.a, s.b), h.download(dst), want, a, b)
		}
	}
	// In place: dst aliases a.
	a, b := h.rand(4, 6), h.rand(6)
	h.dev.Binary(backend.Add, a.t, a.t, b.t)
	want := make([]float64, 24)
	for i := range want {
		want[i] = float64(a.host[i]) + float64(b.host[i%6])
	}
	h.check("binary in place", h.download(a.t), want, b)
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// bcastIndex maps a flat index of out to the flat index of a broadcast src.
func bcastIndex(i int, out, src []int) int {
	idx := 0
	stride := 1
	off := len(out) - len(src)
	for d := len(out) - 1; d >= 0; d-- {
		c := i % out[d]
		i /= out[d]
		if d >= off {
			if src[d-off] != 1 {
				idx += c * stride
			}
			stride *= src[d-off]
		}
	}
	return idx
}

func testAffine(h *harness) {
	x := h.rand(1000)
	dst := h.poisoned(1000)
	h.dev.Affine(dst, x.t, 0.5, -2)
	want := make([]float64, 1000)
	for i, v := range x.host {
		want[i] = float64(v)*0.5 - 2
	}
	h.check("affine", h.download(dst), want, x)
}

// testClamp checks Clamp on values inside and outside the bounds, on
// infinities, NaN, and in place.
func testClamp(h *harness) {
	x := h.rand(5, 37)
	for i := range x.host {
		x.host[i] *= 3
	}
	x.host[0], x.host[1], x.host[2] = float32(math.Inf(1)), float32(math.Inf(-1)), 1.5
	x.t = h.dev.Upload(x.host, 5, 37)
	x.host = h.download(x.t)
	const lo, hi = -2, 1.5
	dst := h.poisoned(5, 37)
	h.dev.Clamp(dst, x.t, lo, hi)
	want := make([]float64, len(x.host))
	for i, v := range x.host {
		want[i] = math.Min(math.Max(float64(v), lo), hi)
	}
	h.check("clamp", h.download(dst), want, x)
	n := h.rand(3)
	n.host[1] = float32(math.NaN())
	n.t = h.dev.Upload(n.host, 3)
	h.dev.Clamp(n.t, n.t, lo, hi)
	if got := h.download(n.t); !math.IsNaN(float64(got[1])) {
		h.t.Errorf("clamp in place: NaN became %g", got[1])
	}
}

func testGEGLU(h *harness) {
	// Half widths of 7 and 24 (the GPU's 16-byte path needs a multiple of 8).
	for _, hw := range []int{7, 24} {
		x := h.rand(3, 5, 2*hw)
		dst := h.poisoned(3, 5, hw)
		h.dev.GEGLU(dst, x.t)
		want := make([]float64, 3*5*hw)
		for r := range 15 {
			for i := range hw {
				a, g := float64(x.host[r*2*hw+i]), float64(x.host[r*2*hw+hw+i])
				want[r*hw+i] = a * 0.5 * g * (1 + math.Erf(g/math.Sqrt2))
			}
		}
		h.check(fmt.Sprintf("geglu half width %d", hw), h.download(dst), want, x)
	}
}

func testUpsample(h *harness) {
	x := h.rand(2, 3, 4, 5)
	dst := h.poisoned(2, 3, 8, 10)
	h.dev.Upsample2x(dst, x.t)
	want := make([]float64, 2*3*8*10)
	for p := range 6 {
		for y := range 8 {
			for xx := range 10 {
				want[(p*8+y)*10+xx] = float64(x.host[(p*4+y/2)*5+xx/2])
			}
		}
	}
	h.check("upsample2x", h.download(dst), want, x)
}

func testConcatSlice(h *harness) {
	a, b := h.rand(2, 3, 4), h.rand(2, 5, 4)
	dst := h.poisoned(2, 8, 4)
	h.dev.Concat(dst, 1, a.t, b.t)
	want := make([]float64, 64)
	for n := range 2 {
		for c := range 8 {
			for i := range 4 {
				if c < 3 {
					want[(n*8+c)*4+i] = float64(a.host[(n*3+c)*4+i])
				} else {
					want[(n*8+c)*4+i] = float64(b.host[(n*5+c-3)*4+i])
				}
			}
		}
	}
	h.check("concat", h.download(dst), want, a, b)
	cat := &input{host: h.download(dst), t: dst, shape: []int{2, 8, 4}}
	sl := h.poisoned(2, 4, 4)
	h.dev.Slice(sl, dst, 1, 2)
	wantS := make([]float64, 32)
	for n := range 2 {
		for c := range 4 {
			for i := range 4 {
				wantS[(n*4+c)*4+i] = want[(n*8+c+2)*4+i]
			}
		}
	}
	h.check("slice", h.download(sl), wantS, cat)
}

func testPermute(h *harness) {
	x := h.rand(2, 3, 4, 5)
	perm := []int{0, 2, 3, 1}
	dst := h.poisoned(2, 4, 5, 3)
	h.dev.Permute(dst, x.t, perm...)
	want := make([]float64, 120)
	for n := range 2 {
		for c := range 3 {
			for y := range 4 {
				for xx := range 5 {
					want[((n*4+y)*5+xx)*3+c] = float64(x.host[((n*3+c)*4+y)*5+xx])
				}
			}
		}
	}
	h.check("permute", h.download(dst), want, x)
}

// testRank6 checks the rank-6 Permute and broadcasting Binary that the
// upscalers' pixel shuffle and nearest-upsample add are made of, with
// sides that are not multiples of anything, and a negative-part Clamp.
func testRank6(h *harness) {
	const c, r, y, x = 3, 2, 5, 7
	in := h.rand(1, c, r, r, y, x)
	dst := h.poisoned(1, c, y, r, x, r)
	h.dev.Permute(dst, in.t, 0, 1, 4, 2, 5, 3) // pixel shuffle
	want := make([]float64, c*r*r*y*x)
	for ch := range c {
		for i := range r {
			for j := range r {
				for yy := range y {
					for xx := range x {
						want[(((ch*y+yy)*r+i)*x+xx)*r+j] = float64(in.host[(((ch*r+i)*r+j)*y+yy)*x+xx])
					}
				}
			}
		}
	}
	h.check("permute rank 6", h.download(dst), want, in)
	big := h.rand(1, c, y, r, x, r)
	small := h.rand(1, c, y, 1, x, 1)
	sum := h.poisoned(1, c, y, r, x, r)
	h.dev.Binary(backend.Add, sum, big.t, small.t) // nearest-upsample add
	for i := range want {
		xx, yy, ch := (i/r)%x, (i/(r*x*r))%y, i/(r*x*r*y)
		want[i] = float64(big.host[i]) + float64(small.host[(ch*y+yy)*x+xx])
	}
	h.check("broadcast add rank 6", h.download(sum), want, big, small)
	neg := h.poisoned(1, c, y, r, x, r)
	h.dev.Clamp(neg, big.t, -math.MaxFloat32, 0) // leaky / PReLU negative part
	for i, v := range big.host {
		want[i] = math.Min(float64(v), 0)
	}
	h.check("clamp negative part", h.download(neg), want, big)
}

func testEmbedding(h *harness) {
	table := h.rand(10, 6)
	ids := []int{3, 0, 9, 3}
	dst := h.poisoned(4, 6)
	h.dev.Embedding(dst, table.t, ids)
	want := make([]float64, 24)
	for i, id := range ids {
		for d := range 6 {
			want[i*6+d] = float64(table.host[id*6+d])
		}
	}
	h.check("embedding", h.download(dst), want, table)
}

func testTimestep(h *harness) {
	ts := []float32{0, 1, 999, 523.25}
	p := backend.TimestepParams{Dim: 32, FlipSinToCos: true, MaxPeriod: 10000, Scale: 1}
	dst := h.poisoned(4, 32)
	h.dev.TimestepEmbedding(dst, ts, p)
	want := make([]float64, 4*32)
	for i, t := range ts {
		for j := range 16 {
			arg := float64(t) * math.Exp(-math.Log(10000)*float64(j)/16)
			want[i*32+j] = math.Cos(arg)
			want[i*32+16+j] = math.Sin(arg)
		}
	}
	// Arguments up to 1000 rad lose float32 precision in the phase: compare
	// with an absolute tolerance scaled to that.
	saved := h.tol
	h.tol = math.Max(h.tol, 1e-4)
	h.check("timestep embedding", h.download(dst), want)
	h.tol = saved
}
