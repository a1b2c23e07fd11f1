package sampling

// First- and second-order samplers in sigma (Karras et al. 2022, k-diffusion):
// euler, euler_ancestral, heun, dpm_2, dpm_2_ancestral.

// ancestralStep splits a step from sigmaFrom to sigmaTo into a deterministic
// step down to sigmaDown and fresh noise of standard deviation sigmaUp
// (k-diffusion get_ancestral_step), in float32.
func ancestralStep(sigmaFrom, sigmaTo, eta float32) (sigmaDown, sigmaUp float32) {
	if eta == 0 {
		return sigmaTo, 0
	}
	to2 := sq32(sigmaTo)
	v := div32(mul32(to2, float32(sq32(sigmaFrom)-to2)), sq32(sigmaFrom))
	sigmaUp = min32(sigmaTo, mul32(eta, sqrt32(v)))
	sigmaDown = sqrt32(float32(to2 - sq32(sigmaUp)))
	return sigmaDown, sigmaUp
}

// addNoise returns x + noise*scale elementwise.
func addNoise(x, noise []float32, scale float32) []float32 {
	for i := range x {
		x[i] += float32(noise[i] * scale)
	}
	return x
}

func sampleEuler(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		d := toD(x, den, s[i])
		return axpy(x, d, s[i+1]-s[i]), nil
	}))
}

func sampleEulerAncestral(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		down, up := ancestralStep(s[i], s[i+1], 1)
		if down == 0 {
			return den, nil
		}
		d := toD(x, den, s[i])
		x = axpy(x, d, down-s[i])
		n, err := r.randn(len(x))
		if err != nil {
			return nil, err
		}
		return addNoise(x, n, up), nil
	}))
}

func sampleHeun(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		d := toD(x, den, s[i])
		dt := s[i+1] - s[i]
		if s[i+1] == 0 {
			return axpy(x, d, dt), nil
		}
		x2 := axpy(x, d, dt)
		den2, err := r.denoise(x2, s[i+1])
		if err != nil {
			return nil, err
		}
		d2 := toD(x2, den2, s[i+1])
		for j := range d {
			d[j] = float32(d[j]+d2[j]) / 2
		}
		return axpy(x, d, dt), nil
	}))
}

// dpm2Step is the DPM-Solver-2 step of k-diffusion's sample_dpm_2: an Euler
// half step to the log-midpoint of sigma and target, then a full step with
// the midpoint derivative.
func dpm2Step(r *run, x, d []float32, sigma, target float32) ([]float32, error) {
	mid := exp32(lerp32(log32(sigma), log32(target), 0.5))
	x2 := axpy(x, d, mid-sigma)
	den2, err := r.denoise(x2, mid)
	if err != nil {
		return nil, err
	}
	d2 := toD(x2, den2, mid)
	return axpy(x, d2, target-sigma), nil
}

func sampleDPM2(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		d := toD(x, den, s[i])
		if s[i+1] == 0 {
			return axpy(x, d, s[i+1]-s[i]), nil
		}
		return dpm2Step(r, x, d, s[i], s[i+1])
	}))
}

func sampleDPM2Ancestral(r *run, x []float32) ([]float32, error) {
	s := r.sigmas
	return r.loop(s, x, stepFunc(func(i int, x, den []float32) ([]float32, error) {
		down, up := ancestralStep(s[i], s[i+1], 1)
		d := toD(x, den, s[i])
		if down == 0 {
			return axpy(x, d, down-s[i]), nil
		}
		x, err := dpm2Step(r, x, d, s[i], down)
		if err != nil {
			return nil, err
		}
		n, err := r.randn(len(x))
		if err != nil {
			return nil, err
		}
		return addNoise(x, n, up), nil
	}))
}
