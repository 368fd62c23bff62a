package synth

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// parse parses a text exposition into series → value (testenv.ParseText),
// failing the test on a malformed body or a series given twice.
func parse(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	set, err := testenv.ParseText(bytes.NewReader(body))
	require.NoError(t, err)
	out, err := set.Values()
	require.NoError(t, err)
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

// TestHeldValues: gauges held at a value keep it for every seed:
// filesystems are never read-only, network devices are up.
func TestHeldValues(t *testing.T) {
	for seed := range uint64(5) {
		got := parse(t, New(Options{Seed: seed}).Append(nil, time.Now()))
		var readonly, up int
		for k, v := range got {
			switch {
			case strings.HasPrefix(k, `{__name__="node_filesystem_readonly",`):
				require.Zero(t, v, k)
				readonly++
			case strings.HasPrefix(k, `{__name__="node_network_up",`):
				require.Equal(t, 1.0, v, k)
				up++
			}
		}
		require.Equal(t, len(mountpoints), readonly)
		require.Equal(t, len(netDevices), up)
	}
}

func TestSeedsDiffer(t *testing.T) {
	now := time.Now()
	a := parse(t, New(Options{Seed: 1, Start: now}).Append(nil, now))
	b := parse(t, New(Options{Seed: 2, Start: now}).Append(nil, now))
	require.Equal(t, len(a), len(b))
	require.NotEqual(t, a, b)
}

func TestAppExposition(t *testing.T) {
	for _, n := range []int{1, 9, 20, 23, 37, 50, 500} {
		e := New(Options{Kind: KindApp, Series: n, Seed: 3})
		require.Equal(t, n, e.Series())
		body := e.Append(nil, time.Now())
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
		require.NoError(t, err, "series=%d", n)
		lines := 0
		for _, l := range bytes.Split(body, []byte("\n")) {
			if len(l) > 0 && l[0] != '#' {
				lines++
			}
		}
		require.Equal(t, n, lines, "series=%d", n)
		if h, ok := fams["http_request_duration_seconds"]; ok {
			// Only whole histograms: every one ends at +Inf, buckets
			// cumulative.
			for _, m := range h.GetMetric() {
				bs := m.GetHistogram().GetBucket()
				require.True(t, math.IsInf(bs[len(bs)-1].GetUpperBound(), 1), "series=%d", n)
			}
		}
	}
	start := time.Unix(1_700_000_000, 0)
	e := New(Options{Kind: KindApp, Seed: 5, Start: start})
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(e.Append(nil, start.Add(time.Hour))))
	require.NoError(t, err)
	require.Len(t, fams["http_request_duration_seconds"].GetMetric(), 2)
	for _, m := range fams["http_request_duration_seconds"].GetMetric() {
		prev := uint64(0)
		for _, b := range m.GetHistogram().GetBucket() {
			require.GreaterOrEqual(t, b.GetCumulativeCount(), prev)
			prev = b.GetCumulativeCount()
		}
		require.Equal(t, prev, m.GetHistogram().GetSampleCount())
		require.Positive(t, prev)
	}
	require.Contains(t, fams, "http_requests_total")
	require.Contains(t, fams, "go_goroutines")
}

func TestLayoutShared(t *testing.T) {
	l := NewLayout(KindNode, 300)
	now := time.Now()
	a, b := l.New(Options{Seed: 1, Start: now}), l.New(Options{Seed: 2, Start: now})
	require.Equal(t, 300, a.Series())
	require.Equal(t, KindNode, l.Kind())
	require.NotEqual(t, string(a.Append(nil, now)), string(b.Append(nil, now)))
	// Same seed, same layout or not: same exposition.
	require.Equal(t, string(a.Append(nil, now)), string(New(Options{Series: 300, Seed: 1, Start: now}).Append(nil, now)))
}
