package synth

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

func parse(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			_, dup := out[key]
			require.False(t, dup, "duplicate series %s", key)
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			default:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func TestExactSeriesAndValidExposition(t *testing.T) {
	for _, n := range []int{1, 50, 163, 800, 801, 5000} {
		e := New(Options{Series: n, Seed: 3})
		require.Equal(t, n, e.Series())
		got := parse(t, e.Append(nil, time.Now()))
		require.Len(t, got, n, "series=%d", n)
	}
}

func TestCountersIncreaseGaugesHold(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	e := New(Options{Seed: 7, Start: start})
	a := parse(t, e.Append(nil, start.Add(10*time.Second)))
	b := parse(t, e.Append(nil, start.Add(70*time.Second)))
	var counters, gauges int
	for k, va := range a {
		vb := b[k]
		if len(k) > 6 && (bytes.Contains([]byte(k), []byte("_total")) || bytes.Contains([]byte(k), []byte("node_cpu_seconds"))) {
			require.Greater(t, vb, va, k)
			counters++
		} else {
			require.Equal(t, va, vb, k)
			gauges++
		}
	}
	require.Positive(t, counters)
	require.Positive(t, gauges)
}

func TestSeedsDiffer(t *testing.T) {
	now := time.Now()
	a := parse(t, New(Options{Seed: 1, Start: now}).Append(nil, now))
	b := parse(t, New(Options{Seed: 2, Start: now}).Append(nil, now))
	require.Equal(t, len(a), len(b))
	require.NotEqual(t, a, b)
}
