package sampling

// DPM-Solver++ samplers (Lu et al. 2022) in k-diffusion's formulation:
// lambda = log(alpha/sigma) is -log(sigma) for variance-exploding models
// (alpha = 1) and log((1-sigma)/sigma) for flow models in the SDE samplers;
// dpmpp_2m always uses -log(sigma), as ComfyUI does, and
// dpmpp_2s_ancestral the model family's form (ancestral.dpmpp2s).

// negLog returns -log(sigma) in float32 (k-diffusion's t_fn / lambda_fn);
// +Inf for sigma 0.
func negLog(sigma float32) float32 { return -log32(sigma) }

// expNeg returns exp(-t) in float32 (k-diffusion's sigma_fn).
func expNeg(t float32) float32 { return exp32(-t) }

func sampleDPMPP2M(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	var old []float32
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		t, tNext := negLog(s[i]), negLog(s[i+1])
		h := tNext - t
		ratio := div32(expNeg(tNext), expNeg(t))
		e := expm132(-h)
		if old == nil || s[i+1] == 0 {
			x = linsub(ratio, x, e, den)
		} else {
			hLast := t - negLog(s[i-1])
			rr := div32(hLast, h)
			c := div32(1, mul32(2, rr))
			c1 := 1 + c
			dd := linsub(c1, den, c, old)
			x = linsub(ratio, x, e, dd)
		}
		old = den
		return x, nil
	}))
}

// sampleDPMPP2SAncestral is DPM-Solver++(2S) to sigma_down plus the
// ancestral noise, for either model family (see ancestral).
func sampleDPMPP2SAncestral(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		st := r.anc.split(s[i], s[i+1])
		if r.anc.final(st) {
			d := toD(x, den, s[i])
			x = axpy(x, d, st.down-s[i])
		} else {
			var err error
			if x, err = r.anc.dpmpp2s(r, x, den, st); err != nil {
				return nil, err
			}
		}
		if s[i+1] > 0 {
			return r.renoise(x, st)
		}
		return x, nil
	}))
}

// addScaledNoise returns x + ((a*noise)*b) elementwise, the order of the
// torch expression x + a * noise * b.
func addScaledNoise(x, noise []float32, a, b float32) []float32 {
	for i := range x {
		x[i] += float32(float32(a*noise[i]) * b)
	}
	return x
}

func sampleDPMPPSDE(r *run, x []float32) ([]float32, error) {
	s := r.sdeSigmas()
	ns, err := r.brownian(r, len(x))
	if err != nil {
		return nil, err
	}
	const rr = float32(0.5)
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		if s[i+1] == 0 {
			return den, nil
		}
		lamS, lamT := r.halfLogSNR(s[i]), r.halfLogSNR(s[i+1])
		h := lamT - lamS
		lamS1 := lamS + mul32(rr, h)
		sigS1 := r.sigmaOfLambda(lamS1)
		alphaS := mul32(s[i], exp32(lamS))
		alphaS1 := mul32(sigS1, exp32(lamS1))
		alphaT := mul32(s[i+1], exp32(lamT))

		// Step 1: to the midpoint in lambda, with its own ancestral noise
		// (the variance-exploding split, in sigma = exp(-lambda), for
		// both model families).
		sd, su := ancestralStep(expNeg(lamS), expNeg(lamS1), 1)
		hh := negLog(sd) - lamS
		x2 := linsub(mul32(div32(alphaS1, alphaS), exp32(-hh)), x, mul32(alphaS1, expm132(-hh)), den)
		n1, err := ns(s[i], sigS1)
		if err != nil {
			return nil, err
		}
		x2 = addScaledNoise(x2, n1, alphaS1, su)
		den2, err := r.denoise(x2, sigS1)
		if err != nil {
			return nil, err
		}

		// Step 2: the full step with the midpoint estimate (fac = 1).
		sd, su = ancestralStep(expNeg(lamS), expNeg(lamT), 1)
		hh = negLog(sd) - lamS
		dd := make([]float32, len(den))
		for j := range dd {
			dd[j] = float32(0*den[j]) + den2[j]
		}
		x = linsub(mul32(div32(alphaT, alphaS), exp32(-hh)), x, mul32(alphaT, expm132(-hh)), dd)
		n2, err := ns(s[i], s[i+1])
		if err != nil {
			return nil, err
		}
		return addScaledNoise(x, n2, alphaT, su), nil
	}))
}

func sampleDPMPP2MSDEMidpoint(r *run, x []float32) ([]float32, error) {
	return sampleDPMPP2MSDE(r, x, false)
}

func sampleDPMPP2MSDEHeun(r *run, x []float32) ([]float32, error) {
	return sampleDPMPP2MSDE(r, x, true)
}

// sdeBase is the first-order part shared by the multistep SDE samplers:
// (sigma_next/sigma * exp(-h)) * x + (alpha_t * -expm1(-2h)) * denoised,
// with eta = 1.
func sdeBase(x, den []float32, sigma, sigmaNext, h, alphaT float32) []float32 {
	a := mul32(div32(sigmaNext, sigma), exp32(-h))
	b := mul32(alphaT, -expm132(-mul32(h, 2)))
	out := make([]float32, len(x))
	for j := range x {
		out[j] = float32(a*x[j]) + float32(b*den[j])
	}
	return out
}

// sdeNoise adds noise * sigma_next * sqrt(-expm1(-2h)) with eta = 1 and
// s_noise = 1, in the order of the torch expression.
func sdeNoise(x, noise []float32, sigmaNext, h float32) []float32 {
	c := sqrt32(-expm132(mul32(-2, h)))
	for j := range x {
		x[j] += float32(float32(noise[j]*sigmaNext) * c)
	}
	return x
}

func sampleDPMPP2MSDE(r *run, x []float32, heun bool) ([]float32, error) {
	s := r.sdeSigmas()
	ns, err := r.brownian(r, len(x))
	if err != nil {
		return nil, err
	}
	var old []float32
	var h, hLast float32
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		if s[i+1] == 0 {
			x = den
		} else {
			lamS, lamT := r.halfLogSNR(s[i]), r.halfLogSNR(s[i+1])
			h = lamT - lamS
			hEta := mul32(h, 2)
			alphaT := mul32(s[i+1], exp32(lamT))
			x = sdeBase(x, den, s[i], s[i+1], h, alphaT)
			if old != nil {
				rr := div32(hLast, h)
				negE := -expm132(-hEta)
				var c float32
				if heun {
					c = mul32(mul32(alphaT, div32(negE, -hEta)+1), div32(1, rr))
				} else {
					c = mul32(mul32(mul32(0.5, alphaT), negE), div32(1, rr))
				}
				for j := range x {
					x[j] += float32(c * float32(den[j]-old[j]))
				}
			}
			n, err := ns(s[i], s[i+1])
			if err != nil {
				return nil, err
			}
			x = sdeNoise(x, n, s[i+1], h)
		}
		old = den
		hLast = h
		return x, nil
	}))
}

func sampleDPMPP3MSDE(r *run, x []float32) ([]float32, error) {
	s := r.sdeSigmas()
	ns, err := r.brownian(r, len(x))
	if err != nil {
		return nil, err
	}
	var den1, den2 []float32
	var h, h1, h2 float32
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		have1, have2 := i >= 1, i >= 2
		if s[i+1] == 0 {
			x = den
		} else {
			lamS, lamT := r.halfLogSNR(s[i]), r.halfLogSNR(s[i+1])
			h = lamT - lamS
			hEta := mul32(h, 2)
			alphaT := mul32(s[i+1], exp32(lamT))
			x = sdeBase(x, den, s[i], s[i+1], h, alphaT)
			phi2 := div32(expm132(-hEta), hEta) + 1
			switch {
			case have2:
				r0, r1 := div32(h1, h), div32(h2, h)
				r01 := r0 + r1
				phi3 := div32(phi2, hEta) - 0.5
				c2, c3 := mul32(alphaT, phi2), mul32(alphaT, phi3)
				for j := range x {
					d10 := float32(den[j]-den1[j]) / r0
					d11 := float32(den1[j]-den2[j]) / r1
					diff := d10 - d11
					d1 := d10 + float32(float32(diff*r0)/r01)
					d2 := diff / r01
					x[j] = float32(x[j]+float32(c2*d1)) - float32(c3*d2)
				}
			case have1:
				rr := div32(h1, h)
				c2 := mul32(alphaT, phi2)
				for j := range x {
					d := float32(den[j]-den1[j]) / rr
					x[j] += float32(c2 * d)
				}
			}
			n, err := ns(s[i], s[i+1])
			if err != nil {
				return nil, err
			}
			x = sdeNoise(x, n, s[i+1], h)
		}
		den1, den2 = den, den1
		h1, h2 = h, h1
		return x, nil
	}))
}
