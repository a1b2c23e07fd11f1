package sampling

// Ancestral sampling splits a step from sigma to sigma_next into a
// deterministic step down to a lower sigma_down and fresh noise that brings
// the latent back up to sigma_next (eta = 1, s_noise = 1: ComfyUI's
// defaults). How the split is computed, and how the noise is added, depends
// on the model family; run.exec picks the family once per run from r.flow,
// and euler_ancestral, dpm_2_ancestral, dpmpp_2s_ancestral and lcm are
// written once against this interface.
//
// The deterministic steps themselves are written in each family's own
// float32 form, because the reference code writes them differently and the
// forms round differently: k-diffusion's samplers step with the derivative
// (x - x0)/sigma in -log(sigma); ComfyUI's "_RF" samplers interpolate,
// x*sigma_down/sigma + (1 - sigma_down/sigma)*x0, and take the DPM-Solver
// midpoint in the flow half-log-SNR log((1-sigma)/sigma).
type ancestral interface {
	// split returns the ancestral quantities of the step from sigma to
	// next.
	split(sigma, next float32) ancestralSplit
	// final reports whether the step is the last one, where
	// euler_ancestral jumps to the denoised estimate and
	// dpmpp_2s_ancestral takes a plain Euler step to sigma_down.
	final(st ancestralSplit) bool
	// renoise returns x, the latent at st.down after the deterministic
	// part, brought to st.next with the fresh standard-normal noise n. It
	// may overwrite x.
	renoise(x, n []float32, st ancestralSplit) []float32
	// euler is euler_ancestral's deterministic part: the first-order step
	// from st.sigma to st.down with the estimate den.
	euler(x, den []float32, st ancestralSplit) []float32
	// dpmpp2s is dpmpp_2s_ancestral's deterministic part: the
	// DPM-Solver++(2S) step from st.sigma to st.down, with one model
	// evaluation at the midpoint.
	dpmpp2s(r *run, x, den []float32, st ancestralSplit) ([]float32, error)
	// noised returns the forward process at sigma from the clean estimate
	// x0 and noise n (lcm's renoise).
	noised(x0, n []float32, sigma float32) ([]float32, error)
}

// ancestralSplit is one step's split.
type ancestralSplit struct {
	// sigma and next are the step's end points, down is sigma_down.
	sigma, next, down float32
	// up is the variance-exploding noise scale sigma_up.
	up float32
	// rescale and noise are the rectified-flow renoise
	// x*rescale + n*noise.
	rescale, noise float32
}

// ancestralFor returns the ancestral split of a model family: rectified
// flow for a flow schedule, variance exploding for nil.
func ancestralFor(f *Flow) ancestral {
	if f != nil {
		return rfAncestral{}
	}
	return veAncestral{}
}

// renoise draws fresh noise for the latent x at st.down and adds it the
// run's way.
func (r *run) renoise(x []float32, st ancestralSplit) ([]float32, error) {
	n, err := r.randn(len(x))
	if err != nil {
		return nil, err
	}
	return r.anc.renoise(x, n, st), nil
}

// veAncestral is the split for variance-exploding (eps/v) models,
// x = x0 + sigma*noise: k-diffusion's get_ancestral_step, and
// x + noise*sigma_up.
type veAncestral struct{}

func (veAncestral) split(sigma, next float32) ancestralSplit {
	down, up := ancestralStep(sigma, next, 1)
	return ancestralSplit{sigma: sigma, next: next, down: down, up: up}
}

func (veAncestral) final(st ancestralSplit) bool { return st.down == 0 }

func (veAncestral) renoise(x, n []float32, st ancestralSplit) []float32 {
	return addNoise(x, n, st.up)
}

func (veAncestral) euler(x, den []float32, st ancestralSplit) []float32 {
	d := toD(x, den, st.sigma)
	return axpy(x, d, st.down-st.sigma)
}

// dpmpp2s takes the midpoint and both sub-steps in t = -log(sigma), as
// k-diffusion's sample_dpmpp_2s_ancestral does.
func (veAncestral) dpmpp2s(r *run, x, den []float32, st ancestralSplit) ([]float32, error) {
	t, tNext := negLog(st.sigma), negLog(st.down)
	h := tNext - t
	sm := t + mul32(0.5, h)
	x2 := linsub(div32(expNeg(sm), expNeg(t)), x, expm132(mul32(-h, 0.5)), den)
	den2, err := r.denoise(x2, expNeg(sm))
	if err != nil {
		return nil, err
	}
	return linsub(div32(expNeg(tNext), expNeg(t)), x, expm132(-h), den2), nil
}

// noised returns x0 + sigma*n, as noise*sigma + x0.
func (veAncestral) noised(x0, n []float32, sigma float32) ([]float32, error) {
	out := make([]float32, len(x0))
	for k := range out {
		out[k] = float32(n[k]*sigma) + x0[k]
	}
	return out, nil
}

// rfAncestral is the split for rectified-flow models,
// x = (1-sigma)*x0 + sigma*noise, as ComfyUI's "_RF" samplers: rfStep's
// sigma_down, then x*(1-sigma_next)/(1-sigma_down) + noise*renoise.
type rfAncestral struct{}

func (rfAncestral) split(sigma, next float32) ancestralSplit {
	down, rescale, renoise := rfStep(sigma, next)
	return ancestralSplit{sigma: sigma, next: next, down: down, rescale: rescale, noise: renoise}
}

func (rfAncestral) final(st ancestralSplit) bool { return st.next == 0 }

func (rfAncestral) renoise(x, n []float32, st ancestralSplit) []float32 {
	return renoiseRF(x, n, st.rescale, st.noise)
}

func (rfAncestral) euler(x, den []float32, st ancestralSplit) []float32 {
	return blend(x, den, div32(st.down, st.sigma))
}

// dpmpp2s takes the midpoint in the flow half-log-SNR log((1-sigma)/sigma)
// (0.9999 from sigma 1, where it is infinite) and both sub-steps as
// interpolations.
func (rfAncestral) dpmpp2s(r *run, x, den []float32, st ancestralSplit) ([]float32, error) {
	lam := func(sg float32) float32 { return log32(div32(1-sg, sg)) }
	sig := func(l float32) float32 { return float32(1 / (exp32(l) + 1)) }
	var ss float32
	if st.sigma == 1 {
		ss = 0.9999
	} else {
		ti, td := lam(st.sigma), lam(st.down)
		h := td - ti
		ss = sig(ti + mul32(0.5, h))
	}
	u := blend(x, den, div32(ss, st.sigma))
	di, err := r.denoise(u, ss)
	if err != nil {
		return nil, err
	}
	return blend(x, di, div32(st.down, st.sigma)), nil
}

// noised returns sigma*n + (1-sigma)*x0 (FlowNoiseLatent).
func (rfAncestral) noised(x0, n []float32, sigma float32) ([]float32, error) {
	return FlowNoiseLatent(n, x0, sigma)
}

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

// rfStep returns the ancestral quantities of the "_RF" samplers with
// eta = 1: sigma_down, the rescaling (1-sigma_next)/(1-sigma_down) and
// the renoise coefficient.
func rfStep(sigma, next float32) (down, rescale, renoise float32) {
	ratio := 1 + float32(div32(next, sigma)-1)
	down = mul32(next, ratio)
	aNext := 1 - next
	aDown := 1 - down
	renoise = sqrt32(sq32(next) - div32(mul32(sq32(down), sq32(aNext)), sq32(aDown)))
	return down, div32(aNext, aDown), renoise
}

// blend returns ratio*x + (1-ratio)*d elementwise.
func blend(x, d []float32, ratio float32) []float32 {
	out := make([]float32, len(x))
	for i := range x {
		out[i] = float32(ratio*x[i]) + float32((1-ratio)*d[i])
	}
	return out
}

// renoiseRF returns rescale*x + noise*renoise.
func renoiseRF(x, noise []float32, rescale, renoise float32) []float32 {
	for i := range x {
		x[i] = float32(rescale*x[i]) + float32(noise[i]*renoise)
	}
	return x
}
