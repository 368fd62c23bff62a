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
// static targets (static_configs of 10,000 targets each), no relabeling;
// groups=1 is the whole-process benchmark's: one file_sd group.
func BenchmarkPipelineStatic(b *testing.B) {
	b.Run("groups=100", func(b *testing.B) { benchPipelineStatic(b, 100, 10_000) })
	b.Run("groups=1", func(b *testing.B) { benchPipelineStatic(b, 1, 1_000_000) })
}

func benchPipelineStatic(b *testing.B, groupsN, perGroup int) {
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

// BenchmarkPipelinePodsBatch is Kubernetes pod discovery delivering a
// cluster in batches: 150,000 groups of one target (a group per pod), all
// but 5,000 the same as in the previous update. Per op: one update, the
// new groups relabeled, the unchanged ones found in the cache.
func BenchmarkPipelinePodsBatch(b *testing.B) {
	const pods, batch = 150_000, 5_000
	group := func(i int) *targetgroup.Group {
		name := model.LabelValue(fmt.Sprintf("app-%d-%08x", i%500, i))
		ls := model.LabelSet{
			"__meta_kubernetes_namespace":                           model.LabelValue(fmt.Sprintf("ns-%d", i%50)),
			"__meta_kubernetes_pod_name":                            name,
			"__meta_kubernetes_pod_ip":                              model.LabelValue(ipOf(i)),
			"__meta_kubernetes_pod_node_name":                       model.LabelValue(fmt.Sprintf("node-%05d", i/30)),
			"__meta_kubernetes_pod_ready":                           "true",
			"__meta_kubernetes_pod_phase":                           "Running",
			"__meta_kubernetes_pod_label_app":                       model.LabelValue(fmt.Sprintf("app-%d", i%500)),
			"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
		}
		return &targetgroup.Group{Source: "pod/" + string(name), Labels: ls, Targets: []model.LabelSet{{
			model.AddressLabel:                            model.LabelValue(ipOf(i) + ":8080"),
			"__meta_kubernetes_pod_container_name":        "app",
			"__meta_kubernetes_pod_container_port_number": "8080",
		}}}
	}
	const yaml = `
scrape_configs:
- job_name: pods
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: true
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(.+)
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
`
	groups := make([]*targetgroup.Group, pods)
	for i := range groups {
		groups[i] = group(i)
	}
	p := newPipeline(b, nil, PipelineOptions{}, yaml)
	ts, _ := p.Targets("pods", groups)
	require.Len(b, ts, pods)
	next := pods
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		// A batch: the oldest pods replaced by new ones.
		groups = append(groups[batch:], make([]*targetgroup.Group, batch)...)
		for k := range batch {
			groups[pods-batch+k] = group(next)
			next++
		}
		b.StartTimer()
		ts, _ = p.Targets("pods", groups)
	}
	require.Len(b, ts, pods)
}
