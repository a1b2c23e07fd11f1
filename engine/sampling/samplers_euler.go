package sampling

// First- and second-order samplers in sigma (Karras et al. 2022, k-diffusion):
// euler, euler_ancestral, heun, dpm_2, dpm_2_ancestral.

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
		st := r.anc.split(s[i], s[i+1])
		if r.anc.final(st) {
			return den, nil
		}
		return r.renoise(r.anc.euler(x, den, st), st)
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
		st := r.anc.split(s[i], s[i+1])
		d := toD(x, den, s[i])
		if st.down == 0 {
			return axpy(x, d, st.down-s[i]), nil
		}
		x, err := dpm2Step(r, x, d, s[i], st.down)
		if err != nil {
			return nil, err
		}
		return r.renoise(x, st)
	}))
}
