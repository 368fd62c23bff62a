package scraper

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
)

// seriesMetric is the report series Prometheus appends after every scrape
// with the number of samples the scrape produced after metric relabeling:
// the target's series count.
const seriesMetric = "scrape_samples_post_metric_relabeling"

// loadTracker is the storage.AppendableV2 the scrape manager writes to: it
// passes everything on unchanged and notes, per target label set, the value
// of each scrape's seriesMetric report sample.
type loadTracker struct {
	inner storage.AppendableV2

	mtx    sync.Mutex
	series map[uint64]uint64 // hash of the target's labels → series

	// newest is the newest timestamp committed, for the shutdown flush.
	newest atomic.Int64
}

var _ storage.AppendableV2 = (*loadTracker)(nil)

func newLoadTracker(inner storage.AppendableV2) *loadTracker {
	return &loadTracker{inner: inner, series: map[uint64]uint64{}}
}

// AppenderV2 returns an appender that records seriesMetric samples.
func (l *loadTracker) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return &trackingAppender{AppenderV2: l.inner.AppenderV2(ctx), l: l}
}

// seriesOf returns the series count of the target with the given public
// labels' hash (labelsKey), and whether one was recorded.
func (l *loadTracker) seriesOf(key uint64) (uint64, bool) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	n, ok := l.series[key]
	return n, ok
}

// forget drops the records of targets not in keep.
func (l *loadTracker) forget(keep map[uint64]struct{}) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	for k := range l.series {
		if _, ok := keep[k]; !ok {
			delete(l.series, k)
		}
	}
}

// labelsKey is the key loadTracker uses for a label set: its hash without
// the metric name, so a report series and its target's labels match.
func labelsKey(ls labels.Labels) uint64 {
	h, _ := ls.HashWithoutLabels(nil, model.MetricNameLabel)
	return h
}

type trackingAppender struct {
	storage.AppenderV2
	l       *loadTracker
	pending map[uint64]uint64
	newest  int64
}

func (a *trackingAppender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	a.newest = max(a.newest, t)
	if h == nil && fh == nil && !value.IsStaleNaN(v) && ls.Get(model.MetricNameLabel) == seriesMetric {
		if a.pending == nil {
			a.pending = map[uint64]uint64{}
		}
		a.pending[labelsKey(ls)] = uint64(v)
	}
	return a.AppenderV2.Append(ref, ls, st, t, v, h, fh, opts)
}

func (a *trackingAppender) Commit() error {
	if len(a.pending) > 0 {
		a.l.mtx.Lock()
		for k, v := range a.pending {
			a.l.series[k] = v
		}
		a.l.mtx.Unlock()
	}
	err := a.AppenderV2.Commit()
	if err == nil {
		for {
			old := a.l.newest.Load()
			if a.newest <= old || a.l.newest.CompareAndSwap(old, a.newest) {
				break
			}
		}
	}
	return err
}
