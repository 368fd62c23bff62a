package relabel

import (
	"fmt"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	promrelabel "github.com/prometheus/prometheus/model/relabel"
	"github.com/stretchr/testify/require"
)

// pruneYAML's jobs read __meta_* labels with every relabel action: by
// source_labels, target_label (keepequal, dropequal) and labelmap's regex.
const pruneYAML = `
scrape_configs:
- job_name: pods
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: true
  - source_labels: [__meta_kubernetes_pod_phase]
    action: drop
    regex: Failed
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    regex: ([^:]+)(?::\d+)?;(\d+)
    replacement: $1:$2
    target_label: __address__
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(.+)
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: __meta_copy
  - source_labels: [__meta_copy]
    action: uppercase
    target_label: pod_upper
  - source_labels: [__meta_kubernetes_namespace]
    action: lowercase
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_node_name]
    action: hashmod
    modulus: 4
    target_label: shard
  - source_labels: [__meta_kubernetes_pod_host_ip]
    action: keepequal
    target_label: __meta_kubernetes_pod_ip_copy
  - action: labeldrop
    regex: pod_template_hash
- job_name: equal
  relabel_configs:
  - source_labels: [__meta_a]
    action: dropequal
    target_label: __meta_b
  - action: labelkeep
    regex: __.*|b
- job_name: plain
`

func podGroups(n int) []*targetgroup.Group {
	var gs []*targetgroup.Group
	for i := range n {
		ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250)
		host := "10.1.0.1"
		ipCopy := host
		if i%5 == 4 {
			ipCopy = "10.9.9.9" // keepequal drops it
		}
		phase := "Running"
		if i%7 == 6 {
			phase = "Failed"
		}
		gs = append(gs, &targetgroup.Group{
			Source: fmt.Sprintf("pod/ns/p-%d", i),
			Labels: model.LabelSet{
				"__meta_kubernetes_namespace":                           "NS",
				"__meta_kubernetes_pod_name":                            model.LabelValue(fmt.Sprintf("p-%d", i)),
				"__meta_kubernetes_pod_node_name":                       model.LabelValue(fmt.Sprintf("node-%d", i%9)),
				"__meta_kubernetes_pod_host_ip":                         model.LabelValue(host),
				"__meta_kubernetes_pod_ip_copy":                         model.LabelValue(ipCopy),
				"__meta_kubernetes_pod_phase":                           model.LabelValue(phase),
				"__meta_kubernetes_pod_uid":                             model.LabelValue(fmt.Sprint(i)),
				"__meta_kubernetes_pod_label_app":                       model.LabelValue(fmt.Sprintf("app-%d", i%3)),
				"__meta_kubernetes_pod_label_pod_template_hash":         "abc",
				"__meta_kubernetes_pod_annotation_prometheus_io_scrape": model.LabelValue(fmt.Sprint(i%6 != 5)),
				"__meta_kubernetes_pod_annotation_prometheus_io_port":   "8080",
				"__meta_a": model.LabelValue(fmt.Sprint(i % 2)),
				"b":        "x",
			},
			Targets: []model.LabelSet{
				{"__address__": model.LabelValue(ip + ":80"), "__meta_kubernetes_pod_container_name": "app", "__meta_b": "0"},
				{"__address__": model.LabelValue(ip + ":9090"), "__meta_kubernetes_pod_container_name": "sidecar", "__meta_kubernetes_pod_label_app": "side", "__meta_b": "1"},
			},
		})
	}
	return gs
}

// TestPipelineMetaPruningMatchesPrometheus: with the __meta_* labels no rule
// reads left out, the pipeline keeps, drops and identifies every target as
// Prometheus's scrape package does with all of them, and the workers get
// the labels unpruned.
func TestPipelineMetaPruningMatchesPrometheus(t *testing.T) {
	p := newPipeline(t, nil, PipelineOptions{}, pruneYAML)
	groups := podGroups(120)
	for _, job := range []string{"pods", "equal", "plain"} {
		t.Run(job, func(t *testing.T) {
			sc := p.ScrapeConfig(job)
			got, errs := p.Targets(job, groups)
			want, failed := prometheusTargets(t, job, sc, groups)
			require.Len(t, errs, failed)
			require.NotEmpty(t, want)
			require.Len(t, got, len(want))
			require.Equal(t, want, relabelOwned(t, sc, got))
			for _, tt := range got {
				require.Equal(t, "NS", tt.Labels.Get("__meta_kubernetes_namespace"), "workers get every discovered label")
				require.NotEmpty(t, tt.Labels.Get("__meta_kubernetes_pod_uid"))
			}
		})
	}
}

func TestMetaFilter(t *testing.T) {
	p := newPipeline(t, nil, PipelineOptions{}, pruneYAML)
	pods := p.jobs["pods"].filter
	require.True(t, pods.on)
	for n, keep := range map[model.LabelName]bool{
		"__address__":                          true, // not a meta label
		"b":                                    true,
		"__meta_kubernetes_pod_name":           true, // source_labels
		"__meta_kubernetes_pod_ip_copy":        true, // keepequal's target_label
		"__meta_kubernetes_pod_label_app":      true, // labelmap
		"__meta_kubernetes_pod_label_x":        true,
		"__meta_kubernetes_pod_uid":            false,
		"__meta_kubernetes_pod_container_name": false,
	} {
		for range 2 { // computed, then cached
			require.Equal(t, keep, pods.keeps(n), "%s", n)
		}
	}
	var scratch model.LabelSet
	ls := model.LabelSet{"__address__": "a:1", "__meta_kubernetes_pod_uid": "u", "__meta_kubernetes_pod_name": "p"}
	require.Equal(t, model.LabelSet{"__address__": "a:1", "__meta_kubernetes_pod_name": "p"}, pods.prune(ls, &scratch))
	require.Len(t, ls, 3, "the input is not modified")
	kept := model.LabelSet{"__address__": "a:1"}
	require.Equal(t, kept, pods.prune(kept, &scratch))

	plain := p.jobs["plain"].filter
	require.False(t, plain.keeps("__meta_kubernetes_pod_name"))
	require.Equal(t, model.LabelSet{"__address__": "a:1"}, plain.prune(ls, &scratch))

	// An action the filter does not know turns it off.
	off := newMetaFilter([]*promrelabel.Config{{Action: "somefuture"}})
	require.False(t, off.on)
	require.Equal(t, ls, off.prune(ls, &scratch))
}
