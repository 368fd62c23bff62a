package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/util/compression"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shardscrape/shardscrape/internal/testenv"
	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testenv.FreeAddr()
	require.NoError(t, err)
	return addr
}

func exporter(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("demo_gauge 1\n"))
	}))
	t.Cleanup(s.Close)
	u, _ := url.Parse(s.URL)
	return u.Host
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStandalone(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `
global: {scrape_interval: 200ms, scrape_timeout: 100ms}
scrape_configs:
- job_name: demo
  static_configs: [{targets: [%q]}]
`, exporter(t)), 0o644))
	web := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr testenv.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- runMain(ctx, []string{
			"--config.file=" + cfg, "--web.listen-address=" + web,
			"--storage.path=" + filepath.Join(dir, "data"), "--scrape.discovery-reload-interval=50ms",
		}, io.Discard, &stderr)
	}()
	require.Eventually(t, func() bool { c, _ := get("http://" + web + "/-/ready"); return c == 200 }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		_, body := get("http://" + web + "/api/v1/targets")
		return bytes.Contains([]byte(body), []byte(`"health":"up"`))
	}, 20*time.Second, 20*time.Millisecond)
	c, body := get("http://" + web + "/metrics")
	require.Equal(t, 200, c)
	require.Contains(t, body, "prometheus_target_scrape_pools_total")
	pc, pbody := get("http://" + web + "/debug/pprof/heap?debug=1")
	require.Equal(t, 200, pc)
	require.Contains(t, pbody, "heap profile:")
	require.Contains(t, body, "prometheus_agent_active_series")
	require.Contains(t, body, "shardscrape_scraper_ready 1")
	c, _ = get("http://" + web + "/-/healthy")
	require.Equal(t, 200, c)
	cancel()
	select {
	case got := <-code:
		require.Equal(t, 0, got, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("no exit")
	}
}

func TestBadFlags(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 2, runMain(context.Background(), []string{"--no-such-flag"}, io.Discard, &stderr))
	require.Contains(t, stderr.String(), "no-such-flag")
	stderr.Reset()
	require.Equal(t, 1, runMain(context.Background(), []string{"--config.file=/nonexistent/p.yml", "--web.listen-address=127.0.0.1:0", "--storage.path=" + t.TempDir()}, io.Discard, &stderr))
	require.Contains(t, stderr.String(), "/nonexistent/p.yml")
}

// coordinator is a minimal WorkerService: one snapshot, a drained Leave.
type coordinator struct {
	pb.UnimplementedWorkerServiceServer
	target string
	left   chan struct{}
}

func (c *coordinator) Join(context.Context, *pb.JoinRequest) (*pb.JoinResponse, error) {
	return &pb.JoinResponse{LeaseEpoch: 1, LeaseTtl: durationpb.New(time.Minute), HeartbeatInterval: durationpb.New(time.Second)}, nil
}

func (c *coordinator) Heartbeat(context.Context, *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	return &pb.HeartbeatResponse{}, nil
}

func (c *coordinator) Leave(context.Context, *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	close(c.left)
	return &pb.LeaveResponse{Drained: true}, nil
}

func (c *coordinator) WatchAssignments(_ *pb.WatchAssignmentsRequest, st grpc.ServerStreamingServer[pb.WatchAssignmentsResponse]) error {
	job := []byte("job_name: demo\nscrape_interval: 200ms\nscrape_timeout: 100ms\n")
	if err := st.Send(&pb.WatchAssignmentsResponse{
		Generation: 1, Snapshot: true,
		Global:  &pb.GlobalConfig{Hash: "g", ExternalLabels: []*pb.Label{{Name: "cluster", Value: "c"}}},
		Configs: []*pb.ScrapeConfig{{Hash: "h", JobName: "demo", Yaml: job}},
		Upserts: []*pb.Target{{Id: 1, Job: "demo", State: pb.TargetState_TARGET_STATE_ACTIVE,
			Labels: []*pb.Label{{Name: "__address__", Value: c.target}}}},
	}); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// TestSIGTERM: a real SIGTERM drains the worker (Leave), and it exits 0.
func TestSIGTERM(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	co := &coordinator{target: exporter(t), left: make(chan struct{})}
	s := grpc.NewServer()
	pb.RegisterWorkerServiceServer(s, co)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()

	web := freeAddr(t)
	var stderr testenv.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- runMain(context.Background(), []string{
			"--coordinator.address=" + lis.Addr().String(), "--worker.id=w-0",
			"--web.listen-address=" + web, "--storage.path=" + t.TempDir(),
			"--scrape.discovery-reload-interval=50ms",
		}, io.Discard, &stderr)
	}()
	require.Eventually(t, func() bool {
		_, body := get("http://" + web + "/api/v1/targets")
		return bytes.Contains([]byte(body), []byte(`"health":"up"`))
	}, 20*time.Second, 20*time.Millisecond, stderr.String())
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case got := <-code:
		require.Equal(t, 0, got, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("no exit")
	}
	select {
	case <-co.left:
	default:
		t.Fatal("no Leave")
	}
}

func TestWALCompressionFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want compression.Type
	}{
		{nil, compression.Snappy}, // Prometheus agent mode's default
		{[]string{"--storage.agent.wal-compression-type=zstd"}, compression.Zstd},
		{[]string{"--no-storage.agent.wal-compression"}, compression.None},
		{[]string{"--no-storage.agent.wal-compression", "--storage.agent.wal-compression-type=zstd"}, compression.None},
	} {
		cfg := flagConfig{}
		_, err := newApp(&cfg).Parse(tc.args)
		require.NoError(t, err, tc.args)
		require.Equal(t, tc.want, agentOptions(cfg).WALCompression, tc.args)
	}
	cfg := flagConfig{}
	_, err := newApp(&cfg).Parse([]string{"--storage.agent.wal-compression-type=lz4"})
	require.ErrorContains(t, err, "lz4")
}
