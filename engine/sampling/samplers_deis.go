package sampling

import "math"

// DEIS (Zhang & Chen 2022) in the "tab" mode of the zju-pi diff-solvers
// reimplementation that ComfyUI ships: sigmas are mapped to the time of a
// VP SDE fitted to EDM's sigma range (0.002..80, whatever the model's),
// and the coefficients of the multistep update are Riemann sums over
// 10000 points of the exponential-integrator integrand times the Lagrange
// basis polynomials in that time.

const (
	deisMaxOrder = 3
	deisN        = 10000
)

// deisVP returns the VP-SDE parameters beta_0 (beta_min) and beta_1
// (beta_d + beta_min) and the map from sigma to VP time (ComfyUI edm2t,
// evaluated in float64).
func deisVP() (beta0, beta1 float64, toT func(sigma float64) float64) {
	const epsS, sMin, sMax = 1e-3, 0.002, 80.0
	betaD := 2 * (math.Log(sMin*sMin+1)/epsS - math.Log(sMax*sMax+1)) / (epsS - 1)
	betaMin := math.Log(sMax*sMax+1) - 0.5*betaD
	toT = func(sigma float64) float64 {
		return (math.Sqrt(betaMin*betaMin+2*betaD*math.Log(sigma*sigma+1)) - betaMin) / betaD
	}
	return betaMin, betaD + betaMin, toT
}

// deisCoeffs returns, for every step, the coefficients of the current and
// previous derivatives (empty for first-order steps).
func deisCoeffs(sigmas []float32) [][]float64 {
	b0, b1, toT := deisVP()
	ts := make([]float64, len(sigmas))
	for i, s := range sigmas {
		ts[i] = toT(float64(s))
	}
	integrand := func(tau float64) float64 {
		alpha := math.Exp(-0.5*tau*tau*(b1-b0) - tau*b0)
		dlog := -tau*(b1-b0) - b0
		return -0.5 * dlog / math.Sqrt(alpha*(1-alpha))
	}
	out := make([][]float64, len(sigmas)-1)
	for i := range out {
		order := min(i+1, deisMaxOrder)
		if order == 1 {
			continue
		}
		tCur, tNext := ts[i], ts[i+1]
		taus := linspace64(tCur, tNext, deisN)
		dtau := (tNext - tCur) / deisN
		prev := make([]float64, order)
		for k := range prev {
			prev[k] = ts[i-k]
		}
		cs := make([]float64, order)
		for _, tau := range taus {
			g := integrand(tau)
			for j := range cs {
				p := 1.0
				for k := range prev {
					if k != j {
						p *= (tau - prev[k]) / (prev[j] - prev[k])
					}
				}
				cs[j] += g * p
			}
		}
		for j := range cs {
			cs[j] *= dtau
		}
		out[i] = cs
	}
	return out
}

func sampleDEIS(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	coeffs := deisCoeffs(s)
	var buf [][]float32
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		d := toD(x, den, s[i])
		order := min(deisMaxOrder, i+1)
		if s[i+1] <= 0 {
			order = 1
		}
		out := make([]float32, len(x))
		if order == 1 {
			dt := s[i+1] - s[i]
			for k := range x {
				out[k] = x[k] + float32(dt*d[k])
			}
		} else {
			cs := make([]float32, order)
			for j, c := range coeffs[i] {
				cs[j] = float32(c)
			}
			for k := range x {
				v := x[k] + float32(cs[0]*d[k])
				for j := 1; j < order; j++ {
					v += float32(cs[j] * buf[len(buf)-j][k])
				}
				out[k] = v
			}
		}
		buf = bufPush(buf, d, deisMaxOrder-1)
		return out, nil
	}))
}
