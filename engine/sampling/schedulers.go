package sampling

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// maxSteps bounds the step count a scheduler accepts.
const maxSteps = 100000

// schedulerFunc returns the sigmas to visit, ending with 0.
type schedulerFunc func(s Schedule, steps int) ([]float32, error)

var schedulers = map[string]schedulerFunc{
	"normal":           normalScheduler,
	"karras":           karrasScheduler,
	"exponential":      exponentialScheduler,
	"sgm_uniform":      sgmUniformScheduler,
	"simple":           simpleScheduler,
	"ddim_uniform":     ddimUniformScheduler,
	"beta":             betaScheduler,
	"linear_quadratic": linearQuadraticScheduler,
	"kl_optimal":       klOptimalScheduler,
}

// Schedulers returns the supported ComfyUI scheduler names, sorted.
func Schedulers() []string {
	names := make([]string, 0, len(schedulers))
	for n := range schedulers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Sigmas returns the noise levels the named ComfyUI scheduler visits for
// the given number of steps: decreasing, ending with 0, normally steps+1
// values. ddim_uniform and beta may return fewer or more, as in ComfyUI
// (ddim_uniform strides the table by N/steps; beta drops repeated
// timesteps).
func Sigmas(scheduler string, s Schedule, steps int) ([]float32, error) {
	fn, ok := schedulers[scheduler]
	if !ok {
		return nil, fmt.Errorf("unknown scheduler %q (valid: %s)", scheduler, strings.Join(Schedulers(), ", "))
	}
	if steps < 1 || steps > maxSteps {
		return nil, fmt.Errorf("scheduler %s: %d steps, want 1..%d", scheduler, steps, maxSteps)
	}
	if s == nil {
		return nil, fmt.Errorf("scheduler %s: nil schedule", scheduler)
	}
	if len(s.Table()) < 2 {
		return nil, fmt.Errorf("scheduler %s: schedule table has %d entries, want at least 2", scheduler, len(s.Table()))
	}
	sig, err := fn(s, steps)
	if err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", scheduler, err)
	}
	return sig, nil
}

// KarrasSigmas is the schedule of Karras et al. (2022) with exponent rho:
// (max^(1/rho) + ramp*(min^(1/rho) - max^(1/rho)))^rho over a float32 ramp
// 0..1, then 0 (k-diffusion get_sigmas_karras, float32 like torch).
func KarrasSigmas(n int, sigmaMin, sigmaMax, rho float64) []float32 {
	minInv := math.Pow(sigmaMin, 1/rho)
	maxInv := math.Pow(sigmaMax, 1/rho)
	diff := float32(minInv - maxInv)
	ramp := linspace32(0, 1, n)
	out := make([]float32, n+1)
	for i, r := range ramp {
		base := float32(maxInv) + float32(r*diff)
		out[i] = pow32(base, float32(rho))
	}
	return out
}

func karrasScheduler(s Schedule, steps int) ([]float32, error) {
	return KarrasSigmas(steps, float64(s.SigmaMin()), float64(s.SigmaMax()), 7), nil
}

func exponentialScheduler(s Schedule, steps int) ([]float32, error) {
	ls := linspace32(float32(math.Log(float64(s.SigmaMax()))), float32(math.Log(float64(s.SigmaMin()))), steps)
	out := make([]float32, steps+1)
	for i, l := range ls {
		out[i] = exp32(l)
	}
	return out, nil
}

// normalScheduler spaces timesteps uniformly from sigma_max's to
// sigma_min's (ComfyUI normal_scheduler); sgm drops the last of steps+1
// (sgm_uniform).
func normalSigmas(s Schedule, steps int, sgm bool) []float32 {
	start := s.Timestep(s.SigmaMax())
	end := s.Timestep(s.SigmaMin())
	appendZero := true
	var ts []float32
	if sgm {
		ts = linspace32(start, end, steps+1)[:steps]
	} else {
		if math.Abs(float64(s.Sigma(end))) <= 1e-5 {
			steps++
			appendZero = false
		}
		ts = linspace32(start, end, steps)
		if d, ok := s.(*Discrete); ok && d.linear {
			ts = numpyLinspaceDown(start, end, steps)
		}
	}
	out := make([]float32, 0, len(ts)+1)
	for _, t := range ts {
		out = append(out, s.Sigma(t))
	}
	if appendZero {
		out = append(out, 0)
	}
	return out
}

// numpyLinspaceDown is np.linspace(end, start, n, dtype=float32)[::-1],
// diffusers' "linspace" timesteps: computed in float64 upwards from end,
// the last value exactly start, then rounded and reversed.
func numpyLinspaceDown(start, end float32, n int) []float32 {
	out := make([]float32, n)
	if n == 1 {
		out[0] = end
		return out
	}
	step := (float64(start) - float64(end)) / float64(n-1)
	for j := range n {
		v := float64(end) + float64(j)*step
		if j == n-1 {
			v = float64(start)
		}
		out[n-1-j] = float32(v)
	}
	return out
}

func normalScheduler(s Schedule, steps int) ([]float32, error) {
	return normalSigmas(s, steps, false), nil
}

func sgmUniformScheduler(s Schedule, steps int) ([]float32, error) {
	return normalSigmas(s, steps, true), nil
}

// SimpleSigmaser is implemented by schedules that compute the "simple"
// scheduler's sigmas themselves instead of striding the table: diffusers'
// flow-matching scheduler shifts linspace(1, 1/steps, steps) with its own
// float32 arithmetic. SimpleSigmas returns steps values, without the final
// 0.
type SimpleSigmaser interface {
	SimpleSigmas(steps int) []float32
}

// simpleScheduler takes every (N/steps)-th table entry from the top.
func simpleScheduler(s Schedule, steps int) ([]float32, error) {
	if ss, ok := s.(SimpleSigmaser); ok {
		return append(ss.SimpleSigmas(steps), 0), nil
	}
	tab := s.Table()
	ss := float64(len(tab)) / float64(steps)
	out := make([]float32, 0, steps+1)
	for x := 0; x < steps; x++ {
		out = append(out, tab[len(tab)-1-int(float64(x)*ss)])
	}
	return append(out, 0), nil
}

// ddimUniformScheduler takes table entries 1, 1+k, 1+2k, ... with
// k = N/steps (integer division), reversed, then 0 (ComfyUI ddim_scheduler).
func ddimUniformScheduler(s Schedule, steps int) ([]float32, error) {
	tab := s.Table()
	var sigs []float32
	if math.Abs(float64(tab[1])) <= 1e-5 {
		steps++
	} else {
		sigs = append(sigs, 0)
	}
	ss := max(len(tab)/steps, 1)
	for x := 1; x < len(tab); x += ss {
		sigs = append(sigs, tab[x])
	}
	slices.Reverse(sigs)
	return sigs, nil
}

// betaScheduler places timesteps at the quantiles of a Beta(0.6, 0.6)
// distribution (Lee et al. 2024, arXiv:2407.12173; ComfyUI beta_scheduler):
// t_i = rint(ppf(1 - i/steps) * (N-1)), consecutive repeats dropped.
func betaScheduler(s Schedule, steps int) ([]float32, error) {
	return BetaSigmas(s, steps, 0.6, 0.6)
}

// BetaSigmas is the beta scheduler with explicit shape parameters.
func BetaSigmas(s Schedule, steps int, alpha, beta float64) ([]float32, error) {
	if !(alpha > 0 && beta > 0) {
		return nil, fmt.Errorf("beta scheduler: alpha %g and beta %g must be positive", alpha, beta)
	}
	tab := s.Table()
	total := float64(len(tab) - 1)
	out := make([]float32, 0, steps+1)
	last := -1.0
	for i := 0; i < steps; i++ {
		q := 1 - float64(i)*(1/float64(steps))
		t := math.RoundToEven(BetaPPF(q, alpha, beta) * total)
		if t != last {
			out = append(out, tab[int(t)])
		}
		last = t
	}
	return append(out, 0), nil
}

// linearQuadraticScheduler is Mochi's schedule (ComfyUI
// linear_quadratic_schedule, threshold 0.025, half the steps linear):
// linear in the first half, quadratic after, scaled by sigma_max.
func linearQuadraticScheduler(s Schedule, steps int) ([]float32, error) {
	const threshold = 0.025
	var sched []float64
	if steps == 1 {
		sched = []float64{1, 0}
	} else {
		lin := steps / 2
		for i := 0; i < lin; i++ {
			sched = append(sched, float64(i)*threshold/float64(lin))
		}
		diff := float64(lin) - threshold*float64(steps)
		quad := steps - lin
		qc := diff / (float64(lin) * float64(quad*quad))
		lc := threshold/float64(lin) - 2*diff/float64(quad*quad)
		c := qc * float64(lin*lin)
		for i := lin; i < steps; i++ {
			sched = append(sched, qc*float64(i*i)+lc*float64(i)+c)
		}
		sched = append(sched, 1)
		for i, v := range sched {
			sched[i] = 1 - v
		}
	}
	smax := s.SigmaMax()
	out := make([]float32, len(sched))
	for i, v := range sched {
		out[i] = float32(float32(v) * smax)
	}
	return out, nil
}

// klOptimalScheduler interpolates atan(sigma) linearly (Sabour et al. 2024,
// ComfyUI kl_optimal_scheduler), in float32. For one step ComfyUI divides
// by zero; darkroom returns [sigma_max, 0].
func klOptimalScheduler(s Schedule, steps int) ([]float32, error) {
	out := make([]float32, steps+1)
	if steps == 1 {
		out[0] = s.SigmaMax()
		return out, nil
	}
	amin := float32(math.Atan(float64(s.SigmaMin())))
	amax := float32(math.Atan(float64(s.SigmaMax())))
	for i := 0; i < steps; i++ {
		adj := float32(i) / float32(steps-1)
		v := float32(adj*amin) + float32(float32(1-adj)*amax)
		out[i] = float32(math.Tan(float64(v)))
	}
	return out, nil
}
