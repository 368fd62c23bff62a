package chart

import (
	"math"
	"strconv"
)

// maxTicks bounds the ticks any axis gets; a tick function that would make
// more is a bug (and loops on odd floats are cut short by it).
const maxTicks = 16

// linearTicks returns a domain [dlo, dhi] covering [lo, hi] whose ends are
// ticks, and the ticks: multiples of a 1-2-5 step, between three and seven of
// them. A degenerate range (lo == hi) is widened around its value.
func linearTicks(lo, hi float64) (dlo, dhi float64, ticks []float64, step float64) {
	if lo == hi {
		d := math.Abs(lo) / 2
		if d == 0 {
			d = 1
		}
		lo, hi = lo-d, hi+d
	}
	m, e := niceStep((hi - lo) / 5)
	at := func(i float64) float64 { // i·m·10^e, dividing for negative e so 0.1 steps stay exact
		if e >= 0 {
			return i * m * math.Pow10(e)
		}
		return i * m / math.Pow10(-e)
	}
	step = at(1)
	i0 := math.Floor(lo/step + 1e-9)
	i1 := math.Ceil(hi/step - 1e-9)
	for i := i0; i <= i1 && len(ticks) < maxTicks; i++ {
		v := at(i)
		if v == 0 {
			v = 0 // no "-0"
		}
		ticks = append(ticks, v)
	}
	return ticks[0], ticks[len(ticks)-1], ticks, step
}

// niceStep returns the smallest m·10^e with m in {1, 2, 5} that is at least raw.
func niceStep(raw float64) (m float64, e int) {
	e = int(math.Floor(math.Log10(raw)))
	switch n := raw / math.Pow10(e); {
	case n <= 1+1e-9:
		return 1, e
	case n <= 2+1e-9:
		return 2, e
	case n <= 5+1e-9:
		return 5, e
	default:
		return 1, e + 1
	}
}

// niceFloor returns the largest m·10^e with m in {1, 2, 5} that is at most v (v > 0).
func niceFloor(v float64) float64 {
	e := int(math.Floor(math.Log10(v) + 1e-12))
	p := math.Pow10(e)
	for _, m := range []float64{5, 2, 1} {
		if m*p <= v*(1+1e-12) {
			return m * p
		}
	}
	return math.Pow10(e-1) * 5
}

// log2Span is the widest hi/lo ratio that gets power-of-two ticks; wider
// ranges get decades.
const log2Span = 64

// logTicks returns a domain covering [lo, hi] (lo > 0) whose ends are ticks,
// and the ticks. Up to six octaves the ticks are b·2^k for the largest 1-2-5
// number b at most lo, so a sweep over 200, 400 … 3200 gets a tick on every
// point; wider ranges get powers of ten, with 2× and 5× between them over at
// most three decades and every n-th decade over more than ten.
func logTicks(lo, hi float64) (dlo, dhi float64, ticks []float64) {
	if lo == hi {
		lo, hi = lo/2, hi*2
	}
	if hi/lo <= log2Span*(1+1e-9) {
		b := niceFloor(lo)
		for k := 0; len(ticks) < maxTicks; k++ {
			v := b * math.Exp2(float64(k))
			ticks = append(ticks, v)
			if v >= hi*(1-1e-9) {
				break
			}
		}
		return ticks[0], ticks[len(ticks)-1], ticks
	}
	e0 := int(math.Floor(math.Log10(lo) + 1e-9))
	e1 := int(math.Ceil(math.Log10(hi) - 1e-9))
	var cand []float64
	if e1-e0 <= 3 {
		for e := e0; e <= e1; e++ {
			for _, m := range []float64{1, 2, 5} {
				cand = append(cand, m*math.Pow10(e))
			}
		}
	} else {
		every := (e1 - e0 + 9) / 10 // at most ten decades labelled
		for e := e0; ; e += every {
			cand = append(cand, math.Pow10(e))
			if e >= e1 {
				break
			}
		}
	}
	// Keep the candidates from the last one at or below lo to the first at or above hi.
	first, last := 0, len(cand)-1
	for i, v := range cand {
		if v <= lo*(1+1e-9) {
			first = i
		}
	}
	for i := len(cand) - 1; i >= 0; i-- {
		if cand[i] >= hi*(1-1e-9) {
			last = i
		}
	}
	ticks = cand[first : last+1]
	return ticks[0], ticks[len(ticks)-1], ticks
}

// siScale returns the divisor and suffix for labels up to maxAbs: values
// from 10000 up are shown in k, from a million up in M, G or T.
func siScale(maxAbs float64) (float64, string) {
	switch {
	case maxAbs >= 1e12:
		return 1e12, "T"
	case maxAbs >= 1e9:
		return 1e9, "G"
	case maxAbs >= 1e6:
		return 1e6, "M"
	case maxAbs >= 1e4:
		return 1e3, "k"
	}
	return 1, ""
}

// linearLabels formats ticks that share a step with one scale and as many
// decimals as the step needs.
func linearLabels(ticks []float64, step float64) []string {
	maxAbs := math.Max(math.Abs(ticks[0]), math.Abs(ticks[len(ticks)-1]))
	scale, suffix := siScale(maxAbs)
	decimals := max(0, int(-math.Floor(math.Log10(step/scale)+1e-9)))
	out := make([]string, len(ticks))
	for i, v := range ticks {
		s := strconv.FormatFloat(v/scale, 'f', decimals, 64)
		if v == 0 {
			s = "0"
		} else {
			s += suffix
		}
		out[i] = s
	}
	return out
}

// logLabels formats each tick on its own: 3200, 12.8k, 0.005, 1e-06.
func logLabels(ticks []float64) []string {
	out := make([]string, len(ticks))
	for i, v := range ticks {
		scale, suffix := siScale(v)
		r, _ := strconv.ParseFloat(strconv.FormatFloat(v/scale, 'g', 10, 64), 64)
		if v < 1e-3 {
			out[i] = strconv.FormatFloat(r, 'g', -1, 64)
			continue
		}
		out[i] = strconv.FormatFloat(r, 'f', -1, 64) + suffix
	}
	return out
}
