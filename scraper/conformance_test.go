package scraper

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/synth"
	"github.com/shardscrape/shardscrape/internal/testenv"
	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// TestSameSeriesAsPrometheus is invariant 1 against real components: one
// static config scraped by the worker (standalone) and by a real
// Prometheus in agent mode, both remote-writing into one real
// VictoriaMetrics under different cluster labels. The series sets, minus
// the cluster label, are equal, and gauge values match.
func TestSameSeriesAsPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts VictoriaMetrics and Prometheus")
	}
	vm := testenv.StartVictoriaMetrics(t)

	var addrs []string
	for i := range 3 {
		addrs = append(addrs, target(t, func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "# TYPE conf_gauge gauge\nconf_gauge{kind=\"a\"} %d\nconf_gauge{kind=\"b\"} %d.5\n", i+1, i*10)
			fmt.Fprintf(w, "# TYPE conf_requests_total counter\nconf_requests_total{code=\"200\"} 100\nconf_requests_total{code=\"500\"} 3\n")
			fmt.Fprintf(w, "# TYPE conf_latency_seconds histogram\nconf_latency_seconds_bucket{le=\"0.1\"} 1\nconf_latency_seconds_bucket{le=\"+Inf\"} 2\nconf_latency_seconds_sum 0.3\nconf_latency_seconds_count 2\n")
		}))
	}
	config := func(cluster string) string {
		return fmt.Sprintf(`
global:
  scrape_interval: 1s
  scrape_timeout: 500ms
  external_labels:
    cluster: %s
scrape_configs:
- job_name: conf
  static_configs:
  - targets: ['%s']
    labels: {env: test}
  - targets: ['%s']
  metric_relabel_configs:
  - source_labels: [kind]
    regex: b
    target_label: relabeled
    replacement: "yes"
- job_name: conf-second
  metrics_path: /metrics
  params: {x: ['1']}
  static_configs:
  - targets: ['%s']
remote_write:
- url: %s
  queue_config: {batch_send_deadline: 1s}
`, cluster, addrs[0], addrs[1], addrs[2], vm.WriteURL())
	}

	testenv.StartPrometheus(t, testenv.PrometheusOptions{Agent: true, Config: config("prom")})

	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(config("worker")), 0o644))
	opts := standaloneOpts(filepath.Join(dir, "data"), cfgFile)
	r := start(t, opts)

	ctx := context.Background()
	// key → value, per cluster, of the newest sample of each series.
	read := func(cluster string) map[string]float64 {
		ss, err := vm.Export(ctx, fmt.Sprintf(`{cluster=%q}`, cluster), time.Time{}, time.Time{})
		require.NoError(t, err)
		out := map[string]float64{}
		for _, s := range ss {
			key := labels.NewBuilder(s.Labels).Del("cluster").Labels().String()
			out[key] = s.Values[len(s.Values)-1]
		}
		return out
	}
	var worker, prom map[string]float64
	require.Eventually(t, func() bool {
		worker, prom = read("worker"), read("prom")
		// Every target's report series and exposition have arrived from both.
		return len(worker) > 0 && len(worker) == len(prom) && countPrefix(worker, `{__name__="up"`) == 3 &&
			countPrefix(prom, `{__name__="up"`) == 3 && countPrefix(worker, `{__name__="conf_gauge"`) == 6
	}, 90*time.Second, 500*time.Millisecond)

	require.Equal(t, keys(prom), keys(worker), "series sets differ")
	for k, v := range prom {
		if strings.HasPrefix(k, `{__name__="conf_gauge"`) || strings.HasPrefix(k, `{__name__="up"`) {
			require.Equal(t, v, worker[k], k)
		}
	}
	for k := range worker {
		require.NotContains(t, k, "worker-0")
	}
	t.Logf("%d series from each", len(worker))
	r.stop(t)
}

func countPrefix(m map[string]float64, p string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, p) {
			n++
		}
	}
	return n
}

func keys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestShutdownFlushesToVictoriaMetrics: in coordinator mode, with
// remote_write and the cluster label from the coordinator, every sample
// the worker appended has reached VictoriaMetrics once Run returned after
// a drained Leave, under the coordinator's cluster label and with no
// worker identity.
func TestShutdownFlushesToVictoriaMetrics(t *testing.T) {
	testDelivery(t, false)
}

// TestReceiverOutage: VictoriaMetrics stops for two minutes while the
// worker scrapes ten targets (2,000 series) five times a second, then comes
// back; every sample scraped meanwhile arrives (the agent WAL is the
// buffer), counted per series.
func TestReceiverOutage(t *testing.T) {
	testDelivery(t, true)
}

func testDelivery(t *testing.T, outage bool) {
	if testing.Short() {
		t.Skip("starts VictoriaMetrics")
	}
	vm := testenv.StartVictoriaMetrics(t)
	a, b := target(t, nil), target(t, nil)
	upserts := []*pb.Target{pbTarget("j", a, active), pbTarget("j", b, active)}
	f := &fakeCoordinator{leaveResp: &pb.LeaveResponse{Drained: true}}
	client, _, _ := serve(t, f)
	opts := workerOpts(t.TempDir(), client)
	if outage {
		// Load: node_exporter-like targets whose backlog builds up in the
		// WAL during the outage; the stop waits for it to be delivered.
		for i := range 8 {
			upserts = append(upserts, pbTarget("j", target(t, synth.New(synth.Options{Series: 250, Seed: uint64(i)}).ServeHTTP), active))
		}
		opts.FlushDeadline = 2 * time.Minute
	}
	r := start(t, opts)
	g := &pb.GlobalConfig{
		Hash:           "g-vm",
		Yaml:           fmt.Appendf(nil, "global:\n  scrape_interval: 1m\nremote_write:\n- url: %s\n  queue_config: {batch_send_deadline: 5s}\n", vm.WriteURL()),
		ExternalLabels: []*pb.Label{{Name: "cluster", Value: "fleet-1"}},
	}
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 1, Snapshot: true, Global: g,
		Configs: []*pb.ScrapeConfig{scrapeConfig("j")},
		Upserts: upserts})
	require.Eventually(t, func() bool { return r.rec.sampleCount(a) > 50 && r.rec.sampleCount(b) > 50 }, 20*time.Second, 20*time.Millisecond)
	if outage {
		require.NoError(t, vm.Stop())
		n := r.rec.sampleCount(a)
		// Two minutes of scrapes (600 at 200 ms, 7 samples each) into a closed port.
		require.Eventually(t, func() bool { return r.rec.sampleCount(a) > n+600*7 }, 5*time.Minute, 100*time.Millisecond)
		require.Positive(t, metricSum(t, r.reg, "prometheus_remote_storage_samples_failed_total")+
			metricSum(t, r.reg, "prometheus_remote_storage_samples_retried_total"))
		require.NoError(t, vm.Start())
		n = r.rec.sampleCount(a)
		require.Eventually(t, func() bool { return r.rec.sampleCount(a) > n+20 }, 60*time.Second, 50*time.Millisecond)
	}
	r.stop(t)

	want := r.rec.seriesCounts()
	ss, err := vm.Export(context.Background(), `{job="j"}`, time.Time{}, time.Time{})
	require.NoError(t, err)
	got := map[string]int{}
	for _, s := range ss {
		require.Equal(t, "fleet-1", s.Labels.Get("cluster"), s.Labels.String())
		require.False(t, s.Labels.Has("worker") || s.Labels.Has("worker_id"))
		// Distinct timestamps: a batch the receiver wrote but whose answer
		// the outage cut off is sent again (at least once), and
		// VictoriaMetrics keeps both copies; what must hold is that every
		// scraped sample arrived and nothing else did.
		got[labels.NewBuilder(s.Labels).Del("cluster").Labels().String()] = len(slices.Compact(slices.Clone(s.Timestamps)))
	}
	require.Equal(t, want, got, "samples per series: appended vs received")
}
