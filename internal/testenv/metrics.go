package testenv

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// MetricSample is one series of a /metrics page.
type MetricSample struct {
	Labels labels.Labels // with __name__
	Value  float64
}

// MetricSet is a parsed /metrics page.
type MetricSet []MetricSample

// Metrics scrapes a /metrics URL (Prometheus text format) and parses it
// with ParseText.
func Metrics(ctx context.Context, url string) (MetricSet, error) {
	var out MetricSet
	err := get(ctx, url, func(body io.Reader) error {
		var err error
		out, err = ParseText(body)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", url, err)
	}
	return out, nil
}

// ParseText parses a text exposition into its series: every counter, gauge
// and untyped sample; summaries' and histograms' _sum and _count, and
// histograms' _bucket{le} too, as Prometheus ingests them.
func ParseText(r io.Reader) (MetricSet, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	var out MetricSet
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b := labels.NewBuilder(labels.EmptyLabels())
			for _, l := range m.GetLabel() {
				b.Set(l.GetName(), l.GetValue())
			}
			add := func(n string, v float64) {
				b.Set(model.MetricNameLabel, n)
				out = append(out, MetricSample{Labels: b.Labels(), Value: v})
			}
			switch {
			case m.GetCounter() != nil:
				add(name, m.GetCounter().GetValue())
			case m.GetGauge() != nil:
				add(name, m.GetGauge().GetValue())
			case m.GetUntyped() != nil:
				add(name, m.GetUntyped().GetValue())
			case m.GetSummary() != nil:
				add(name+"_sum", m.GetSummary().GetSampleSum())
				add(name+"_count", float64(m.GetSummary().GetSampleCount()))
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				for _, bk := range h.GetBucket() {
					b.Set(model.BucketLabel, strconv.FormatFloat(bk.GetUpperBound(), 'g', -1, 64))
					add(name+"_bucket", float64(bk.GetCumulativeCount()))
				}
				b.Del(model.BucketLabel)
				add(name+"_sum", h.GetSampleSum())
				add(name+"_count", float64(h.GetSampleCount()))
			}
		}
	}
	return out, nil
}

// Values returns the set as series (its labels' string, as
// {__name__="up", job="x"}) → value, failing on a series given twice.
func (s MetricSet) Values() (map[string]float64, error) {
	out := make(map[string]float64, len(s))
	for _, m := range s {
		k := m.Labels.String()
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("series %s given twice", k)
		}
		out[k] = m.Value
	}
	return out, nil
}

// Sum adds up the series of the named metric whose labels include match
// (nil: all of them); ok is false when there is none.
func (s MetricSet) Sum(name string, match map[string]string) (sum float64, ok bool) {
	for _, m := range s {
		if m.Labels.Get(model.MetricNameLabel) != name {
			continue
		}
		all := true
		for n, want := range match {
			if m.Labels.Get(n) != want {
				all = false
				break
			}
		}
		if all {
			sum += m.Value
			ok = true
		}
	}
	return sum, ok
}
