package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
	"github.com/shardscrape/shardscrape/internal/leader/leasetest"
	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// seedConfig is the source document's config (a copy of shared/seed/prometheus-seed.yml
// kept in the module, so that a checkout of the module alone tests it).
const seedConfig = "../../relabel/testdata/prometheus-seed.yml"

func TestMain(m *testing.M) {
	// client-go logs through klog's global logger; keep test output clean.
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m,
		// Started by an objstore provider's package init, not by us.
		goleak.IgnoreTopFunction("github.com/baidubce/bce-sdk-go/util/log.NewLogger.func1"))
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	seed, err := os.ReadFile(seedConfig)
	require.NoError(t, err)

	for _, tc := range []struct {
		name, file string
		args       []string
		code       int
		out        string
	}{
		{name: "seed", file: write("seed.yml", string(seed)), code: 0, out: "SUCCESS"},
		{name: "misspelt key", file: write("key.yml", "global:\n  scrape_intervall: 15s\n"), code: 1, out: "scrape_intervall"},
		{name: "bad relabel action", file: write("relabel.yml", "scrape_configs:\n- job_name: a\n  static_configs: [{targets: ['x:1']}]\n  relabel_configs:\n  - action: kepp\n"), code: 1, out: "kepp"},
		{name: "duplicate job", file: write("dup.yml", "scrape_configs:\n- job_name: a\n- job_name: a\n"), code: 1, out: `"a"`},
		{name: "missing file", file: filepath.Join(dir, "nope.yml"), code: 1, out: "nope.yml"},
		{name: "bad cluster label", file: write("ok.yml", "scrape_configs: []\n"), args: []string{"--cluster.label=__x", "--cluster.name=c"}, code: 1, out: "__x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--config.check", "--config.file", tc.file}, tc.args...)
			code := runMain(context.Background(), args, &stdout, &stderr)
			require.Equal(t, tc.code, code, "stdout %q stderr %q", stdout.String(), stderr.String())
			require.Contains(t, stdout.String()+stderr.String(), tc.out)
		})
	}
}

// testFlags parses args on top of test defaults (loopback port 0, a temp
// storage path, fast discovery updates), which args may override.
func testFlags(t *testing.T, args ...string) flagConfig {
	t.Helper()
	var all []string
	for _, d := range []string{
		"--web.listen-address=127.0.0.1:0",
		"--grpc.listen-address=127.0.0.1:0",
		"--storage.path=" + t.TempDir(),
		"--discovery.update-interval=100ms",
	} {
		name, _, _ := strings.Cut(d, "=")
		if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, name+"=") }) {
			all = append(all, d)
		}
	}
	var f flagConfig
	_, err := newApp(&f).Parse(append(all, args...))
	require.NoError(t, err)
	return f
}

// instance is a coordinator run in-process.
type instance struct {
	a      *app
	cancel context.CancelFunc
	done   chan error
	web    string
}

func startInstance(t *testing.T, args ...string) *instance {
	t.Helper()
	f := testFlags(t, args...)
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("COORDINATOR_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a, err := newCoordinator(f, logger)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{a: a, cancel: cancel, done: make(chan error, 1), web: "http://" + a.webAddr()}
	go func() { in.done <- a.run(ctx) }()
	t.Cleanup(in.stop)
	return in
}

func (in *instance) stop() {
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	<-in.done
}

func (in *instance) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(in.web + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (in *instance) post(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Post(in.web+path, "", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (in *instance) waitReady(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		code, _ := in.get(t, "/-/ready")
		return code == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)
}

// jobs returns the scrape pools on /api/v1/targets with their target
// addresses.
func (in *instance) jobs(t *testing.T) map[string][]string {
	t.Helper()
	code, body := in.get(t, "/api/v1/targets")
	if code != http.StatusOK {
		return nil
	}
	var resp struct {
		Status string
		Data   struct {
			ActiveTargets []struct {
				ScrapePool       string            `json:"scrapePool"`
				DiscoveredLabels map[string]string `json:"discoveredLabels"`
			} `json:"activeTargets"`
		}
	}
	require.NoError(t, json.Unmarshal([]byte(body), &resp), body)
	out := map[string][]string{}
	for _, at := range resp.Data.ActiveTargets {
		out[at.ScrapePool] = append(out[at.ScrapePool], at.DiscoveredLabels["__address__"])
	}
	return out
}

func (in *instance) metric(t *testing.T, name string) string {
	t.Helper()
	_, body := in.get(t, "/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
}

func TestHTTPEndpointsAndHealth(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs:\n- job_name: node\n  static_configs: [{targets: ['10.0.0.1:9100', '10.0.0.2:9100']}]\n")
	token := filepath.Join(dir, "token")
	writeFile(t, token, "s3cret\n")
	in := startInstance(t, "--config.file="+cfg, "--grpc.auth-token-file="+token, "--cluster.name=eu1")
	in.waitReady(t)

	code, body := in.get(t, "/-/healthy")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "1", in.metric(t, "shardscrape_coordinator_config_last_reload_successful"))
	require.NotEmpty(t, in.metric(t, "go_goroutines"))
	require.Equal(t, "1", in.metric(t, "shardscrape_coordinator_leader"))
	require.Eventually(t, func() bool { return len(in.jobs(t)["node"]) == 2 }, 30*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		return in.metric(t, "shardscrape_coordinator_targets_kept") == "2"
	}, 30*time.Second, 20*time.Millisecond)
	code, _ = in.get(t, "/-/reload")
	require.Equal(t, http.StatusMethodNotAllowed, code)
	// Profiles on the coordinator's own listener: the index, and a named
	// profile through it.
	code, body = in.get(t, "/debug/pprof/")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "goroutine")
	code, body = in.get(t, "/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "goroutine profile:")
	code, body = in.get(t, "/debug/pprof/cmdline")
	require.Equal(t, http.StatusOK, code, body)

	// Health needs no token; WorkerService does.
	cc := dial(t, in.a.grpcAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, hr.GetStatus())
	hr, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: shardscrapev1.WorkerService_ServiceDesc.ServiceName})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, hr.GetStatus())

	wc := shardscrapev1.NewWorkerServiceClient(cc)
	_, err = wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0"})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	jr, err := wc.Join(authed, &shardscrapev1.JoinRequest{WorkerId: "scraper-0", Address: "127.0.0.1:1"})
	require.NoError(t, err)
	require.NotZero(t, jr.GetLeaseEpoch())

	// The worker's stream carries the configuration with the cluster label.
	stream, err := wc.WatchAssignments(authed, &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0", LeaseEpoch: jr.GetLeaseEpoch()})
	require.NoError(t, err)
	msg, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, msg.GetSnapshot())
	require.Equal(t, []*shardscrapev1.Label{{Name: "cluster_name", Value: "eu1"}}, stripLabels(msg.GetGlobal().GetExternalLabels()))
	require.Len(t, msg.GetConfigs(), 1)
	require.Equal(t, "node", msg.GetConfigs()[0].GetJobName())
	// Discovery's targets reach the worker through the pipeline and core.
	held := map[string]bool{}
	for _, u := range msg.GetUpserts() {
		held[addressOf(u)] = true
	}
	for len(held) < 2 {
		msg, err = stream.Recv()
		require.NoError(t, err)
		for _, u := range msg.GetUpserts() {
			held[addressOf(u)] = true
		}
	}
	require.Equal(t, map[string]bool{"10.0.0.1:9100": true, "10.0.0.2:9100": true}, held)
}

func addressOf(t *shardscrapev1.Target) string {
	for _, l := range t.GetLabels() {
		if l.GetName() == "__address__" {
			return l.GetValue()
		}
	}
	return ""
}

func stripLabels(ls []*shardscrapev1.Label) []*shardscrapev1.Label {
	out := make([]*shardscrapev1.Label, 0, len(ls))
	for _, l := range ls {
		out = append(out, &shardscrapev1.Label{Name: l.GetName(), Value: l.GetValue()})
	}
	return out
}

func TestReloadRejectsInvalidConfigAndAppliesValidOne(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs:\n- job_name: old\n  static_configs: [{targets: ['10.0.0.1:9100']}]\n")
	in := startInstance(t, "--config.file="+cfg)
	in.waitReady(t)
	require.Eventually(t, func() bool { return len(in.jobs(t)["old"]) == 1 }, 30*time.Second, 20*time.Millisecond)

	// Invalid: rejected with the key named, counted, the old job stays.
	writeFile(t, cfg, "scrape_configs:\n- job_name: new\n  static_configs: [{targets: ['10.0.0.2:9100']}]\n  scrape_intervall: 1s\n")
	code, body := in.post(t, "/-/reload")
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, body, "scrape_intervall")
	require.Equal(t, "0", in.metric(t, "shardscrape_coordinator_config_last_reload_successful"))
	require.Equal(t, "1", in.metric(t, "shardscrape_coordinator_config_reload_failures_total"))
	// Give discovery time to act on a wrongly applied config, then check
	// the old one is still in force.
	time.Sleep(300 * time.Millisecond)
	jobs := in.jobs(t)
	require.Equal(t, []string{"10.0.0.1:9100"}, jobs["old"])
	require.NotContains(t, jobs, "new")
	code, _ = in.get(t, "/-/ready")
	require.Equal(t, http.StatusOK, code)

	// Valid: applied; the removed job's targets go.
	writeFile(t, cfg, "scrape_configs:\n- job_name: new\n  static_configs: [{targets: ['10.0.0.2:9100', '10.0.0.3:9100']}]\n")
	code, body = in.post(t, "/-/reload")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "1", in.metric(t, "shardscrape_coordinator_config_last_reload_successful"))
	require.Eventually(t, func() bool {
		jobs := in.jobs(t)
		_, old := jobs["old"]
		return len(jobs["new"]) == 2 && !old
	}, 30*time.Second, 20*time.Millisecond)
}

func TestNotLeaderFailsCallsWithUnavailable(t *testing.T) {
	fake := leasetest.New()
	srv := fake.Start()
	t.Cleanup(srv.Close) // after the instances stop (cleanups run last first)
	// Another replica holds the Lease, renewing it far into the future.
	cs, err := leasetest.Clientset(srv.URL)
	require.NoError(t, err)
	holder, secs := "coordinator-other", int32(3600)
	now := metav1.NewMicroTime(time.Now())
	_, err = cs.CoordinationV1().Leases("monitoring").Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "shardscrape-coordinator", Namespace: "monitoring"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs:\n- job_name: node\n  static_configs: [{targets: ['10.0.0.1:9100']}]\n")
	in := startInstance(t, "--config.file="+cfg,
		"--leader-election.enabled", "--leader-election.api-server="+srv.URL,
		"--leader-election.namespace=monitoring", "--leader-election.identity=coordinator-0",
		"--leader-election.lease-duration=3s", "--leader-election.renew-deadline=2s", "--leader-election.retry-period=200ms")

	// The elector has looked at the Lease (it is candidate, not leader).
	require.Eventually(t, func() bool { return in.a.elector.Leader() == holder }, 30*time.Second, 10*time.Millisecond)
	code, _ := in.get(t, "/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = in.get(t, "/-/healthy")
	require.Equal(t, http.StatusOK, code)
	code, _ = in.get(t, "/api/v1/targets")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "0", in.metric(t, "shardscrape_coordinator_leader"))

	cc := dial(t, in.a.grpcAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, hr.GetStatus())
	wc := shardscrapev1.NewWorkerServiceClient(cc)
	_, err = wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0"})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	_, err = wc.Heartbeat(ctx, &shardscrapev1.HeartbeatRequest{WorkerId: "scraper-0"})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	stream, err := wc.WatchAssignments(ctx, &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0"})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	_, err = shardscrapev1.NewAdminServiceClient(cc).ListWorkers(ctx, &shardscrapev1.ListWorkersRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	// The non-leader closes the connections it refused: behind a Service,
	// the workers reconnect and reach the leader.
	require.Eventually(t, func() bool {
		return in.metric(t, "shardscrape_grpc_not_serving_connections_closed_total") != "0"
	}, 10*time.Second, 20*time.Millisecond)
}

func TestLeaderFailover(t *testing.T) {
	fake := leasetest.New()
	srv := fake.Start()
	t.Cleanup(srv.Close) // after the instances stop (cleanups run last first)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs:\n- job_name: node\n  static_configs: [{targets: ['10.0.0.1:9100']}]\n")
	bucket := t.TempDir() // shared state, as two replicas share object storage
	start := func(id string) *instance {
		return startInstance(t, "--config.file="+cfg, "--storage.path="+bucket,
			"--leader-election.enabled", "--leader-election.api-server="+srv.URL,
			"--leader-election.namespace=monitoring", "--leader-election.identity="+id,
			"--leader-election.lease-duration=3s", "--leader-election.renew-deadline=2s", "--leader-election.retry-period=200ms",
			"--lease.ttl=1s")
	}
	a, b := start("coordinator-0"), start("coordinator-1")

	ready := func(in *instance) bool {
		code, _ := in.get(t, "/-/ready")
		return code == http.StatusOK
	}
	require.Eventually(t, func() bool { return ready(a) || ready(b) }, 30*time.Second, 20*time.Millisecond)
	first, second := a, b
	if ready(b) {
		first, second = b, a
	}
	require.False(t, ready(second))
	require.Equal(t, "1", first.metric(t, "shardscrape_coordinator_leader"))

	cc := dial(t, first.a.grpcAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	jr, err := shardscrapev1.NewWorkerServiceClient(cc).Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0", Address: "127.0.0.1:1"})
	require.NoError(t, err)
	stream, err := shardscrapev1.NewWorkerServiceClient(cc).WatchAssignments(ctx, &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0", LeaseEpoch: jr.GetLeaseEpoch()})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	// An admin mutation, persisted in the shared bucket.
	_, err = shardscrapev1.NewAdminServiceClient(cc).PauseRebalancing(ctx, &shardscrapev1.PauseRebalancingRequest{Reason: "maintenance"})
	require.NoError(t, err)

	// The leader stops: it saves, releases the Lease and the other takes
	// over with the state.
	stopped := time.Now()
	first.stop()
	require.Eventually(t, func() bool { return ready(second) }, 30*time.Second, 20*time.Millisecond)
	t.Logf("fail-over: %v from the leader's stop to the other's readiness (retry period 200ms)", time.Since(stopped))
	require.Equal(t, "1", second.metric(t, "shardscrape_coordinator_leader"))
	cc2 := dial(t, second.a.grpcAddr())
	rs, err := shardscrapev1.NewAdminServiceClient(cc2).RingStatus(ctx, &shardscrapev1.RingStatusRequest{})
	require.NoError(t, err)
	require.True(t, rs.GetRebalancingPaused())
	require.Equal(t, "maintenance", rs.GetPauseReason())
	jr, err = shardscrapev1.NewWorkerServiceClient(cc2).Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0", Address: "127.0.0.1:1"})
	require.NoError(t, err)
	require.NotZero(t, jr.GetLeaseEpoch())
}

func TestLeaderStepsDownWhenLeaseIsLost(t *testing.T) {
	fake := leasetest.New()
	srv := fake.Start()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs:\n- job_name: node\n  static_configs: [{targets: ['10.0.0.1:9100']}]\n")
	in := startInstance(t, "--config.file="+cfg,
		"--leader-election.enabled", "--leader-election.api-server="+srv.URL,
		"--leader-election.namespace=monitoring", "--leader-election.identity=coordinator-0",
		"--leader-election.lease-duration=3s", "--leader-election.renew-deadline=1s", "--leader-election.retry-period=200ms")
	in.waitReady(t)

	cc := dial(t, in.a.grpcAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wc := shardscrapev1.NewWorkerServiceClient(cc)
	jr, err := wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0", Address: "127.0.0.1:1"})
	require.NoError(t, err)
	stream, err := wc.WatchAssignments(ctx, &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0", LeaseEpoch: jr.GetLeaseEpoch()})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)

	// The API server goes away: renewals fail, the replica steps down, its
	// open stream ends with UNAVAILABLE and it is no longer ready.
	fake.SetDown(true)
	for {
		_, err = stream.Recv()
		if err != nil {
			break
		}
	}
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	code, _ := in.get(t, "/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)
	_, err = wc.Heartbeat(ctx, &shardscrapev1.HeartbeatRequest{WorkerId: "scraper-0", LeaseEpoch: jr.GetLeaseEpoch()})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, hr.GetStatus())

	// Back: it campaigns again and leads with a fresh core.
	fake.SetDown(false)
	in.waitReady(t)
	_, err = wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0", Address: "127.0.0.1:1"})
	require.NoError(t, err)
}

func TestPodEnrichmentFollowsPodChurn(t *testing.T) {
	api := kubeapi.New(kubeapi.Options{})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close) // after the instances stop (cleanups run last first)
	require.NoError(t, api.Apply(kubeapi.NewPod("shop", "web-0", "node-1", "10.1.0.5", map[string]string{"app": "web"}, nil)))

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs:\n- job_name: app\n  static_configs: [{targets: ['10.1.0.5:8080', '10.9.9.9:8080']}]\n")
	in := startInstance(t, "--config.file="+cfg, "--pod-enrichment.enabled", "--pod-enrichment.api-server="+srv.URL)
	in.waitReady(t)

	podOf := func() map[string][2]string {
		code, body := in.get(t, "/api/v1/targets")
		require.Equal(t, http.StatusOK, code)
		var resp struct {
			Data struct {
				ActiveTargets []struct {
					DiscoveredLabels map[string]string `json:"discoveredLabels"`
					Labels           map[string]string `json:"labels"`
				} `json:"activeTargets"`
			}
		}
		require.NoError(t, json.Unmarshal([]byte(body), &resp))
		out := map[string][2]string{}
		for _, at := range resp.Data.ActiveTargets {
			out[at.DiscoveredLabels["__address__"]] = [2]string{at.DiscoveredLabels["__meta_pod_name"], at.Labels["pod"]}
		}
		return out
	}
	require.Eventually(t, func() bool {
		p := podOf()
		return p["10.1.0.5:8080"] == [2]string{"web-0", "web-0"} && len(p) == 2
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, [2]string{"", ""}, podOf()["10.9.9.9:8080"])

	// The IP goes to a new pod: the target's labels follow.
	require.NoError(t, api.Delete(kubeapi.NewPod("shop", "web-0", "node-1", "10.1.0.5", nil, nil)))
	require.NoError(t, api.Apply(kubeapi.NewPod("shop", "web-1", "node-2", "10.1.0.5", map[string]string{"app": "web"}, nil)))
	require.Eventually(t, func() bool {
		return podOf()["10.1.0.5:8080"] == [2]string{"web-1", "web-1"}
	}, 30*time.Second, 20*time.Millisecond)
}

func TestObjstoreConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs: []\n")
	state := filepath.Join(dir, "state")
	objCfg := filepath.Join(dir, "objstore.yml")
	writeFile(t, objCfg, "type: FILESYSTEM\nconfig:\n  directory: "+state+"\n")
	in := startInstance(t, "--config.file="+cfg, "--objstore.config-file="+objCfg)
	in.waitReady(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := shardscrapev1.NewAdminServiceClient(dial(t, in.a.grpcAddr())).PauseRebalancing(ctx, &shardscrapev1.PauseRebalancingRequest{Reason: "x"})
	require.NoError(t, err)
	// The mutation returned once persisted, in the configured bucket.
	var files []string
	require.NoError(t, filepath.Walk(state, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return err
	}))
	require.NotEmpty(t, files)
	_, body := in.get(t, "/metrics")
	require.Regexp(t, `(?m)^shardscrape_coordinator_objstore_bucket_operations_total\{.*operation="upload".*\} [1-9]`, body)

}

func TestStartFailuresNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs: []\n")
	badObj := filepath.Join(dir, "objstore.yml")
	writeFile(t, badObj, "type: NOPE\n")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--objstore.config-file=" + badObj}, "--objstore.config-file"},
		{[]string{"--objstore.config-file=" + filepath.Join(dir, "missing.yml")}, "--objstore.config-file"},
		{[]string{"--leader-election.enabled", "--leader-election.api-server=http://127.0.0.1:1", "--leader-election.namespace="}, "--leader-election.namespace"},
		{[]string{"--pod-enrichment.enabled", "--pod-enrichment.kubeconfig=" + filepath.Join(dir, "missing-kubeconfig")}, "--pod-enrichment"},
		{[]string{"--web.listen-address=" + busy.Addr().String()}, "--web.listen-address"},
		{[]string{"--cluster.label=bad-name", "--cluster.name=x"}, "--cluster.label"},
		{[]string{"--config.file=" + filepath.Join(dir, "missing.yml")}, "missing.yml"},
		// The core's own option checks, at start rather than in a retry
		// loop behind a coordinator that never becomes ready.
		{[]string{"--replication-factor=-1"}, "--replication-factor"},
		{[]string{"--replication-factor=17"}, "--replication-factor"},
		{[]string{"--lease.ttl=-1s"}, "--lease.ttl"},
		{[]string{"--handoff.timeout=-1s"}, "--handoff.timeout"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			args := tc.args
			if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--config.file=") }) {
				args = append(args, "--config.file="+cfg)
			}
			_, err := newCoordinator(testFlags(t, args...), slog.New(slog.DiscardHandler))
			require.ErrorContains(t, err, tc.want)
		})
	}
}
