package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/synth"
	"github.com/shardscrape/shardscrape/internal/testenv"
)

const (
	interval = time.Second
	cluster  = "e2e-1"
)

// fleet is one coordinator and its workers, all real processes.
type fleet struct {
	t           *testing.T
	dir         string
	coordinator *testenv.Process
	grpcAddr    string
	webAddr     string
	workers     map[string]*testenv.Process
}

// serveTargets starts n synthetic node_exporter targets on loopback, each on
// its own port, and returns their addresses.
func serveTargets(t *testing.T, n, series int) []string {
	t.Helper()
	var addrs []string
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := &http.Server{Handler: synth.New(synth.Options{Series: series, Seed: uint64(i)}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

func startFleet(t *testing.T, vm *testenv.VictoriaMetrics, targets []string) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir(), workers: map[string]*testenv.Process{}}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n", interval, interval)
	fmt.Fprintf(&cfg, "scrape_configs:\n- job_name: node\n  static_configs:\n  - targets: ['%s']\n", strings.Join(targets, "', '"))
	fmt.Fprintf(&cfg, "remote_write:\n- url: %s\n  queue_config:\n    batch_send_deadline: 200ms\n", vm.WriteURL())
	cfgFile := filepath.Join(f.dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg.String()), 0o644))

	var err error
	f.grpcAddr, err = testenv.FreeAddr()
	require.NoError(t, err)
	f.webAddr, err = testenv.FreeAddr()
	require.NoError(t, err)
	f.coordinator = testenv.NewProcess(t, filepath.Join(binDir, "coordinator"),
		"--config.file="+cfgFile, "--web.listen-address="+f.webAddr, "--grpc.listen-address="+f.grpcAddr,
		"--storage.path="+filepath.Join(f.dir, "coordinator"), "--cluster.name="+cluster,
		"--lease.ttl=3s", "--discovery.update-interval=200ms")
	require.NoError(t, f.coordinator.Start())
	waitOK(t, "http://"+f.webAddr+"/-/ready")
	return f
}

func (f *fleet) startWorker(id string) {
	f.t.Helper()
	web, err := testenv.FreeAddr()
	require.NoError(f.t, err)
	p := testenv.NewProcess(f.t, filepath.Join(binDir, "scraper"),
		"--coordinator.address="+f.grpcAddr, "--worker.id="+id, "--web.listen-address="+web,
		"--web.external-address="+web, "--storage.path="+filepath.Join(f.dir, id),
		"--shutdown.handoff-timeout=30s", "--storage.remote.flush-deadline=30s")
	require.NoError(f.t, p.Start())
	f.workers[id] = p
	waitOK(f.t, "http://"+web+"/-/ready")
}

func waitOK(t *testing.T, url string) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 2*time.Minute, 100*time.Millisecond, "%s never answered 200", url)
}

// upSeries returns the up series VictoriaMetrics holds, with their samples.
func upSeries(t *testing.T, vm *testenv.VictoriaMetrics, since time.Time) []testenv.Series {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, vm.ForceFlush(ctx))
	series, err := vm.Export(ctx, `up{job="node"}`, since, time.Now().Add(time.Minute))
	require.NoError(t, err)
	return series
}

// TestWorkersWithRealCoordinator: a coordinator splits 40 static targets
// over two scraper workers; every target arrives exactly once, with the
// cluster label and nothing naming a worker. Then one worker is stopped
// with SIGTERM: it drains to the other (make before break), exits 0, and
// no target misses an interval.
func TestWorkersWithRealCoordinator(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real binaries")
	}
	const n = 40
	vm := testenv.StartVictoriaMetrics(t)
	targets := serveTargets(t, n, 50)
	begin := time.Now()
	f := startFleet(t, vm, targets)
	f.startWorker("scraper-0")
	f.startWorker("scraper-1")

	// Steady state: every target up, once, under the cluster label only.
	require.Eventually(t, func() bool {
		series := upSeries(t, vm, begin)
		if len(series) != n {
			return false
		}
		for _, s := range series {
			if len(s.Timestamps) < 3 {
				return false
			}
		}
		return true
	}, 2*time.Minute, 500*time.Millisecond, "every target's up series in VictoriaMetrics")
	for _, s := range upSeries(t, vm, begin) {
		names := []string{}
		s.Labels.Range(func(l labels.Label) { names = append(names, l.Name) })
		require.Equal(t, []string{"__name__", "cluster_name", "instance", "job"}, names, "labels of %s", s.Labels)
		require.Equal(t, cluster, s.Labels.Get("cluster_name"))
		require.True(t, slices.Contains(targets, s.Labels.Get("instance")), s.Labels.String())
	}
	// Both workers scrape: the coordinator split the targets.
	for id := range f.workers {
		require.Eventually(t, func() bool { return workerTargets(t, f, id) > 0 }, time.Minute, 200*time.Millisecond, id)
	}

	// SIGTERM drains scraper-1 onto scraper-0 and exits 0.
	handoffStart := time.Now()
	require.NoError(t, f.workers["scraper-1"].Signal(syscall.SIGTERM))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, f.workers["scraper-1"].Wait(ctx), "scraper-1 exits 0 after draining")
	stopped := time.Now()
	// A few more intervals on scraper-0 alone.
	require.Eventually(t, func() bool {
		for _, s := range upSeries(t, vm, begin) {
			if last := s.Timestamps[len(s.Timestamps)-1]; time.UnixMilli(last).Before(stopped.Add(3 * interval)) {
				return false
			}
		}
		return true
	}, time.Minute, 500*time.Millisecond, "every target scraped after scraper-1 left")

	// No interval without a sample around the handoff: each target's
	// samples from before the SIGTERM to now leave no gap of two intervals.
	for _, s := range upSeries(t, vm, handoffStart.Add(-5*interval)) {
		for i := 1; i < len(s.Timestamps); i++ {
			gap := time.Duration(s.Timestamps[i]-s.Timestamps[i-1]) * time.Millisecond
			require.Less(t, gap, 2*interval, "%s: no sample for %s after %s", s.Labels, gap, time.UnixMilli(s.Timestamps[i-1]))
		}
		for i, v := range s.Values {
			require.Equal(t, 1.0, v, "%s up at %d", s.Labels, s.Timestamps[i])
		}
	}
}

// workerTargets counts the targets a worker reports on its /api/v1/targets.
func workerTargets(t *testing.T, f *fleet, id string) int {
	t.Helper()
	args := f.workers[id].Args()
	var web string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--web.listen-address="); ok {
			web = v
		}
	}
	resp, err := http.Get("http://" + web + "/api/v1/targets")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				ScrapePool string `json:"scrapePool"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := decodeJSON(resp, &body); err != nil {
		return 0
	}
	return len(body.Data.ActiveTargets)
}
