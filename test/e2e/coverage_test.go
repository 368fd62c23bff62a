package e2e_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// How coverage is counted, per target, from its `up` samples in
// VictoriaMetrics (raw, via the export API):
//
//   - A target's interval slots are [p+kI-I/2, p+kI+I/2) around its scrape
//     phase p (Prometheus scrapes a target at a fixed offset in its
//     interval, the same on every worker of one host and external labels).
//   - A missed interval is a slot without a sample: a gap g between two
//     consecutive samples misses round(g/I)-1 slots; at the window's edges
//     floor(gap/I) slots (the edge is at an arbitrary phase).
//   - A duplicate is a sample in a slot that already holds one: a gap
//     under I/2 (two owners scraping one target during a handoff).
//   - A down sample is an up sample that is not 1 (0, or NaN: a staleness
//     marker).

// coverage is what a window of `up` samples shows.
type coverage struct {
	Targets    int // targets expected
	Samples    int // up samples in the window
	Missed     int // interval slots without a sample, all targets
	Duplicates int // samples in a slot already holding one, all targets
	Down       int // samples that are not 1
	MaxDup     int // duplicates of the worst target
	MaxGap     time.Duration
	// Problems names the targets that missed, doubled beyond maxDup or went
	// down, with the moment (at most 20).
	Problems []string
	// PerTarget counts duplicates per instance.
	PerTarget map[string]int
	// DupTimes are the timestamps of the duplicates, in milliseconds.
	DupTimes []int64
}

func (c coverage) String() string {
	return fmt.Sprintf("targets=%d samples=%d missed_intervals=%d duplicates=%d max_duplicates_per_target=%d down=%d max_gap=%s",
		c.Targets, c.Samples, c.Missed, c.Duplicates, c.MaxDup, c.Down, c.MaxGap)
}

// measure counts coverage of the expected instances' up series in [from,
// to]. series may hold samples outside the window and series of other
// instances (ignored).
func measure(series []testenv.Series, instances []string, from, to time.Time, interval time.Duration) coverage {
	c := coverage{Targets: len(instances), PerTarget: map[string]int{}}
	problem := func(format string, args ...any) {
		if len(c.Problems) < 20 {
			c.Problems = append(c.Problems, fmt.Sprintf(format, args...))
		}
	}
	byInstance := map[string][]int64{}
	down := map[string][]int64{}
	for _, s := range series {
		inst := s.Labels.Get("instance")
		for i, ts := range s.Timestamps {
			if ts < from.UnixMilli() || ts > to.UnixMilli() {
				continue
			}
			byInstance[inst] = append(byInstance[inst], ts)
			if s.Values[i] != 1 {
				down[inst] = append(down[inst], ts)
			}
		}
	}
	iv := float64(interval.Milliseconds())
	fmtMs := func(ms int64) string { return time.UnixMilli(ms).UTC().Format("15:04:05.000") }
	for _, inst := range instances {
		ts := byInstance[inst]
		slices.Sort(ts)
		c.Samples += len(ts)
		if d := down[inst]; len(d) > 0 {
			c.Down += len(d)
			problem("%s: %d samples not 1, first at %s", inst, len(d), fmtMs(d[0]))
		}
		if len(ts) == 0 {
			n := int(float64(to.Sub(from).Milliseconds()) / iv)
			c.Missed += n
			problem("%s: no sample in the window (%d intervals)", inst, n)
			continue
		}
		edge := func(gap int64, where string) {
			if n := int(math.Floor(float64(gap) / iv)); n > 0 {
				c.Missed += n
				problem("%s: %d intervals without a sample at the window's %s (%s)", inst, n, where, time.Duration(gap)*time.Millisecond)
			}
			c.MaxGap = max(c.MaxGap, time.Duration(gap)*time.Millisecond)
		}
		edge(ts[0]-from.UnixMilli(), "start")
		edge(to.UnixMilli()-ts[len(ts)-1], "end")
		dups := 0
		for i := 1; i < len(ts); i++ {
			gap := ts[i] - ts[i-1]
			c.MaxGap = max(c.MaxGap, time.Duration(gap)*time.Millisecond)
			if float64(gap) < iv/2 {
				dups++
				c.DupTimes = append(c.DupTimes, ts[i])
				continue
			}
			if n := int(math.Round(float64(gap)/iv)) - 1; n > 0 {
				c.Missed += n
				problem("%s: %d intervals without a sample after %s (gap %s)", inst, n, fmtMs(ts[i-1]), time.Duration(gap)*time.Millisecond)
			}
		}
		c.Duplicates += dups
		c.MaxDup = max(c.MaxDup, dups)
		if dups > 0 {
			c.PerTarget[inst] = dups
		}
	}
	return c
}

// reportSeries are the series Prometheus adds to every scrape.
var reportSeries = map[string]bool{
	"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true,
	"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
}

// delivery accounts, for every scrape in the window, for the samples it
// produced: scrape_samples_post_metric_relabeling at a scrape's timestamp
// says how many samples the worker appended for the target then, and each
// of them must be in VictoriaMetrics at that timestamp (one per series of
// the target). Lost counts the ones that are not.
type delivery struct {
	Scrapes int // scrapes in the window (post_metric_relabeling samples)
	Samples int // samples those scrapes appended
	Lost    int // of those, not in VictoriaMetrics
	// Problems names targets and moments with lost samples (at most 20).
	Problems []string
}

func (d delivery) String() string {
	return fmt.Sprintf("scrapes=%d samples=%d lost=%d", d.Scrapes, d.Samples, d.Lost)
}

// deliveries checks every scrape of the expected instances in [from, to]
// in series (every series of those targets, report series included).
func deliveries(series []testenv.Series, instances []string, from, to time.Time) delivery {
	var d delivery
	type target struct {
		post map[int64]float64 // scrape timestamp → samples appended
		data map[int64]int     // timestamp → series with a sample then
	}
	byInstance := map[string]*target{}
	for _, inst := range instances {
		byInstance[inst] = &target{post: map[int64]float64{}, data: map[int64]int{}}
	}
	for _, s := range series {
		tg := byInstance[s.Labels.Get("instance")]
		if tg == nil {
			continue
		}
		name := s.Labels.Get(model.MetricNameLabel)
		for i, ts := range s.Timestamps {
			switch {
			case name == "scrape_samples_post_metric_relabeling":
				tg.post[ts] += s.Values[i] // two owners at one timestamp add up
			case !reportSeries[name]:
				tg.data[ts]++
			}
		}
	}
	for _, inst := range instances {
		tg := byInstance[inst]
		stamps := make([]int64, 0, len(tg.post))
		for ts := range tg.post {
			if ts >= from.UnixMilli() && ts <= to.UnixMilli() {
				stamps = append(stamps, ts)
			}
		}
		sort.Slice(stamps, func(i, j int) bool { return stamps[i] < stamps[j] })
		for _, ts := range stamps {
			want := int(tg.post[ts])
			d.Scrapes++
			d.Samples += want
			if lost := want - tg.data[ts]; lost > 0 {
				d.Lost += lost
				if len(d.Problems) < 20 {
					d.Problems = append(d.Problems, fmt.Sprintf("%s: %d of %d samples of the scrape at %s missing",
						inst, lost, want, time.UnixMilli(ts).UTC().Format("15:04:05.000")))
				}
			}
		}
	}
	return d
}

// upSince exports the up series of the cluster from since on.
func upSince(t *testing.T, vm *testenv.VictoriaMetrics, cluster string, since time.Time) []testenv.Series {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	series, err := vm.Export(ctx, fmt.Sprintf(`up{cluster_name=%q}`, cluster), since, time.Now().Add(time.Minute))
	require.NoError(t, err)
	return series
}

// waitData polls VictoriaMetrics until every expected instance has an up
// sample at or after until: the window up to until is complete.
func waitData(t *testing.T, vm *testenv.VictoriaMetrics, cluster string, instances []string, until time.Time) {
	t.Helper()
	var missing []string
	ok := pollUntil(waitLong, func() bool {
		last := map[string]int64{}
		for _, s := range upSince(t, vm, cluster, until.Add(-time.Minute)) {
			inst := s.Labels.Get("instance")
			if n := len(s.Timestamps); n > 0 {
				last[inst] = max(last[inst], s.Timestamps[n-1])
			}
		}
		missing = missing[:0]
		for _, inst := range instances {
			if last[inst] < until.UnixMilli() {
				missing = append(missing, inst)
			}
		}
		return len(missing) == 0
	})
	require.True(t, ok, "%d targets have no sample after %s, e.g. %v", len(missing), until.UTC().Format(time.TimeOnly), head(missing, 5))
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }

// TestMeasure checks the counting rules on made-up samples, so that a
// suite that finds nothing wrong is not a suite that cannot.
func TestMeasure(t *testing.T) {
	const iv = 2 * time.Second
	t0 := time.UnixMilli(1_000_000_000)
	up := func(inst string, offsets ...time.Duration) testenv.Series {
		s := testenv.Series{Labels: labels.FromStrings("__name__", "up", "instance", inst)}
		for _, o := range offsets {
			s.Timestamps = append(s.Timestamps, t0.Add(o).UnixMilli())
			s.Values = append(s.Values, 1)
		}
		return s
	}
	from, to := t0, t0.Add(10*time.Second)
	series := []testenv.Series{
		up("ok", 500*time.Millisecond, 2500*time.Millisecond, 4500*time.Millisecond, 6600*time.Millisecond, 8400*time.Millisecond),
		up("late", 500*time.Millisecond, 2500*time.Millisecond, 4500*time.Millisecond, 6000*time.Millisecond+1600*time.Millisecond, 8500*time.Millisecond),
		up("miss", 500*time.Millisecond, 2500*time.Millisecond, 6499*time.Millisecond, 8500*time.Millisecond),
		up("dup", 500*time.Millisecond, 2500*time.Millisecond, 2503*time.Millisecond, 4500*time.Millisecond, 6500*time.Millisecond, 8500*time.Millisecond),
		up("tail", 500*time.Millisecond, 2500*time.Millisecond, 4500*time.Millisecond),
	}
	c := measure(series, []string{"ok"}, from, to, iv)
	require.Zero(t, c.Missed, c.Problems)
	require.Zero(t, c.Duplicates)
	c = measure(series, []string{"late"}, from, to, iv)
	require.Equal(t, 1, c.Missed, "a scrape more than half an interval late leaves its slot empty")
	require.Equal(t, 1, c.Duplicates, "and shares the next slot with that slot's own scrape")
	c = measure(series, []string{"miss"}, from, to, iv)
	require.Equal(t, 1, c.Missed, c.Problems)
	c = measure(series, []string{"dup"}, from, to, iv)
	require.Zero(t, c.Missed)
	require.Equal(t, 1, c.Duplicates)
	require.Equal(t, 1, c.MaxDup)
	c = measure(series, []string{"tail"}, from, to, iv)
	require.Equal(t, 2, c.Missed, "nothing after 4.5s of a 10s window: 2 slots")
	c = measure(series, []string{"absent"}, from, to, iv)
	require.Equal(t, 5, c.Missed)
	down := up("down", 500*time.Millisecond)
	down.Values[0] = 0
	c = measure([]testenv.Series{down}, []string{"down"}, from, t0.Add(2*time.Second), iv)
	require.Equal(t, 1, c.Down)

	// Deliveries: three samples per scrape, one lost at the second scrape.
	s := func(name string, v float64, offsets ...time.Duration) testenv.Series {
		x := testenv.Series{Labels: labels.FromStrings("__name__", name, "instance", "a")}
		for _, o := range offsets {
			x.Timestamps = append(x.Timestamps, t0.Add(o).UnixMilli())
			x.Values = append(x.Values, v)
		}
		return x
	}
	all := []testenv.Series{
		s("scrape_samples_post_metric_relabeling", 3, 0, iv),
		s("m1", 1, 0, iv), s("m2", 1, 0, iv), s("m3", 1, 0),
		s("up", 1, 0, iv),
	}
	d := deliveries(all, []string{"a"}, from, to)
	require.Equal(t, delivery{Scrapes: 2, Samples: 6, Lost: 1}, delivery{Scrapes: d.Scrapes, Samples: d.Samples, Lost: d.Lost}, d.Problems)
	require.True(t, strings.Contains(d.Problems[0], "1 of 3"), d.Problems)
}
