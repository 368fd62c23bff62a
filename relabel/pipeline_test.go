package relabel

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/targetid"
)

const pipelineYAML = `
global:
  scrape_interval: 15s
scrape_configs:
- job_name: app
  relabel_configs:
  - source_labels: [__meta_consul_tags]
    regex: .*,metrics,.*
    action: keep
  - source_labels: [__meta_consul_service]
    target_label: service
  - source_labels: [__meta_pod_name]
    target_label: kubernetes_pod
  - source_labels: [__meta_consul_service_metadata_path]
    regex: (.+)
    target_label: __metrics_path__
  - source_labels: [__address__, __meta_consul_service_metadata_port]
    regex: ([^:]+)(?::\d+)?;(\d+)
    replacement: $1:$2
    target_label: __address__
  - source_labels: [__meta_consul_service_metadata_bad]
    regex: (.+)
    target_label: __address__
- job_name: probe
  metrics_path: /probe
  params:
    module: [http_2xx]
  relabel_configs:
  - source_labels: [__address__]
    target_label: __param_target
  - target_label: __address__
    replacement: blackbox:9115
  - source_labels: [__param_target]
    target_label: instance
`

func loadConfig(t testing.TB, s string) *config.Config {
	t.Helper()
	cfg, err := config.Load(s, nil)
	require.NoError(t, err)
	return cfg
}

// consulGroup builds a group as Prometheus's consul SD would.
func consulGroup(service string, n int, ipOf func(i int) string) *targetgroup.Group {
	tg := &targetgroup.Group{Source: service, Labels: model.LabelSet{"__meta_consul_service": model.LabelValue(service), "__meta_consul_dc": "dc1"}}
	for i := range n {
		tags := ",metrics,"
		if i%4 == 3 {
			tags = ",other,"
		}
		t := model.LabelSet{
			"__address__":                model.LabelValue(ipOf(i) + ":8080"),
			"__meta_consul_node":         model.LabelValue("node-" + strconv.Itoa(i%50)),
			"__meta_consul_tags":         model.LabelValue(tags),
			"__meta_consul_service_id":   model.LabelValue(fmt.Sprintf("%s-%d", service, i)),
			"__meta_consul_health":       "passing",
			"__meta_consul_service_port": "8080",
		}
		switch i % 7 {
		case 1:
			t["__meta_consul_service_metadata_path"] = "/custom"
		case 2:
			t["__meta_consul_service_metadata_port"] = "9100"
		case 5:
			t["__meta_consul_service_metadata_bad"] = "no/such address" // relabeling error
		}
		tg.Targets = append(tg.Targets, t)
	}
	return tg
}

func ipOf(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

func newPipeline(t testing.TB, reg prometheus.Registerer, opts PipelineOptions, cfgYAML string) *Pipeline {
	t.Helper()
	p, err := NewPipeline(opts, nil, reg)
	require.NoError(t, err)
	require.NoError(t, p.ApplyConfig(loadConfig(t, cfgYAML)))
	return p
}

// prometheusTargets is what Prometheus's scrape package itself makes of
// groups: id → final labels, plus the number of failures.
func prometheusTargets(t testing.TB, job string, sc *config.ScrapeConfig, groups []*targetgroup.Group) (map[uint64]labels.Labels, int) {
	t.Helper()
	out := map[uint64]labels.Labels{}
	failed := 0
	lb := labels.NewBuilder(labels.EmptyLabels())
	for _, tg := range groups {
		ts, failures := scrape.TargetsFromGroup(tg, sc, nil, lb)
		failed += len(failures)
		for _, st := range ts {
			if st.Labels(labels.NewBuilder(labels.EmptyLabels())).IsEmpty() {
				continue // dropped
			}
			out[targetid.Of(job, st)] = st.Labels(labels.NewBuilder(labels.EmptyLabels()))
		}
	}
	return out, failed
}

// relabelOwned relabels what the pipeline hands a worker, as the worker
// does: Prometheus's scrape package on Target.Labels.
func relabelOwned(t testing.TB, sc *config.ScrapeConfig, ts []Target) map[uint64]labels.Labels {
	t.Helper()
	out := map[uint64]labels.Labels{}
	for _, tt := range ts {
		ls := model.LabelSet{}
		tt.Labels.Range(func(l labels.Label) { ls[model.LabelName(l.Name)] = model.LabelValue(l.Value) })
		got, failures := scrape.TargetsFromGroup(&targetgroup.Group{Targets: []model.LabelSet{ls}}, sc, nil, labels.NewBuilder(labels.EmptyLabels()))
		require.Empty(t, failures)
		require.Len(t, got, 1)
		require.Equal(t, tt.ID, targetid.Of(tt.Job, got[0]), "the worker computes the id the coordinator did")
		out[tt.ID] = got[0].Labels(labels.NewBuilder(labels.EmptyLabels()))
	}
	return out
}

func TestPipelineMatchesPrometheus(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newPipeline(t, reg, PipelineOptions{Parallelism: 3}, pipelineYAML)
	groups := []*targetgroup.Group{consulGroup("web", 500, ipOf), consulGroup("db", 300, func(i int) string { return ipOf(i + 1000) }), {Source: "empty"}}

	for _, job := range []string{"app", "probe"} {
		t.Run(job, func(t *testing.T) {
			sc := p.ScrapeConfig(job)
			got, errs := p.Targets(job, groups)
			want, failed := prometheusTargets(t, job, sc, groups)
			require.Len(t, errs, failed)
			require.Len(t, got, len(want))
			require.Equal(t, want, relabelOwned(t, sc, got))
			for _, tt := range got {
				require.Equal(t, tt.ID, tt.Key)
				require.Equal(t, job, tt.Job)
				require.Equal(t, tt.Labels.Get("__address__"), tt.Address)
			}
		})
	}
	// app: 800 discovered, a quarter without the tag, every 7th-of-5 fails.
	require.Equal(t, 800.0, testutil.ToFloat64(p.metrics.targets.WithLabelValues("app", "discovered")))
	dropped := testutil.ToFloat64(p.metrics.targets.WithLabelValues("app", "dropped"))
	kept := testutil.ToFloat64(p.metrics.targets.WithLabelValues("app", "kept"))
	failed := testutil.ToFloat64(p.metrics.targets.WithLabelValues("app", "failed"))
	require.Equal(t, 800.0, dropped+kept+failed)
	require.Equal(t, 200.0, dropped)
	require.Positive(t, failed)
	require.Equal(t, failed, testutil.ToFloat64(p.metrics.errors.WithLabelValues("app")))

	// Unknown jobs are an error.
	_, errs := p.Targets("nope", groups)
	require.ErrorIs(t, errs[0], ErrUnknownJob)
}

func TestPipelineCacheAndDuplicates(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newPipeline(t, reg, PipelineOptions{}, pipelineYAML)
	web := consulGroup("web", 40, ipOf)
	first, _ := p.Targets("app", []*targetgroup.Group{web})
	require.Equal(t, 1.0, testutil.ToFloat64(p.metrics.groupsCache.WithLabelValues("miss")))

	// Same content again: a cache hit, same result.
	again, _ := p.Targets("app", []*targetgroup.Group{consulGroup("web", 40, ipOf)})
	require.Equal(t, 1.0, testutil.ToFloat64(p.metrics.groupsCache.WithLabelValues("hit")))
	require.Equal(t, first, again)

	// Changed content: recomputed.
	changed := consulGroup("web", 40, ipOf)
	changed.Targets[0]["__meta_consul_health"] = "critical"
	_, _ = p.Targets("app", []*targetgroup.Group{changed})
	require.Equal(t, 2.0, testutil.ToFloat64(p.metrics.groupsCache.WithLabelValues("miss")))

	// The same targets from a second source are duplicates: one kept each.
	dup := consulGroup("web", 40, ipOf)
	dup.Source = "web-again"
	both, _ := p.Targets("app", []*targetgroup.Group{web, dup})
	require.Len(t, both, len(first))
	require.Equal(t, float64(len(first)), testutil.ToFloat64(p.metrics.targets.WithLabelValues("app", "duplicate")))
	// Whatever the order, the same one is kept.
	rev, _ := p.Targets("app", []*targetgroup.Group{dup, web})
	require.ElementsMatch(t, both, rev)

	// The same config reloaded keeps the cache; a changed one drops it.
	require.NoError(t, p.ApplyConfig(loadConfig(t, pipelineYAML)))
	_, _ = p.Targets("app", []*targetgroup.Group{web})
	require.Equal(t, 4.0, testutil.ToFloat64(p.metrics.groupsCache.WithLabelValues("miss")))
	require.NoError(t, p.ApplyConfig(loadConfig(t, strings.Replace(pipelineYAML, "15s", "20s", 1))))
	_, _ = p.Targets("app", []*targetgroup.Group{web})
	require.Equal(t, 5.0, testutil.ToFloat64(p.metrics.groupsCache.WithLabelValues("miss")))
}

func TestPipelineOwnershipKeyAddress(t *testing.T) {
	_, err := NewPipeline(PipelineOptions{OwnershipKey: "bogus"}, nil, nil)
	require.Error(t, err)
	_, err = NewPipeline(PipelineOptions{TargetLabels: &TargetLabels{Pod: "__pod"}}, nil, nil)
	require.Error(t, err)

	p := newPipeline(t, nil, PipelineOptions{OwnershipKey: OwnershipKeyAddress}, pipelineYAML)
	groups := []*targetgroup.Group{consulGroup("web", 10, ipOf)}
	app, _ := p.Targets("app", groups)
	probe, _ := p.Targets("probe", groups)
	byAddr := map[string]uint64{}
	for _, tt := range probe {
		byAddr[tt.Address] = tt.Key
		require.NotEqual(t, tt.ID, tt.Key)
	}
	for _, tt := range app {
		require.Equal(t, byAddr[tt.Address], tt.Key, "one address, one key across jobs")
	}
}

// staticPods is a PodLookup for unit tests.
type staticPods map[string]*Pod

func (s staticPods) Lookup(ip string) *Pod { return s[ip] }

func TestEnrich(t *testing.T) {
	pod := newPod(podAt("shop", "web-0", "n1", "10.1.0.1", map[string]string{"app": "web"}), "10.1.0.1")
	p := newPipeline(t, nil, PipelineOptions{Pods: staticPods{"10.1.0.1": pod}}, `
scrape_configs:
- job_name: app
`)
	tg := &targetgroup.Group{Source: "s", Labels: model.LabelSet{"node": "from-group"}, Targets: []model.LabelSet{
		{"__address__": "10.1.0.1:8080", "pod": "mine"},
		{"__address__": "10.1.0.2:8080"},
	}}
	ts, errs := p.Targets("app", []*targetgroup.Group{tg})
	require.Empty(t, errs)
	require.Len(t, ts, 2)
	require.Equal(t, labels.FromStrings(
		"__address__", "10.1.0.1:8080",
		"__meta_pod_ip", "10.1.0.1", "__meta_pod_label_app", "web", "__meta_pod_labelpresent_app", "true",
		"__meta_pod_name", "web-0", "__meta_pod_namespace", "shop", "__meta_pod_node", "n1",
		"namespace", "shop", "node", "from-group", "pod", "mine", "pod_ip", "10.1.0.1",
	), ts[0].Labels, "existing labels are never overwritten")
	require.Equal(t, labels.FromStrings("__address__", "10.1.0.2:8080", "node", "from-group"), ts[1].Labels)

	// Target labels off: only __meta_pod_*.
	p = newPipeline(t, nil, PipelineOptions{Pods: staticPods{"10.1.0.1": pod}, TargetLabels: &TargetLabels{}}, "scrape_configs:\n- job_name: app\n")
	ts, _ = p.Targets("app", []*targetgroup.Group{tg})
	require.Equal(t, "", ts[0].Labels.Get("namespace"))
	require.Equal(t, "web-0", ts[0].Labels.Get(MetaPodName))

	require.Equal(t, "10.1.0.1", addressHost("10.1.0.1:80"))
	require.Equal(t, "10.1.0.1", addressHost("10.1.0.1"))
	require.Equal(t, "fd00::1", addressHost("[fd00::1]:80"))
	require.Equal(t, "fd00::1", addressHost("[fd00::1]"))
}

func TestClusterOptions(t *testing.T) {
	ext := labels.FromStrings("region", "eu", "cluster_name", "from-config")
	got, err := ClusterOptions{Name: "prod-1"}.ExternalLabels(ext)
	require.NoError(t, err)
	require.Equal(t, labels.FromStrings("region", "eu", "cluster_name", "prod-1"), got)

	got, err = ClusterOptions{Label: "cluster"}.ExternalLabels(ext)
	require.NoError(t, err)
	require.Equal(t, ext, got, "no name: off")

	got, err = ClusterOptions{Label: "cluster", Name: "c"}.ExternalLabels(labels.EmptyLabels())
	require.NoError(t, err)
	require.Equal(t, labels.FromStrings("cluster", "c"), got)

	for _, bad := range []string{"__cluster", "1abc", "a-b"} {
		_, err := ClusterOptions{Label: bad, Name: "x"}.ExternalLabels(ext)
		require.Error(t, err, bad)
	}
}

func TestPipelineSameSourceTwiceAndConcurrency(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newPipeline(t, reg, PipelineOptions{Parallelism: 2}, pipelineYAML)
	// One service name from two Consul datacenters: two groups, one source.
	a := consulGroup("web", 30, ipOf)
	b := consulGroup("web", 30, func(i int) string { return ipOf(i + 500) })
	groups := []*targetgroup.Group{a, b}
	first, _ := p.Targets("app", groups)
	second, _ := p.Targets("app", groups)
	require.Equal(t, first, second)
	require.Equal(t, 2.0, testutil.ToFloat64(p.metrics.groupsCache.WithLabelValues("hit")), "both cached despite one source")
	want, _ := prometheusTargets(t, "app", p.ScrapeConfig("app"), groups)
	require.Len(t, first, len(want))

	// Jobs run concurrently (the race detector checks the rest).
	var wg sync.WaitGroup
	for range 4 {
		for _, job := range []string{"app", "probe"} {
			wg.Go(func() {
				ts, _ := p.Targets(job, groups)
				require.NotEmpty(t, ts)
			})
		}
	}
	wg.Go(func() { require.NoError(t, p.ApplyConfig(loadConfig(t, pipelineYAML))) })
	wg.Wait()
}
