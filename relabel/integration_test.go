package relabel

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	_ "github.com/prometheus/prometheus/discovery/consul" // consul_sd_configs
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/fake"
	"github.com/shardscrape/shardscrape/internal/fake/consul"
	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
)

// discovered runs Prometheus's discovery.Manager on cfg's scrape configs and
// returns a func giving the latest groups per job.
func discovered(t *testing.T, cfg *config.Config) func() map[string][]*targetgroup.Group {
	t.Helper()
	reg := prometheus.NewRegistry()
	sdMetrics, err := discovery.CreateAndRegisterSDMetrics(reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	m := discovery.NewManager(ctx, nil, reg, sdMetrics, discovery.Updatert(20*time.Millisecond))
	require.NotNil(t, m)
	scs, err := cfg.GetScrapeConfigs()
	require.NoError(t, err)
	c := map[string]discovery.Configs{}
	for _, sc := range scs {
		c[sc.JobName] = sc.ServiceDiscoveryConfigs
	}
	require.NoError(t, m.ApplyConfig(c))
	var (
		mu     sync.Mutex
		latest = map[string][]*targetgroup.Group{}
		wg     sync.WaitGroup
	)
	wg.Go(func() { _ = m.Run() })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case tgs := <-m.SyncCh():
				mu.Lock()
				maps.Copy(latest, tgs)
				mu.Unlock()
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return func() map[string][]*targetgroup.Group {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(latest)
	}
}

func countTargets(groups []*targetgroup.Group) int {
	n := 0
	for _, g := range groups {
		n += len(g.Targets)
	}
	return n
}

// TestConsulTargetAtPodIP: a target registered in Consul by pod IP gets the
// pod's labels, and a new pod reusing the IP changes them.
func TestConsulTargetAtPodIP(t *testing.T) {
	kube, kubeURL := kube(t)
	first := podAt("shop", "exporter-a", "n1", "10.1.0.7", map[string]string{"app": "exporter", "rev": "a"})
	require.NoError(t, kube.Apply(first))

	cat := consul.New("dc1")
	cat.SetNode(consul.Node{Name: "n1", Address: "10.0.0.1"})
	require.NoError(t, cat.SetService(consul.Service{Node: "n1", ID: "exp-1", Name: "exporter", Address: "10.1.0.7", Port: 9100, Tags: []string{"metrics"}}))
	require.NoError(t, cat.SetService(consul.Service{Node: "n1", ID: "exp-2", Name: "exporter", Address: "10.2.0.1", Port: 9100, Tags: []string{"metrics"}}))
	csrv, err := fake.Serve(cat)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, csrv.Close()) })

	cfg := loadConfig(t, `
scrape_configs:
- job_name: consul-apps
  consul_sd_configs:
  - server: `+csrv.Addr+`
    refresh_interval: 50ms
  relabel_configs:
  - source_labels: [__meta_consul_tags]
    regex: .*,metrics,.*
    action: keep
  - source_labels: [__meta_pod_label_rev]
    target_label: rev
`)
	latest := discovered(t, cfg)
	require.Eventually(t, func() bool { return countTargets(latest()["consul-apps"]) == 2 }, wait, 10*time.Millisecond)

	reg := prometheus.NewRegistry()
	x := runIndex(t, kubeURL, reg, PodIndexOptions{})
	p, err := NewPipeline(PipelineOptions{Pods: x}, nil, reg)
	require.NoError(t, err)
	require.NoError(t, p.ApplyConfig(cfg))

	byAddr := func() map[string]Target {
		ts, errs := p.Targets("consul-apps", latest()["consul-apps"])
		require.Empty(t, errs)
		out := map[string]Target{}
		for _, tt := range ts {
			out[tt.Address] = tt
		}
		return out
	}
	ts := byAddr()
	require.Len(t, ts, 2)
	at := ts["10.1.0.7:9100"]
	require.Equal(t, "exporter-a", at.Labels.Get("pod"))
	require.Equal(t, "shop", at.Labels.Get("namespace"))
	require.Equal(t, "n1", at.Labels.Get("node"))
	require.Equal(t, "10.1.0.7", at.Labels.Get("pod_ip"))
	require.Equal(t, "exporter-a", at.Labels.Get(MetaPodName))
	require.Equal(t, "a", at.Labels.Get("__meta_pod_label_rev"))
	require.Equal(t, "exporter", at.Labels.Get("__meta_consul_service"))
	// Nothing changed: the cached groups are reused without a lookup.
	lookups := testutil.ToFloat64(x.metrics.hit) + testutil.ToFloat64(x.metrics.miss)
	require.Equal(t, ts, byAddr())
	require.Equal(t, lookups, testutil.ToFloat64(x.metrics.hit)+testutil.ToFloat64(x.metrics.miss))
	other := ts["10.2.0.1:9100"]
	require.Equal(t, "", other.Labels.Get("pod"), "not a pod IP: no pod labels")
	idA := at.ID

	// The pod is replaced; its successor on another node gets the IP.
	second := podAt("shop", "exporter-b", "n2", "10.1.0.7", map[string]string{"app": "exporter", "rev": "b"})
	require.NoError(t, kube.Delete(first))
	require.NoError(t, kube.Apply(second))
	require.Eventually(t, func() bool {
		select {
		case <-x.Changed():
		default:
		}
		return byAddr()["10.1.0.7:9100"].Labels.Get("pod") == "exporter-b"
	}, wait, 10*time.Millisecond)
	at = byAddr()["10.1.0.7:9100"]
	require.Equal(t, "n2", at.Labels.Get("node"))
	require.Equal(t, "b", at.Labels.Get("__meta_pod_label_rev"))
	require.NotEqual(t, idA, at.ID, "the relabeled rev label is part of the identity")
}

// TestSeedConfig: the source document's config, unchanged but for the API
// server URL and its credential file paths, discovers its seven jobs'
// targets from the Kubernetes fake, and the pipeline relabels them as
// Prometheus does; with the pod index, pod targets get exactly the pod
// labels on top.
func TestSeedConfig(t *testing.T) {
	kube, kubeURL := kube(t)
	require.NoError(t, kube.Apply(kubeapi.SeedCluster()...))

	raw, err := os.ReadFile(filepath.Join("testdata", "prometheus-seed.yml"))
	require.NoError(t, err)
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "token"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("placeholder\n"), 0o600))
	}
	seed := strings.ReplaceAll(string(raw), "/var/run/secrets/kubernetes.io/serviceaccount/", dir+"/")
	seed = strings.ReplaceAll(seed, "  - role: ", "  - api_server: "+kubeURL+"\n    role: ")
	cfg, err := config.Load(seed, nil)
	require.NoError(t, err)
	scs, err := cfg.GetScrapeConfigs()
	require.NoError(t, err)
	require.Len(t, scs, 7)

	// Targets each job must discover (before relabeling) and keep.
	// Endpoints: default/kubernetes has one; web and quiet have 3 pods ×
	// (the service port + the pods' other container port). Pods: 3 × 2
	// container ports. Relabeling rewrites both ports of a pod to
	// prometheus.io/port, so they collapse into one target, as in
	// Prometheus's scrape pool.
	want := map[string][2]int{
		"kubernetes-apiservers":        {13, 1},
		"kubernetes-nodes":             {2, 2},
		"kubernetes-cadvisor":          {2, 2},
		"kubernetes-service-endpoints": {13, 3},
		"kubernetes-services":          {3, 1},
		"kubernetes-ingresses":         {1, 1},
		"kubernetes-pods":              {6, 2},
	}
	latest := discovered(t, cfg)
	require.Eventually(t, func() bool {
		l := latest()
		for job, w := range want {
			if countTargets(l[job]) != w[0] {
				return false
			}
		}
		return true
	}, wait, 10*time.Millisecond)
	groups := latest()

	plain := newPipeline(t, nil, PipelineOptions{}, seed)
	reg := prometheus.NewRegistry()
	x := runIndex(t, kubeURL, reg, PodIndexOptions{})
	enriched := newPipeline(t, reg, PipelineOptions{Pods: x}, seed)
	for _, sc := range scs {
		job := sc.JobName
		t.Run(job, func(t *testing.T) {
			wantProm, failed := prometheusTargets(t, job, sc, groups[job])
			require.Zero(t, failed)
			require.Len(t, wantProm, want[job][1], "targets Prometheus keeps")

			got, errs := plain.Targets(job, groups[job])
			require.Empty(t, errs)
			require.Equal(t, wantProm, relabelOwned(t, sc, got))

			// With enrichment: the same targets, plus the pod labels on
			// those at a pod IP.
			gotE, errs := enriched.Targets(job, groups[job])
			require.Empty(t, errs)
			require.Len(t, gotE, len(got))
			for _, ls := range relabelOwned(t, sc, gotE) {
				b := labels.NewBuilder(ls)
				pod := x.Lookup(addressHost(ls.Get("__address__")))
				if pod == nil {
					// Relabeling may have moved the address off the pod IP.
					for _, n := range []string{"pod", "namespace", "node", "pod_ip"} {
						b.Del(n)
					}
				} else {
					require.Equal(t, pod.Name, ls.Get("pod"))
					require.Equal(t, pod.IP, ls.Get("pod_ip"))
					b.Del("pod", "namespace", "node", "pod_ip")
				}
				stripped := b.Labels()
				found := false
				for _, w := range wantProm {
					if labels.Equal(w, stripped) {
						found = true
					}
				}
				require.True(t, found, "enriched target %s is a Prometheus target plus pod labels", ls)
			}
		})
	}
}
