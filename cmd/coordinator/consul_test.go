package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/fake/consul"
	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// streamWorker is an in-process worker: it joins, heartbeats its lease and
// folds its assignment stream into the set of targets it holds.
type streamWorker struct {
	mu      sync.Mutex
	targets map[uint64]*shardscrapev1.Target
}

func runStreamWorker(ctx context.Context, t *testing.T, wc shardscrapev1.WorkerServiceClient, id string) *streamWorker {
	t.Helper()
	jr, err := wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: id, Address: "127.0.0.1:1"})
	require.NoError(t, err)
	stream, err := wc.WatchAssignments(ctx, &shardscrapev1.WatchAssignmentsRequest{WorkerId: id, LeaseEpoch: jr.GetLeaseEpoch()})
	require.NoError(t, err)
	w := &streamWorker{targets: map[uint64]*shardscrapev1.Target{}}
	var generation uint64
	var genMu sync.Mutex
	go func() {
		inUpdate := false // between the parts of one update
		for {
			msg, err := stream.Recv()
			if err != nil {
				return
			}
			w.mu.Lock()
			// A snapshot replaces what the worker holds; its parts add up.
			if msg.GetSnapshot() && !inUpdate {
				clear(w.targets)
			}
			inUpdate = msg.GetPartial()
			for _, u := range msg.GetUpserts() {
				w.targets[u.GetId()] = u
			}
			for _, id := range msg.GetRemovedTargetIds() {
				delete(w.targets, id)
			}
			w.mu.Unlock()
			if !msg.GetPartial() {
				genMu.Lock()
				generation = msg.GetGeneration()
				genMu.Unlock()
			}
		}
	}()
	go func() {
		tick := time.NewTicker(jr.GetHeartbeatInterval().AsDuration())
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			genMu.Lock()
			g := generation
			genMu.Unlock()
			_, _ = wc.Heartbeat(ctx, &shardscrapev1.HeartbeatRequest{WorkerId: id, LeaseEpoch: jr.GetLeaseEpoch(), Generation: g})
		}
	}()
	return w
}

func (w *streamWorker) active() map[uint64]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[uint64]string{}
	for id, t := range w.targets {
		if t.GetState() != shardscrapev1.TargetState_TARGET_STATE_OUTGOING {
			for _, l := range t.GetLabels() {
				if l.GetName() == "__address__" {
					out[id] = l.GetValue()
				}
			}
		}
	}
	return out
}

// TestConsulTargetsOwnedExactlyOnce runs the whole coordinator: 1,000
// node_exporters registered in the Consul fake by ip:port (as the source
// document does), found by Prometheus's Consul SD, relabeled (a tenth
// dropped by a relabel rule), placed on the ring, and streamed to five
// workers over gRPC. Every kept target is owned by exactly one worker.
func TestConsulTargetsOwnedExactlyOnce(t *testing.T) {
	const nodes = 1000
	catalog := consul.New("dc1")
	for i := range nodes {
		name := fmt.Sprintf("node-%04d", i)
		catalog.SetNode(consul.Node{Name: name, Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)})
		tags := []string{"node"}
		if i%10 == 0 {
			tags = append(tags, "maintenance")
		}
		require.NoError(t, catalog.SetService(consul.Service{Node: name, Name: "node-exporter", Port: 9100, Tags: tags}))
	}
	srv := httptest.NewServer(catalog)
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, fmt.Sprintf(`scrape_configs:
- job_name: node-exporter
  consul_sd_configs:
  - server: %s
    services: [node-exporter]
  relabel_configs:
  - source_labels: [__meta_consul_tags]
    regex: .*,maintenance,.*
    action: drop
  - source_labels: [__meta_consul_node]
    target_label: node
`, srv.Listener.Addr()))
	in := startInstance(t, "--config.file="+cfg, "--lease.ttl=2s", "--cluster.name=eu1")
	in.waitReady(t)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	wc := shardscrapev1.NewWorkerServiceClient(dial(t, in.a.grpcAddr()))
	var workers []*streamWorker
	for i := range 5 {
		workers = append(workers, runStreamWorker(ctx, t, wc, fmt.Sprintf("scraper-%d", i)))
	}

	const kept = nodes - nodes/10
	var owners map[string][]int
	require.Eventually(t, func() bool {
		owners = map[string][]int{}
		for i, w := range workers {
			for _, addr := range w.active() {
				owners[addr] = append(owners[addr], i)
			}
		}
		return len(owners) == kept
	}, 60*time.Second, 50*time.Millisecond, "all kept targets assigned")
	for addr, ws := range owners {
		require.Len(t, ws, 1, "%s owned by workers %v", addr, ws)
	}
	for i, w := range workers {
		// Bounded loads: nobody far from the mean of 180.
		require.InDelta(t, kept/5, len(w.active()), kept/5*0.2, "worker %d", i)
	}
	require.Eventually(t, func() bool {
		return in.metric(t, "shardscrape_coordinator_targets_kept") == fmt.Sprint(kept) &&
			in.metric(t, "shardscrape_coordinator_targets_assigned") == fmt.Sprint(kept) &&
			in.metric(t, "shardscrape_coordinator_targets_unassigned") == "0" &&
			in.metric(t, "shardscrape_coordinator_targets_owned_twice") == "0"
	}, 30*time.Second, 50*time.Millisecond, "coverage metrics")
}
