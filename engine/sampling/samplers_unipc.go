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

// unipc is the UniPC stepper. Its state x is the latent in the VP frame;
// on step i it evaluates the model at its predictor's output for ts[i]
// (input) and corrects with that evaluation (step).
type unipc struct {
	r   *run
	bh2 bool
	// ts are the sigmas with a final 0 replaced by 0.001, steps their
	// number of intervals and order the method's order, min(3, steps-1).
	ts           []float32
	steps, order int
	// models and tPrev are the data predictions and their times, oldest
	// first; tNow is the time of the state.
	models [][]float32
	tPrev  []float32
	tNow   float32
	// On the current step, xt is the point the model is evaluated at (VP
	// frame), in the model's input there (sigma frame), and pend the
	// predictor's terms the corrector reuses (nil on the first step).
	xt, in []float32
	pend   *unipcPending
}

// modelInput returns the denoiser's input for the VP-frame latent x at time
// t: x*sqrt(t^2+1).
func modelInput(x []float32, t float32) []float32 {
	scale := sqrt32(sq32(t) + 1)
	in := make([]float32, len(x))
	for k := range x {
		in[k] = x[k] * scale
	}
	return in
}

// modelX0 is the data prediction in the VP frame from the denoiser output
// den at (in, t), in = modelInput(x, t): x0 = (x - sigma_t*eps) / alpha_t.
func modelX0(x, in, den []float32, t float32) []float32 {
	at, st := vpAlpha(t), vpStd(t)
	out := make([]float32, len(x))
	for k := range x {
		eps := float32(in[k]-den[k]) / t
		out[k] = float32(x[k]-float32(st*eps)) / at
	}
	return out
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

// unipcPending holds what the corrector (UniC) of a step reuses from its
// predictor.
type unipcPending struct {
	base, m0 []float32
	d1s      [][]float32
	rhosC    []float64
	cb       float32
}

// predict is the first half of multistep_uni_pc_bh_update with predict_x0:
// the predictor (UniP) to time t from the history. With the corrector it
// also returns what correct needs once the model has been evaluated at the
// prediction.
func (u *unipc) predict(x []float32, models [][]float32, ts []float32, t float32, order int, corrector bool) ([]float32, *unipcPending, error) {
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
	return xt, &unipcPending{base: base, m0: m0, d1s: d1s, rhosC: rhosC, cb: cb}, nil
}

// correct is the second half of multistep_uni_pc_bh_update: the corrected
// value (UniC), written over the prediction xt, from the model value mt at
// xt.
func (p *unipcPending) correct(xt, mt []float32) []float32 {
	base, m0, d1s, rhosC, cb := p.base, p.m0, p.d1s, p.rhosC, p.cb
	last := float32(rhosC[len(rhosC)-1])
	for k := range xt {
		var corr float32
		for j, d := range d1s {
			corr += float32(float32(rhosC[j]) * d[k])
		}
		dt := mt[k] - m0[k]
		xt[k] = base[k] - float32(cb*float32(corr+float32(last*dt)))
	}
	return xt
}

func sampleUniPCBH1(r *run, x []float32) ([]float32, error) {
	return (&unipc{r: r}).sample(x)
}

func sampleUniPCBH2(r *run, x []float32) ([]float32, error) {
	return (&unipc{r: r, bh2: true}).sample(x)
}

// sample converts x to the VP frame, runs the steps and converts back.
func (u *unipc) sample(x []float32) ([]float32, error) {
	ts := append([]float32(nil), u.r.sigmas...)
	if ts[len(ts)-1] == 0 {
		ts[len(ts)-1] = 0.001
	}
	u.ts, u.steps = ts, len(ts)-1
	in := sqrt32(1 + sq32(ts[0]))
	for k := range x {
		x[k] /= in
	}
	u.order = min(3, u.steps-1)
	u.tNow = ts[0]
	x, err := u.r.loop(ts, x, u)
	if err != nil {
		return nil, err
	}
	a := vpAlpha(ts[len(ts)-1])
	for k := range x {
		x[k] /= a
	}
	return x, nil
}

// stepOrder is the order of the update to ts[step]: the warm-up steps
// raise it one by one, the last ones lower it (lower_order_final).
func (u *unipc) stepOrder(step int) int {
	if step < u.order {
		return step
	}
	return min(u.order, u.steps+1-step)
}

// input predicts the latent at ts[i] (on the first step, x itself) and
// returns the model's input there.
func (u *unipc) input(i int, x []float32) ([]float32, error) {
	u.xt, u.pend = x, nil
	if i > 0 {
		var err error
		if u.xt, u.pend, err = u.predict(x, u.models, u.tPrev, u.ts[i], u.stepOrder(i), true); err != nil {
			return nil, err
		}
	}
	u.in = modelInput(u.xt, u.ts[i])
	return u.in, nil
}

// step corrects the prediction with the model value and updates the
// history; the last step adds the final predictor-only update to ts[steps].
func (u *unipc) step(i int, x, den []float32) ([]float32, error) {
	m := modelX0(u.xt, u.in, den, u.ts[i])
	if i == 0 {
		u.models, u.tPrev = [][]float32{m}, []float32{u.ts[0]}
		return x, nil
	}
	x, u.tNow = u.pend.correct(u.xt, m), u.ts[i]
	if i < u.order {
		u.models, u.tPrev = append(u.models, m), append(u.tPrev, u.ts[i])
		return x, nil
	}
	u.shift(i, m)
	if i == u.steps-1 {
		nx, _, err := u.predict(x, u.models, u.tPrev, u.ts[u.steps], u.stepOrder(u.steps), false)
		if err != nil {
			return nil, err
		}
		x, u.tNow = nx, u.ts[u.steps]
		u.shift(u.steps, nil)
	}
	return x, nil
}

// shift drops the oldest history entry and appends time ts[step] with the
// model value m (which the final step, without a model value, leaves).
func (u *unipc) shift(step int, m []float32) {
	copy(u.tPrev, u.tPrev[1:])
	copy(u.models, u.models[1:])
	u.tPrev[len(u.tPrev)-1] = u.ts[step]
	if step < u.steps {
		u.models[len(u.models)-1] = m
	}
}

// view passes the latent back in the sigma frame (x_vp*sqrt(1+t^2)) with
// the data prediction.
func (u *unipc) view(_ int, x, _ []float32) (latent, denoised []float32) {
	scale := sqrt32(sq32(u.tNow) + 1)
	ve := make([]float32, len(x))
	for k := range x {
		ve[k] = x[k] * scale
	}
	return ve, u.models[len(u.models)-1]
}
