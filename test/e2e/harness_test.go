package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shardscrape/shardscrape/internal/testenv"
	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// Timings of every fleet in the suite. The scrape interval is the issue's
// upper bound (1–2 s): at 2 s a scrape delayed by the shared machine's load
// stays well inside its interval slot, and the old owner of a moved target
// stops (after the new owner's ack, the stream and the worker's 1 s target
// reload throttle) before its next scrape.
const (
	interval = 2 * time.Second
	// leaseTTL is short, so that a killed worker's targets move soon, but
	// long enough that workers rejoin a restarted coordinator within its
	// startup grace (one TTL) on a loaded machine: the reconnect (≤ 1.2 s)
	// and the next heartbeat (TTL/3) take up to ~3 s.
	leaseTTL = 5 * time.Second
	// waitLong bounds every poll: a generous upper bound on a shared
	// two-core machine, never an expectation.
	waitLong = 2 * time.Minute
	pollTick = 250 * time.Millisecond

	// The pipeline's own latencies between a lease's expiry and a new
	// owner's scrape loop: coordinator.DefaultTickInterval and
	// scraper.DefaultCoordinatorReload (copied, not imported, so that
	// the suite names what it allows).
	coordinatorTick = 250 * time.Millisecond
	workerReload    = time.Second
)

// cluster is one coordinator and its scraper workers, all real processes,
// with their data in one temp dir.
type cluster struct {
	// t is the test that started the cluster: the processes' cleanups
	// belong to it, so that they outlive the step (t.Run) that started
	// them. Assertions use the t a method is given.
	t           *testing.T
	name        string // value of the cluster_name label
	dir         string
	coordinator *testenv.Process
	grpcAddr    string
	webAddr     string
	workers     map[string]*worker
	admin       shardscrapev1.AdminServiceClient
}

type worker struct {
	id  string
	web string
	p   *testenv.Process
}

// startCluster writes config (a prometheus.yml) and starts a coordinator on
// it with the cluster label name, plus extra flags; it returns once the
// coordinator is ready.
func startCluster(t *testing.T, name, config string, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, name: name, dir: t.TempDir(), workers: map[string]*worker{}}
	cfgFile := filepath.Join(c.dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(config), 0o644))
	var err error
	c.grpcAddr, err = testenv.FreeAddr()
	require.NoError(t, err)
	c.webAddr, err = testenv.FreeAddr()
	require.NoError(t, err)
	args := append([]string{
		"--config.file=" + cfgFile, "--web.listen-address=" + c.webAddr, "--grpc.listen-address=" + c.grpcAddr,
		"--storage.path=" + filepath.Join(c.dir, "coordinator"), "--cluster.name=" + name,
		"--lease.ttl=" + leaseTTL.String(), "--discovery.update-interval=200ms",
	}, extra...)
	c.coordinator = testenv.NewProcess(t, filepath.Join(binDir, "coordinator"), args...)
	require.NoError(t, c.coordinator.Start())
	waitOK(t, "http://"+c.webAddr+"/-/ready")
	cc, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	c.admin = shardscrapev1.NewAdminServiceClient(cc)
	return c
}

// startWorker starts scraper worker id and waits for its /-/ready; t is the
// calling test or step, the process belongs to the cluster's test.
func (c *cluster) startWorker(t *testing.T, id string) *worker {
	t.Helper()
	web, err := testenv.FreeAddr()
	require.NoError(t, err)
	w := &worker{id: id, web: web}
	w.p = testenv.NewProcess(c.t, filepath.Join(binDir, "scraper"),
		"--coordinator.address="+c.grpcAddr, "--worker.id="+id, "--web.listen-address="+web,
		"--web.external-address="+web, "--storage.path="+filepath.Join(c.dir, id),
		"--shutdown.handoff-timeout=60s", "--storage.remote.flush-deadline=60s")
	// Runs before the worker's own cleanup (LIFO): the coordinator stops
	// first, so that the last worker's Leave fails at once instead of
	// waiting out --shutdown.handoff-timeout for a worker to take over.
	c.t.Cleanup(func() { _ = c.coordinator.Stop() })
	require.NoError(t, w.p.Start())
	c.workers[id] = w
	waitOK(t, "http://"+web+"/-/ready")
	return w
}

// restartCoordinator starts the (stopped or killed) coordinator again with
// the same flags, ports and storage path, and waits until it is ready.
func (c *cluster) restartCoordinator(t *testing.T) {
	t.Helper()
	require.NoError(t, c.coordinator.Start())
	waitOK(t, "http://"+c.webAddr+"/-/ready")
}

func waitOK(t *testing.T, url string) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, waitLong, 100*time.Millisecond, "%s never answered 200", url)
}

// fleetTarget is one row of the coordinator's /api/v1/targets.
type fleetTarget struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Labels           map[string]string `json:"labels"`
	ScrapePool       string            `json:"scrapePool"`
	Owner            string            `json:"owner"`
	Owners           []struct {
		Worker string `json:"worker"`
		State  string `json:"state"`
	} `json:"owners"`
}

// key names a target the way shardctl does: job/address.
func (ft fleetTarget) key() string { return ft.ScrapePool + "/" + ft.DiscoveredLabels["__address__"] }

// settled reports whether the target has exactly one owner, active.
func (ft fleetTarget) settled() bool {
	return len(ft.Owners) == 1 && ft.Owners[0].State == "active" && ft.Owner == ft.Owners[0].Worker
}

// targets fetches the coordinator's /api/v1/targets (nil when it does not
// answer).
func (c *cluster) targets() []fleetTarget {
	resp, err := http.Get("http://" + c.webAddr + "/api/v1/targets")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var body struct {
		Data struct {
			ActiveTargets []fleetTarget `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil
	}
	return body.Data.ActiveTargets
}

// waitSettled polls /api/v1/targets until it lists n targets, each with one
// active owner, owned by exactly the given workers (each owning some), and
// returns the owner of every target by key.
func (c *cluster) waitSettled(t *testing.T, n int, workers ...string) map[string]string {
	t.Helper()
	var owners map[string]string
	var last string
	ok := pollUntil(waitLong, func() bool {
		ts := c.targets()
		owners = map[string]string{}
		per := map[string]int{}
		for _, ft := range ts {
			if !ft.settled() {
				last = fmt.Sprintf("%s owners %v", ft.key(), ft.Owners)
				return false
			}
			owners[ft.key()] = ft.Owner
			per[ft.Owner]++
		}
		have := make([]string, 0, len(per))
		for w := range per {
			have = append(have, w)
		}
		slices.Sort(have)
		want := slices.Sorted(slices.Values(workers))
		last = fmt.Sprintf("%d targets (want %d), owners %v (want %v)", len(ts), n, per, want)
		return len(ts) == n && slices.Equal(have, want)
	})
	require.True(t, ok, "the coordinator never settled: %s", last)
	return owners
}

// pollUntil calls cond every pollTick until it is true or timeout passes.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollTick)
	}
}

// metric sums a metric of a /metrics page (0 when absent).
func metric(t *testing.T, url, name string, match map[string]string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms, err := testenv.Metrics(ctx, url)
	require.NoError(t, err)
	v, _ := ms.Sum(name, match)
	return v
}

// figure logs one measured figure in the suite's greppable form.
func figure(t *testing.T, name string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "e2e-figure: %s", name)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	t.Log(b.String())
}
