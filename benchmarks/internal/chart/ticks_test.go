package chart

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLinearTicksProperties(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for range 3000 {
		e := rng.IntN(24) - 12
		lo := (rng.Float64()*2 - 1) * math.Pow10(e)
		hi := lo + rng.Float64()*math.Pow10(e-rng.IntN(4))
		if rng.IntN(20) == 0 {
			hi = lo
		}
		dlo, dhi, ticks, step := linearTicks(lo, hi)
		require.LessOrEqual(t, dlo, lo, "lo=%v hi=%v", lo, hi)
		require.GreaterOrEqual(t, dhi, hi, "lo=%v hi=%v", lo, hi)
		require.Equal(t, dlo, ticks[0])
		require.Equal(t, dhi, ticks[len(ticks)-1])
		require.GreaterOrEqual(t, len(ticks), 3, "lo=%v hi=%v ticks=%v", lo, hi, ticks)
		require.LessOrEqual(t, len(ticks), 7, "lo=%v hi=%v ticks=%v", lo, hi, ticks)
		// The step is 1, 2 or 5 times a power of ten, and the ticks are its multiples.
		m := step / math.Pow10(int(math.Floor(math.Log10(step)+1e-9)))
		require.True(t, near(m, 1) || near(m, 2) || near(m, 5), "step %v", step)
		for i, v := range ticks {
			require.True(t, near(v/step, math.Round(v/step)), "tick %v not a multiple of %v", v, step)
			if i > 0 {
				require.InEpsilon(t, step, v-ticks[i-1], 1e-6, "ticks %v", ticks)
			}
		}
		// Labels are distinct.
		labels := linearLabels(ticks, step)
		seen := map[string]bool{}
		for _, l := range labels {
			require.False(t, seen[l], "duplicate label %q in %v (ticks %v)", l, labels, ticks)
			seen[l] = true
		}
	}
}

func TestLogTicksProperties(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for range 3000 {
		lo := math.Pow(10, rng.Float64()*20-10)
		hi := lo * math.Pow(10, rng.Float64()*rng.Float64()*15)
		if rng.IntN(20) == 0 {
			hi = lo
		}
		dlo, dhi, ticks := logTicks(lo, hi)
		require.LessOrEqual(t, dlo, lo*(1+1e-9), "lo=%v hi=%v", lo, hi)
		require.GreaterOrEqual(t, dhi, hi*(1-1e-9), "lo=%v hi=%v", lo, hi)
		require.GreaterOrEqual(t, len(ticks), 2, "lo=%v hi=%v ticks=%v", lo, hi, ticks)
		require.LessOrEqual(t, len(ticks), 12, "lo=%v hi=%v ticks=%v", lo, hi, ticks)
		for i, v := range ticks {
			require.Positive(t, v)
			if i > 0 {
				require.Greater(t, v, ticks[i-1], "ticks %v", ticks)
			}
		}
		if hi/lo <= log2Span {
			// Power-of-two steps from a 1-2-5 base.
			for i := 1; i < len(ticks); i++ {
				require.InEpsilon(t, 2, ticks[i]/ticks[i-1], 1e-9, "ticks %v", ticks)
			}
		} else {
			// Every tick is 1, 2 or 5 times a power of ten.
			for _, v := range ticks {
				m := v / math.Pow10(int(math.Floor(math.Log10(v)+1e-9)))
				require.True(t, near(m, 1) || near(m, 2) || near(m, 5), "tick %v in %v", v, ticks)
			}
		}
		labels := logLabels(ticks)
		seen := map[string]bool{}
		for _, l := range labels {
			require.False(t, seen[l], "duplicate label %q in %v", l, labels)
			seen[l] = true
		}
	}
}

func TestTicksExamples(t *testing.T) {
	_, _, ticks := logTicks(200, 3200)
	require.Equal(t, []float64{200, 400, 800, 1600, 3200}, ticks)
	require.Equal(t, []string{"200", "400", "800", "1600", "3200"}, logLabels(ticks))
	_, _, ticks = logTicks(0.003, 0.9)
	require.Equal(t, []string{"0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"}, logLabels(ticks))
	_, _, ticks = logTicks(0.003, 2)
	require.Equal(t, []string{"0.001", "0.01", "0.1", "1", "10"}, logLabels(ticks))
	_, _, ticks = logTicks(0.003, 0.9)
	require.Equal(t, []string{"0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"}, logLabels(ticks))
	_, _, ticks = logTicks(1, 1e9)
	require.Equal(t, []string{"1", "10", "100", "1000", "10k", "100k", "1M", "10M", "100M", "1G"}, logLabels(ticks))
	_, _, ticks, step := linearTicks(0, 1.3e6)
	require.Equal(t, []string{"0", "0.5M", "1.0M", "1.5M"}, linearLabels(ticks, step))
	_, _, ticks, step = linearTicks(0.1, 0.5)
	require.Equal(t, []string{"0.1", "0.2", "0.3", "0.4", "0.5"}, linearLabels(ticks, step))
	require.Equal(t, []float64{0.1, 0.2, 0.3, 0.4, 0.5}, ticks)
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }
