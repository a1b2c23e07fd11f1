package sampling

import "math"

// Linear multistep samplers in sigma: lms, ipndm, ipndm_v, deis; and the
// one-step-per-sigma stochastic samplers ddpm and lcm.

// lmsCoeff integrates the j-th Lagrange basis polynomial through
// t[i], t[i-1], ..., t[i-order+1] over [t[i], t[i+1]] (k-diffusion
// linear_multistep_coeff). The integrand has degree order-1 <= 3, so
// three-point Gauss-Legendre quadrature is exact; k-diffusion's adaptive
// scipy quad converges to the same value.
func lmsCoeff(order int, t []float32, i, j int) float64 {
	fn := func(tau float64) float64 {
		p := 1.0
		for k := 0; k < order; k++ {
			if k == j {
				continue
			}
			p *= (tau - float64(t[i-k])) / (float64(t[i-j]) - float64(t[i-k]))
		}
		return p
	}
	a, b := float64(t[i]), float64(t[i+1])
	c, h := (a+b)/2, (b-a)/2
	g := math.Sqrt(3.0 / 5.0)
	return h * (5.0/9.0*fn(c-h*g) + 8.0/9.0*fn(c) + 5.0/9.0*fn(c+h*g))
}

func sampleLMS(r *run, x []float32) ([]float32, error) {
	const maxOrder = 4
	s := r.sigmas
	var ds [][]float32
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		ds = append(ds, toD(x, den, s[i]))
		if len(ds) > maxOrder {
			ds = ds[1:]
		}
		if s[i+1] == 0 {
			return den, nil
		}
		order := min(i+1, maxOrder)
		acc := make([]float32, len(x))
		for j := 0; j < order; j++ {
			c := float32(lmsCoeff(order, s, i, j))
			d := ds[len(ds)-1-j]
			for k := range acc {
				acc[k] += float32(c * d[k])
			}
		}
		for k := range x {
			x[k] += acc[k]
		}
		return x, nil
	}))
}

// ipndmCoeffs returns the coefficients of d_cur, d_{-1}, ... for the
// fixed-step iPNDM (Adams-Bashforth) of the given order.
var ipndmCoeffs = [][]float32{
	1: {1},
	2: {3, -1},
	3: {23, -16, 5},
	4: {55, -59, 37, -9},
}

var ipndmDenoms = []float32{1: 1, 2: 2, 3: 12, 4: 24}

// ipndmFixed returns the fixed-step iPNDM coefficients of an order and
// their common denominator.
func ipndmFixed(_ []float32, _, order int) ([]float32, float32) {
	return ipndmCoeffs[order], ipndmDenoms[order]
}

// bufPush appends d to a history of at most n entries.
func bufPush(buf [][]float32, d []float32, n int) [][]float32 {
	if n <= 0 {
		return buf[:0]
	}
	buf = append(buf, d)
	if len(buf) > n {
		buf = buf[1:]
	}
	return buf
}

// ipndmVCoeffs returns the variable-step iPNDM coefficients for step i of
// the given order (zju-pi diff-solvers, as in ComfyUI sample_ipndm_v),
// computed in float64.
func ipndmVCoeffs(t []float32, i, order int) []float64 {
	hn := float64(t[i+1]) - float64(t[i])
	if order == 1 {
		return []float64{1}
	}
	hn1 := float64(t[i]) - float64(t[i-1])
	if order == 2 {
		return []float64{(2 + hn/hn1) / 2, -(hn / hn1) / 2}
	}
	hn2 := float64(t[i-1]) - float64(t[i-2])
	temp1 := (1 - hn/(3*(hn+hn1))*(hn*(hn+hn1))/(hn1*(hn1+hn2))) / 2
	if order == 3 {
		return []float64{
			(2+hn/hn1)/2 + temp1,
			-(hn/hn1)/2 - (1+hn1/hn2)*temp1,
			temp1 * hn1 / hn2,
		}
	}
	hn3 := float64(t[i-2]) - float64(t[i-3])
	temp2 := ((1-hn/(3*(hn+hn1)))/2 + (1-hn/(2*(hn+hn1)))*hn/(6*(hn+hn1+hn2))) *
		(hn * (hn + hn1) * (hn + hn1 + hn2)) / (hn1 * (hn1 + hn2) * (hn1 + hn2 + hn3))
	q := hn1 * (hn1 + hn2) / (hn2 * (hn2 + hn3))
	return []float64{
		(2+hn/hn1)/2 + temp1 + temp2,
		-(hn/hn1)/2 - (1+hn1/hn2)*temp1 - (1+hn1/hn2+q)*temp2,
		temp1*hn1/hn2 + (hn1/hn2+q*(1+hn2/hn3))*temp2,
		-temp2 * q * hn1 / hn2,
	}
}

// ipndmVariable returns ipndmVCoeffs in float32, with denominator 1 (the
// weights are normalised already).
func ipndmVariable(t []float32, i, order int) ([]float32, float32) {
	c64 := ipndmVCoeffs(t, i, order)
	cs := make([]float32, len(c64))
	for j, c := range c64 {
		cs[j] = float32(c)
	}
	return cs, 1
}

var (
	sampleIPNDM  = ipndmSampler(ipndmFixed)
	sampleIPNDMV = ipndmSampler(ipndmVariable)
)

// ipndmSampler returns the iPNDM sampler with the given coefficients for
// step i of an order (coefficients of d_cur, d_{-1}, ..., and a
// denominator the weighted sum is divided by unless it is 1): a linear
// multistep method in sigma on the derivatives of the last four steps,
// jumping to the denoised estimate at sigma 0.
func ipndmSampler(coeffs func(t []float32, i, order int) ([]float32, float32)) samplerFunc {
	return func(r *run, x []float32) ([]float32, error) {
		const maxOrder = 4
		s := r.sigmas
		var buf [][]float32
		return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
			d := toD(x, den, s[i])
			order := min(maxOrder, i+1)
			if s[i+1] == 0 {
				x = den
			} else {
				dt := s[i+1] - s[i]
				cs, dn := coeffs(s, i, order)
				out := make([]float32, len(x))
				for k := range x {
					v := d[k]
					if order > 1 {
						v = float32(cs[0] * d[k])
						for j := 1; j < order; j++ {
							v = v + float32(cs[j]*buf[len(buf)-j][k])
						}
						if dn != 1 {
							v /= dn
						}
					}
					out[k] = x[k] + float32(dt*v)
				}
				x = out
			}
			buf = bufPush(buf, d, maxOrder-1)
			return x, nil
		}))
	}
}

// sampleDDPM is ancestral DDPM sampling in the variance-preserving frame
// (ComfyUI sample_ddpm): the latent is divided by sqrt(1+sigma^2), stepped
// with the DDPM posterior mean plus posterior noise, and scaled back. It
// keeps these variance-exploding formulas for flow models, as ComfyUI
// does.
func sampleDDPM(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		sigma, prev := s[i], s[i+1]
		inScale := sqrt32(1 + sq32(sigma))
		acp := div32(1, sq32(sigma)+1)
		acpPrev := div32(1, sq32(prev)+1)
		alpha := div32(acp, acpPrev)
		c0 := sqrt32(div32(1, alpha))
		oneMinusA := 1 - alpha
		sq := sqrt32(1 - acp)
		out := make([]float32, len(x))
		for k := range x {
			eps := float32(x[k]-den[k]) / sigma
			xin := x[k] / inScale
			out[k] = c0 * float32(xin-float32(float32(oneMinusA*eps)/sq))
		}
		if prev > 0 {
			c := sqrt32(div32(mul32(oneMinusA, 1-acpPrev), 1-acp))
			n, err := r.randn(len(x))
			if err != nil {
				return nil, err
			}
			out = addNoise(out, n, c)
			scale := sqrt32(1 + sq32(prev))
			for k := range out {
				out[k] *= scale
			}
		}
		return out, nil
	}))
}

// sampleLCM is the latent consistency model sampler: jump to the denoised
// estimate, then renoise to the next sigma with fresh noise, by the model
// family's forward process (see ancestral.noised).
func sampleLCM(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, _, den []float32) ([]float32, error) {
		if s[i+1] == 0 {
			return den, nil
		}
		n, err := r.randn(len(den))
		if err != nil {
			return nil, err
		}
		return r.anc.noised(den, n, s[i+1])
	}))
}
