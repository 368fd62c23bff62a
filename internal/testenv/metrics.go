package testenv

import (
	"context"
	"fmt"
	"io"

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

// Metrics scrapes a /metrics URL (Prometheus text format): every counter,
// gauge and untyped sample; summaries and histograms give their _sum and
// _count.
func Metrics(ctx context.Context, url string) (MetricSet, error) {
	var out MetricSet
	err := get(ctx, url, func(body io.Reader) error {
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(body)
		if err != nil {
			return err
		}
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
					add(name+"_sum", m.GetHistogram().GetSampleSum())
					add(name+"_count", float64(m.GetHistogram().GetSampleCount()))
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", url, err)
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
