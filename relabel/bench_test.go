package relabel

import (
	"fmt"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/require"
)

// BenchmarkPipeline runs 100,000 Consul-like targets (100 services × 1,000
// instances, half of them at pod IPs) through a typical relabel_configs:
// cold relabels everything, warm finds every group unchanged.
func BenchmarkPipeline(b *testing.B) {
	const services, perService = 100, 1000
	pods := staticPods{}
	var groups []*targetgroup.Group
	for s := range services {
		base := s * perService
		ip := func(i int) string { return ipOf(base + i) }
		groups = append(groups, consulGroup(fmt.Sprintf("svc-%d", s), perService, ip))
		for i := 0; i < perService; i += 2 {
			pods[ip(i)] = newPod(podAt("ns", fmt.Sprintf("pod-%d", base+i), "node-1", ip(i), map[string]string{"app": "a", "pod-template-hash": "abc"}), ip(i))
		}
	}
	n := services * perService
	for _, mode := range []string{"cold", "warm"} {
		b.Run(mode, func(b *testing.B) {
			p := newPipeline(b, nil, PipelineOptions{Pods: pods}, pipelineYAML)
			ts, _ := p.Targets("app", groups)
			require.NotEmpty(b, ts)
			b.ReportAllocs()
			for b.Loop() {
				if mode == "cold" {
					p.jobs["app"].cache = map[string]*groupResult{}
				}
				ts, _ = p.Targets("app", groups)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/target")
			b.ReportMetric(float64(len(ts)), "kept")
		})
	}
}

// BenchmarkPipelineStatic is the coordinator benchmark's shape: 1,000,000
// static targets (static_configs of 10,000 targets each), no relabeling.
func BenchmarkPipelineStatic(b *testing.B) {
	const groupsN, perGroup = 100, 10000
	var groups []*targetgroup.Group
	for g := range groupsN {
		tg := &targetgroup.Group{Source: fmt.Sprint(g), Labels: model.LabelSet{"env": "bench"}}
		for i := range perGroup {
			tg.Targets = append(tg.Targets, model.LabelSet{"__address__": model.LabelValue(ipOf(g*perGroup+i) + ":9100")})
		}
		groups = append(groups, tg)
	}
	n := groupsN * perGroup
	for _, mode := range []string{"cold", "warm"} {
		b.Run(mode, func(b *testing.B) {
			p := newPipeline(b, nil, PipelineOptions{}, "scrape_configs:\n- job_name: static\n")
			ts, _ := p.Targets("static", groups)
			require.Len(b, ts, n)
			b.ReportAllocs()
			for b.Loop() {
				if mode == "cold" {
					p.jobs["static"].cache = map[string]*groupResult{}
				}
				ts, _ = p.Targets("static", groups)
			}
			require.Len(b, ts, n)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/target")
		})
	}
}
