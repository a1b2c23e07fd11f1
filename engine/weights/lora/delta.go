package lora

import (
	"fmt"

	"github.com/darkroom-ai/darkroom/engine/backend/cpu/gemm"

	"github.com/darkroom-ai/darkroom/engine/tensor"
)

// delta is an adapter's weight difference, flattened in the target's
// layout, and the scale it is applied with (alpha/rank; 1 where the kind
// has no rank), before the strength.
type delta struct {
	w, bias []float32
	scale   float64
}

// matmul returns a [m,k] · b [k,n] (the CPU backend's SGEMM: a LoRA of
// rank 32 over SDXL is tens of GFLOP).
func matmul(a, b []float32, m, k, n int) []float32 {
	out := make([]float32, m*n)
	if m > 0 && n > 0 && k > 0 {
		gemm.Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, out, n)
	}
	return out
}

// tucker rebuilds a LyCORIS Tucker-decomposed factor:
// out[p,r,k,l] = Σ_{i,j} t[i,j,k,l]·wb[j,r]·wa[i,p], with t [I,J,K,L],
// wb [J,R] and wa [I,P]; out is [P,R,K,L].
func tucker(t []float32, ts tensor.Shape, wb []float32, wbs tensor.Shape, wa []float32, was tensor.Shape) ([]float32, tensor.Shape, error) {
	if len(ts) != 4 || len(wb) == 0 || len(wa) == 0 || wbs[0] != ts[1] || was[0] != ts[0] {
		return nil, nil, fmt.Errorf("the Tucker core %v does not fit factors %v and %v", ts, was, wbs)
	}
	I, J, K, L := ts[0], ts[1], ts[2], ts[3]
	R, P := len(wb)/J, len(wa)/I
	kl := K * L
	// tmp[i, r, kl] = Σ_j t[i, j, kl]·wb[j, r]
	tmp := make([]float32, I*R*kl)
	for i := range I {
		for j := range J {
			for r := range R {
				w := wb[j*R+r]
				if w == 0 {
					continue
				}
				src := t[(i*J+j)*kl : (i*J+j+1)*kl]
				dst := tmp[(i*R+r)*kl : (i*R+r+1)*kl]
				for x := range kl {
					dst[x] += src[x] * w
				}
			}
		}
	}
	// out[p, r, kl] = Σ_i wa[i, p]·tmp[i, r, kl]
	out := make([]float32, P*R*kl)
	for i := range I {
		for p := range P {
			w := wa[i*P+p]
			if w == 0 {
				continue
			}
			src := tmp[i*R*kl : (i+1)*R*kl]
			dst := out[p*R*kl : (p+1)*R*kl]
			for x := range src {
				dst[x] += w * src[x]
			}
		}
	}
	return out, tensor.Shape{P, R, K, L}, nil
}

// kron returns the Kronecker product of w1 [a,b] and w2 [c,d,...]:
// [a·c, b·d, ...] (w1 is read as [a,b,1,1] for a convolution's w2).
func kron(w1 []float32, s1 tensor.Shape, w2 []float32, s2 tensor.Shape) ([]float32, error) {
	if len(s1) < 2 || len(s2) < 2 || s1.NumElements() != s1[0]*s1[1] {
		return nil, fmt.Errorf("the Kronecker factors %v and %v: want a matrix and a matrix or kernel", s1, s2)
	}
	a, b := s1[0], s1[1]
	c, d := s2[0], s2[1]
	kl := s2.NumElements() / (c * d)
	out := make([]float32, a*c*b*d*kl)
	rowLen := b * d * kl
	for x := range a {
		for u := range b {
			f := w1[x*b+u]
			for y := range c {
				dst := out[(x*c+y)*rowLen+u*d*kl:]
				src := w2[y*d*kl : (y+1)*d*kl]
				for k := range src {
					dst[k] = f * src[k]
				}
			}
		}
	}
	return out, nil
}

// compute returns an adapter's ΔW for a target of numel elements (-1: a
// bias, whose weight's size is not checked).
func (f *file) compute(a *adapter, numel int) (delta, error) {
	get := func(role string) ([]float32, tensor.Shape, error) { return f.tensor(a, role) }
	alpha, _, err := get("alpha")
	if err != nil {
		return delta{}, err
	}
	if alpha != nil && len(alpha) != 1 {
		return delta{}, fmt.Errorf("%s: %q: alpha has %d values, want 1", f.path, a.parts["alpha"], len(alpha))
	}
	scaleFor := func(rank int) float64 {
		if alpha == nil || rank <= 0 {
			return 1
		}
		return float64(alpha[0]) / float64(rank)
	}
	var d delta
	switch a.kind {
	case LoRA:
		up, us, err := get("up")
		if err != nil {
			return delta{}, err
		}
		down, ds, err := get("down")
		if err != nil {
			return delta{}, err
		}
		mid, ms, err := get("mid")
		if err != nil {
			return delta{}, err
		}
		if len(us) < 2 || len(ds) < 2 || us.NumElements()/us[0] != ds[0] {
			return delta{}, fmt.Errorf("%s: %q: up %v and down %v do not multiply (rank %d)", f.path, a.module, us, ds, ds[0])
		}
		rank := ds[0]
		if mid != nil {
			// down'[m, i, k, l] = Σ_q mid[m, q, k, l]·down[q, i]
			if len(ms) != 4 || ms[1] != rank || ds.NumElements() != rank*ds[1] || us.NumElements()/us[0] != ms[0] {
				return delta{}, fmt.Errorf("%s: %q: lora_mid %v does not fit down %v and up %v", f.path, a.module, ms, ds, us)
			}
			in, kl := ds[1], ms[2]*ms[3]
			nd := make([]float32, ms[0]*in*kl)
			for m := range ms[0] {
				for q := range rank {
					for i := range in {
						w := down[q*in+i]
						src := mid[(m*rank+q)*kl : (m*rank+q+1)*kl]
						dst := nd[(m*in+i)*kl : (m*in+i+1)*kl]
						for x := range kl {
							dst[x] += src[x] * w
						}
					}
				}
			}
			down, ds = nd, tensor.Shape{ms[0], in * kl}
		}
		r := ds[0]
		d.w = matmul(up, down, us[0], r, ds.NumElements()/r)
		d.scale = scaleFor(rank)
	case LoHa:
		half := func(n string) ([]float32, int, error) {
			wa, was, err := get("w" + n + "a")
			if err != nil {
				return nil, 0, err
			}
			wb, wbs, err := get("w" + n + "b")
			if err != nil {
				return nil, 0, err
			}
			t, ts, err := get("t" + n)
			if err != nil {
				return nil, 0, err
			}
			if t != nil {
				w, _, err := tucker(t, ts, wb, wbs, wa, was)
				if err != nil {
					return nil, 0, fmt.Errorf("%s: %q: %w", f.path, a.module, err)
				}
				return w, wbs[0], nil
			}
			if len(was) != 2 || len(wbs) < 2 || was[1] != wbs[0] {
				return nil, 0, fmt.Errorf("%s: %q: hada_w%s_a %v and hada_w%s_b %v do not multiply", f.path, a.module, n, was, n, wbs)
			}
			return matmul(wa, wb, was[0], was[1], wbs.NumElements()/wbs[0]), wbs[0], nil
		}
		w1, rank, err := half("1")
		if err != nil {
			return delta{}, err
		}
		w2, _, err := half("2")
		if err != nil {
			return delta{}, err
		}
		if len(w1) != len(w2) {
			return delta{}, fmt.Errorf("%s: %q: the two Hadamard factors have %d and %d elements", f.path, a.module, len(w1), len(w2))
		}
		for i := range w1 {
			w1[i] *= w2[i]
		}
		d.w, d.scale = w1, scaleFor(rank)
	case LoKr:
		rank := 0
		factor := func(n string) ([]float32, tensor.Shape, error) {
			w, ws, err := get("w" + n)
			if err != nil || w != nil {
				return w, ws, err
			}
			wa, was, err := get("w" + n + "a")
			if err != nil {
				return nil, nil, err
			}
			wb, wbs, err := get("w" + n + "b")
			if err != nil {
				return nil, nil, err
			}
			rank = wbs[0]
			if t, ts, err := get("t" + n); err != nil {
				return nil, nil, err
			} else if t != nil {
				w, s, err := tucker(t, ts, wb, wbs, wa, was)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %q: %w", f.path, a.module, err)
				}
				return w, s, nil
			}
			if len(was) != 2 || len(wbs) < 2 || was[1] != wbs[0] {
				return nil, nil, fmt.Errorf("%s: %q: lokr_w%s_a %v and lokr_w%s_b %v do not multiply", f.path, a.module, n, was, n, wbs)
			}
			cols := wbs.NumElements() / wbs[0]
			return matmul(wa, wb, was[0], was[1], cols), tensor.Shape{was[0], cols}, nil
		}
		w1, s1, err := factor("1")
		if err != nil {
			return delta{}, err
		}
		w2, s2, err := factor("2")
		if err != nil {
			return delta{}, err
		}
		w, err := kron(w1, s1, w2, s2)
		if err != nil {
			return delta{}, fmt.Errorf("%s: %q: %w", f.path, a.module, err)
		}
		d.w, d.scale = w, scaleFor(rank)
	case Diff:
		w, _, err := get("diff")
		if err != nil {
			return delta{}, err
		}
		b, _, err := get("diff_b")
		if err != nil {
			return delta{}, err
		}
		d.w, d.bias, d.scale = w, b, 1
	}
	if d.w != nil && numel >= 0 && len(d.w) != numel {
		return delta{}, fmt.Errorf("%s: %q: its ΔW has %d elements, the weight it targets %d", f.path, a.module, len(d.w), numel)
	}
	return d, nil
}
