package scraper

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/shardscrape/shardscrape/coordinator"
	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

// TestWithRealCoordinator runs workers against the real coordinator core:
// targets are split across two workers; a third joins and takes its share
// make before break (acknowledged handoffs, no staleness markers anywhere);
// it leaves drained and its targets move back, again without markers.
func TestWithRealCoordinator(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	c, err := coordinator.New(ctx, coordinator.Options{
		LeaseTTL:       3 * time.Second,
		HandoffTimeout: 20 * time.Second,
		TickInterval:   20 * time.Millisecond,
	}, nil, reg)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	c.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		_ = c.Run(ctx)
	}()
	defer func() { cancel(); <-runDone }()

	require.NoError(t, c.ApplyConfig(coordinator.Config{
		Global:         &pb.GlobalConfig{Hash: "g", ExternalLabels: []*pb.Label{{Name: "cluster", Value: "it"}}},
		ScrapeInterval: 200 * time.Millisecond,
		Jobs:           []coordinator.JobConfig{{Config: scrapeConfig("j"), ScrapeInterval: 200 * time.Millisecond}},
	}))
	var addrs []string
	var targets []relabel.Target
	for range 12 {
		addr := target(t, nil)
		addrs = append(addrs, addr)
		id := idOf("j", addr)
		targets = append(targets, relabel.Target{ID: id, Job: "j", Address: addr, Key: id,
			Labels: labels.FromStrings("__address__", addr, "__meta_test", "x")})
	}
	c.UpdateTargets(map[string][]relabel.Target{"j": targets})

	addr := lis.Addr().String()
	newWorker := func(id string) *running {
		o := workerOpts(t.TempDir(), dial(t, addr))
		o.WorkerID = id
		return start(t, o)
	}
	owners := func(ws ...*running) map[string]int {
		n := map[string]int{}
		for _, w := range ws {
			for _, tg := range w.w.ScrapeManager().TargetsActive()["j"] {
				n[tg.URL().Host]++
			}
		}
		return n
	}
	allOnce := func(ws ...*running) func() bool {
		return func() bool {
			o := owners(ws...)
			if len(o) != len(addrs) {
				return false
			}
			for _, n := range o {
				if n != 1 {
					return false
				}
			}
			for _, w := range ws {
				if len(w.w.ScrapeManager().TargetsActive()["j"]) == 0 {
					return false
				}
			}
			return true
		}
	}
	w0, w1 := newWorker("w-0"), newWorker("w-1")
	require.Eventually(t, allOnce(w0, w1), 30*time.Second, 50*time.Millisecond)

	w2 := newWorker("w-2")
	require.Eventually(t, allOnce(w0, w1, w2), 30*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		return metricSum(t, reg, "shardscrape_coordinator_handoffs_completed_total") > 0
	}, 30*time.Second, 50*time.Millisecond)
	require.Positive(t, metricSum(t, w2.reg, "shardscrape_scraper_handoff_acks_total"))

	// w-2 leaves drained; its targets go back to w-0 and w-1.
	w2.stop(t)
	require.Eventually(t, allOnce(w0, w1), 30*time.Second, 50*time.Millisecond)
	// Let any end-of-run staleness markers (2.2 intervals) appear.
	n := w0.rec.sampleCount(addrs[0]) + w1.rec.sampleCount(addrs[0])
	require.Eventually(t, func() bool { return w0.rec.sampleCount(addrs[0])+w1.rec.sampleCount(addrs[0]) > n+30 }, 30*time.Second, 50*time.Millisecond)
	require.Zero(t, metricSum(t, reg, "shardscrape_coordinator_handoffs_timed_out_total"))
	for _, w := range []*running{w0, w1, w2} {
		for _, a := range addrs {
			require.Zero(t, w.rec.staleCount(a), "staleness markers for %s on %s", a, w.w.opts.WorkerID)
		}
	}
	w0.stop(t)
	w1.stop(t)
}
