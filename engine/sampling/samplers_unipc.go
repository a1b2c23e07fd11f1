package sampling

import (
	"fmt"
	"math"
)

// UniPC (Zhao et al. 2023), multistep, data prediction, B(h) = h ("bh1",
// ComfyUI "uni_pc") or B(h) = e^h - 1 ("bh2", ComfyUI "uni_pc_bh2"), with
// order min(3, steps-1), lower_order_final and the corrector on every step
// but the last, as ComfyUI's sample_unipc runs it. It works in the
// variance-preserving frame x_vp = x / sqrt(1+sigma^2) with the "time" t
// equal to sigma, a final sigma of 0 replaced by 0.001.
//
// diffusers' UniPCMultistepScheduler(solver_order=3, solver_type="bh1" or
// "bh2", predict_x0=True, lower_order_final=True, no disabled corrector
// steps) runs the same update for the same sigmas; its default is bh2.

// vpLogMean returns log(alpha_t) = 0.5*log(1/(t^2+1)) in float32.
func vpLogMean(t float32) float32 { return mul32(0.5, log32(div32(1, sq32(t)+1))) }

func vpAlpha(t float32) float32 { return exp32(vpLogMean(t)) }

func vpStd(t float32) float32 { return sqrt32(1 - exp32(mul32(2, vpLogMean(t)))) }

func vpLambda(t float32) float32 {
	lm := vpLogMean(t)
	return lm - mul32(0.5, log32(1-exp32(mul32(2, lm))))
}

// unipc holds the state of one UniPC run.
type unipc struct {
	r   *run
	bh2 bool
}

// modelX0 evaluates the data prediction in the VP frame: the denoiser sees
// x*sqrt(t^2+1) at sigma t, and x0 = (x - sigma_t*eps) / alpha_t.
func (u *unipc) modelX0(x []float32, t float32) ([]float32, error) {
	scale := sqrt32(sq32(t) + 1)
	in := make([]float32, len(x))
	for k := range x {
		in[k] = x[k] * scale
	}
	den, err := u.r.denoise(in, t)
	if err != nil {
		return nil, err
	}
	at, st := vpAlpha(t), vpStd(t)
	out := make([]float32, len(x))
	for k := range x {
		eps := float32(in[k]-den[k]) / t
		out[k] = float32(x[k]-float32(st*eps)) / at
	}
	return out, nil
}

// solve solves the small dense system a*x = b by Gaussian elimination with
// partial pivoting.
func solve(a [][]float64, b []float64) ([]float64, error) {
	n := len(b)
	m := make([][]float64, n)
	for i := range m {
		m[i] = append(append([]float64{}, a[i][:n]...), b[i])
	}
	for c := 0; c < n; c++ {
		p := c
		for i := c + 1; i < n; i++ {
			if math.Abs(m[i][c]) > math.Abs(m[p][c]) {
				p = i
			}
		}
		if m[p][c] == 0 {
			return nil, fmt.Errorf("singular %dx%d system", n, n)
		}
		m[c], m[p] = m[p], m[c]
		for i := c + 1; i < n; i++ {
			f := m[i][c] / m[c][c]
			for j := c; j <= n; j++ {
				m[i][j] -= f * m[c][j]
			}
		}
	}
	x := make([]float64, n)
	for i := n - 1; i >= 0; i-- {
		v := m[i][n]
		for j := i + 1; j < n; j++ {
			v -= m[i][j] * x[j]
		}
		x[i] = v / m[i][i]
	}
	return x, nil
}

// update is multistep_uni_pc_bh_update with predict_x0: the predictor
// (UniP) to time t from the history, then, with the corrector, one model
// evaluation at the prediction and the corrected value (UniC). It returns
// the new x and the model value at the predicted point (nil without the
// corrector).
func (u *unipc) update(x []float32, models [][]float32, ts []float32, t float32, order int, corrector bool) ([]float32, []float32, error) {
	tp0 := ts[len(ts)-1]
	m0 := models[len(models)-1]
	lp0, lt := vpLambda(tp0), vpLambda(t)
	sp0, st := vpStd(tp0), vpStd(t)
	at := exp32(vpLogMean(t))
	h := lt - lp0

	var rks []float64
	var d1s [][]float32
	for i := 1; i < order; i++ {
		ti := ts[len(ts)-1-i]
		mi := models[len(models)-1-i]
		rk := div32(vpLambda(ti)-lp0, h)
		rks = append(rks, float64(rk))
		d := make([]float32, len(x))
		for k := range d {
			d[k] = float32(mi[k]-m0[k]) / rk
		}
		d1s = append(d1s, d)
	}
	rks = append(rks, 1)

	hh := -float64(h)
	hPhi1 := math.Expm1(hh)
	hPhiK := hPhi1/hh - 1
	fact := 1.0
	bh := hh
	if u.bh2 {
		bh = math.Expm1(hh)
	}
	R := make([][]float64, order)
	b := make([]float64, order)
	for i := 1; i <= order; i++ {
		row := make([]float64, order)
		for j, rk := range rks {
			row[j] = math.Pow(rk, float64(i-1))
		}
		R[i-1] = row
		b[i-1] = hPhiK * fact / bh
		fact *= float64(i + 1)
		hPhiK = hPhiK/hh - 1/fact
	}

	var rhosP []float64
	if len(d1s) > 0 {
		if order == 2 {
			rhosP = []float64{0.5}
		} else {
			sub := make([][]float64, order-1)
			for i := range sub {
				sub[i] = R[i][:order-1]
			}
			var err error
			if rhosP, err = solve(sub, b[:order-1]); err != nil {
				return nil, nil, fmt.Errorf("uni_pc predictor: %w", err)
			}
		}
	}
	var rhosC []float64
	if corrector {
		if order == 1 {
			rhosC = []float64{0.5}
		} else {
			var err error
			if rhosC, err = solve(R, b); err != nil {
				return nil, nil, fmt.Errorf("uni_pc corrector: %w", err)
			}
		}
	}

	c1 := div32(st, sp0)
	c2 := mul32(at, float32(hPhi1))
	cb := mul32(at, float32(bh))
	base := make([]float32, len(x))
	for k := range x {
		base[k] = float32(c1*x[k]) - float32(c2*m0[k])
	}
	xt := make([]float32, len(x))
	for k := range x {
		var pred float32
		for j, d := range d1s {
			pred += float32(float32(rhosP[j]) * d[k])
		}
		xt[k] = base[k] - float32(cb*pred)
	}
	if !corrector {
		return xt, nil, nil
	}
	mt, err := u.modelX0(xt, t)
	if err != nil {
		return nil, nil, err
	}
	last := float32(rhosC[len(rhosC)-1])
	for k := range x {
		var corr float32
		for j, d := range d1s {
			corr += float32(float32(rhosC[j]) * d[k])
		}
		dt := mt[k] - m0[k]
		xt[k] = base[k] - float32(cb*float32(corr+float32(last*dt)))
	}
	return xt, mt, nil
}

func sampleUniPCBH1(r *run, x []float32) ([]float32, error) {
	return (&unipc{r: r}).sample(x)
}

func sampleUniPCBH2(r *run, x []float32) ([]float32, error) {
	return (&unipc{r: r, bh2: true}).sample(x)
}

// report passes the latent back in the sigma frame (x_vp*sqrt(1+t^2)) with
// the data prediction.
func (u *unipc) report(i int, x []float32, t float32, den []float32) {
	if u.r.cb == nil {
		return
	}
	scale := sqrt32(sq32(t) + 1)
	ve := make([]float32, len(x))
	for k := range x {
		ve[k] = x[k] * scale
	}
	u.r.report(i, ve, den)
}

func (u *unipc) sample(x []float32) ([]float32, error) {
	ts := append([]float32(nil), u.r.sigmas...)
	if ts[len(ts)-1] == 0 {
		ts[len(ts)-1] = 0.001
	}
	steps := len(ts) - 1
	in := sqrt32(1 + sq32(ts[0]))
	for k := range x {
		x[k] /= in
	}
	order := min(3, steps-1)
	var models [][]float32
	var tPrev []float32
	tNow := ts[0]
	for si := 0; si < steps; si++ {
		switch {
		case si == 0:
			m, err := u.modelX0(x, ts[0])
			if err != nil {
				return nil, err
			}
			models, tPrev = [][]float32{m}, []float32{ts[0]}
		case si < order:
			nx, m, err := u.update(x, models, tPrev, ts[si], si, true)
			if err != nil {
				return nil, err
			}
			x, tNow = nx, ts[si]
			models, tPrev = append(models, m), append(tPrev, ts[si])
		default:
			last := si
			if si == steps-1 {
				last = steps
			}
			for step := si; step <= last; step++ {
				stepOrder := min(order, steps+1-step)
				corrector := step != steps
				nx, m, err := u.update(x, models, tPrev, ts[step], stepOrder, corrector)
				if err != nil {
					return nil, err
				}
				x, tNow = nx, ts[step]
				copy(tPrev, tPrev[1:])
				copy(models, models[1:])
				tPrev[len(tPrev)-1] = ts[step]
				if step < steps {
					models[len(models)-1] = m
				}
			}
		}
		u.report(si, x, tNow, models[len(models)-1])
	}
	a := vpAlpha(ts[len(ts)-1])
	for k := range x {
		x[k] /= a
	}
	return x, nil
}
