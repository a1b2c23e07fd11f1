package sampling

import "math"

// BetaCDF returns the regularized incomplete beta function I_x(a, b), the
// CDF of the Beta(a, b) distribution at x, by the continued fraction of
// Numerical Recipes §6.4 evaluated with the modified Lentz method (relative
// accuracy about 1e-15). a and b must be positive.
func BetaCDF(x, a, b float64) float64 {
	switch {
	case x != x || a != a || b != b:
		return math.NaN()
	case x <= 0:
		return 0
	case x >= 1:
		return 1
	}
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	front := math.Exp(a*math.Log(x) + b*math.Log1p(-x) - (la + lb - lab))
	if x < (a+1)/(a+b+2) {
		return front * betaCF(x, a, b) / a
	}
	return 1 - front*betaCF(1-x, b, a)/b
}

// betaCF evaluates the continued fraction for I_x(a, b).
func betaCF(x, a, b float64) float64 {
	const (
		tiny = 1e-300
		eps  = 1e-16
	)
	qab, qap, qam := a+b, a+1, a-1
	c := 1.0
	d := 1 - qab*x/qap
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	h := d
	for m := 1; m <= 1000; m++ {
		fm := float64(m)
		m2 := 2 * fm
		aa := fm * (b - fm) * x / ((qam + m2) * (a + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		h *= d * c
		aa = -(a + fm) * (qab + fm) * x / ((a + m2) * (qap + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return h
}

// BetaPPF returns the quantile function (inverse CDF) of the Beta(a, b)
// distribution, scipy.stats.beta.ppf: the x in [0, 1] with BetaCDF(x) = q.
// It bisects the monotone CDF to the resolution of float64 (absolute error
// below 1e-15). It returns NaN for q outside [0, 1] or non-positive a, b.
func BetaPPF(q, a, b float64) float64 {
	if !(q >= 0 && q <= 1) || !(a > 0 && b > 0) {
		return math.NaN()
	}
	if q == 0 {
		return 0
	}
	if q == 1 {
		return 1
	}
	if a == b && q == 0.5 {
		// Exact by symmetry. scipy (Boost ibeta_inv) also returns exactly
		// 0.5 here, which matters to callers that round: ComfyUI's beta
		// scheduler maps it to timestep rint(499.5) = 500.
		return 0.5
	}
	lo, hi := 0.0, 1.0
	for range 200 {
		mid := lo + (hi-lo)/2
		if mid <= lo || mid >= hi {
			break
		}
		if BetaCDF(mid, a, b) < q {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo + (hi-lo)/2
}
