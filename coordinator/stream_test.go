package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

func TestSnapshotSplitIntoParts(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	ts := makeTargets("big", 1000)
	pad := strings.Repeat("x", 6<<10)
	for i := range ts {
		ts[i].Labels = labelsWith(ts[i].Labels, "__meta_pad", pad)
	}
	e.c.UpdateTargets(map[string][]relabel.Target{"big": ts})
	fw := e.join("w", 0) // the client's default limit is 4 MiB per message
	e.waitSynced(fw)
	require.Len(t, fw.owned(), 1000)
	fw.with(func() {
		require.GreaterOrEqual(t, fw.partials, 1)
		require.Equal(t, fw.parts, fw.partials+1)
		require.Equal(t, 1, fw.snapshots)
		for i, m := range fw.lastMsgs {
			require.LessOrEqual(t, proto.Size(m), DefaultMaxMessageBytes)
			require.Equal(t, i < len(fw.lastMsgs)-1, m.GetPartial())
			require.True(t, m.GetSnapshot())
		}
	})
}

func jobConfig(job, body string) JobConfig {
	return JobConfig{Config: &shardscrapev1.ScrapeConfig{Hash: fmt.Sprintf("%x", len(body)) + job, JobName: job, Yaml: []byte(body)}, ScrapeInterval: 10 * time.Second}
}

func TestConfigsInSnapshotsAndDeltas(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	global := &shardscrapev1.GlobalConfig{Hash: "g1", Yaml: []byte("global: {}\n")}
	a, b := jobConfig("a", "job_name: a\n"), jobConfig("b", "job_name: b\n")
	require.NoError(t, e.c.ApplyConfig(Config{Global: global, Jobs: []JobConfig{a, b}}))
	fw := e.join("w", 0)
	e.waitSynced(fw)
	fw.with(func() {
		require.Equal(t, "g1", fw.global.GetHash())
		require.Len(t, fw.configs, 2)
		require.Equal(t, "job_name: a\n", string(fw.configs["a"].GetYaml()))
	})

	// Change b, remove a: a delta with b and removed_jobs a; global not resent.
	b2 := jobConfig("b", "job_name: b\nscrape_interval: 5s\n")
	require.NoError(t, e.c.ApplyConfig(Config{Global: global, Jobs: []JobConfig{b2}}))
	e.waitSynced(fw)
	fw.with(func() {
		m := fw.lastMsgs[0]
		require.False(t, m.GetSnapshot())
		require.Nil(t, m.GetGlobal())
		require.Len(t, m.GetConfigs(), 1)
		require.Equal(t, b2.Config.GetHash(), m.GetConfigs()[0].GetHash())
		require.Equal(t, []string{"a"}, m.GetRemovedJobs())
	})

	// A new stream naming the hashes it holds gets no bodies; resuming at
	// the last generation continues with deltas.
	gen := fw.generation()
	fw.stop()
	fw.watch(gen, nil)
	ts := makeTargets("b", 3)
	e.c.UpdateTargets(map[string][]relabel.Target{"b": ts})
	e.waitSynced(fw)
	fw.with(func() {
		require.Zero(t, fw.err)
		require.Equal(t, 1, fw.snapshots, "resumed with a delta")
		require.Len(t, fw.targets, 3)
	})

	fw.stop()
	fw.watch(gen, []string{b2.Config.GetHash()}) // behind: a snapshot
	e.waitSynced(fw)
	fw.with(func() {
		require.Equal(t, 2, fw.snapshots)
		require.Len(t, fw.configs, 1)
		require.Empty(t, fw.configs["b"].GetYaml(), "known hash: no body")
		require.Equal(t, b2.Config.GetHash(), fw.configs["b"].GetHash())
		require.Len(t, fw.targets, 3)
	})
}

func TestSlowWorkerDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fast := e.join("fast", 0)
	// A worker with a lease but no stream accumulates at most a snapshot's
	// worth of pending changes.
	resp, err := e.wc.Join(context.Background(), &shardscrapev1.JoinRequest{WorkerId: "slow"})
	require.NoError(t, err)
	for i := range 20 {
		// Every round replaces all targets by new ones (new ids).
		e.c.UpdateTargets(map[string][]relabel.Target{"churn": makeTargets("churn", 1000)[:0], fmt.Sprintf("churn%d", i): makeTargets(fmt.Sprintf("churn%d", i), 1000)})
		if i > 0 {
			e.c.UpdateTargets(map[string][]relabel.Target{fmt.Sprintf("churn%d", i-1): nil})
		}
	}
	e.waitSynced(fast)
	require.Len(t, fast.owned(), 1000-len(slowOwned(e)))
	e.c.mu.Lock()
	slow := e.c.workers["slow"]
	pending, owned, snap := len(slow.pending), slow.ownedCount(), slow.needSnapshot
	e.c.mu.Unlock()
	require.LessOrEqual(t, pending, 2*max(owned, 1000)+4096, "pending bounded")
	require.True(t, snap, "fell behind: gets a snapshot")

	// When it watches at last, one snapshot brings it up to date.
	fw := &fakeWorker{e: e, id: "slow", epoch: resp.GetLeaseEpoch(),
		targets: map[uint64]*shardscrapev1.Target{}, configs: map[string]*shardscrapev1.ScrapeConfig{}, removed: map[uint64]int{}}
	fw.watch(0, nil)
	e.waitSynced(fw, fast)
	requireOwnedOnce(t, makeTargets("churn19", 1000), fw, fast)
	fw.with(func() { require.Equal(t, 1, fw.snapshots) })
}

func TestLeaveTimesOut(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 2)
	ts := makeTargets("node", 100)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	n := len(fws[0].owned())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// Nobody acknowledges: Leave answers before the deadline, not drained.
	resp, err := e.wc.Leave(ctx, &shardscrapev1.LeaveRequest{WorkerId: fws[0].id, LeaseEpoch: fws[0].epoch})
	require.NoError(t, err)
	require.False(t, resp.GetDrained())
	require.Equal(t, uint64(n), resp.GetRemainingTargetCount())
	// Released: the other worker owns everything, active.
	e.waitSynced(fws[1])
	requireOwnedOnce(t, ts, fws[1])
}

// When the whole fleet stops at once, no worker is left to take targets
// over: every Leave answers at once, not drained, instead of waiting out
// its caller's handoff deadline. The last one out gives its targets back.
func TestLeaveOfTheWholeFleetDoesNotWait(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 2)
	ts := makeTargets("node", 100)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	// A deadline far beyond the test's: only an answer ends these calls.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	type result struct {
		resp *shardscrapev1.LeaveResponse
		err  error
	}
	results := make(chan result, len(fws))
	for _, fw := range fws {
		go func() {
			resp, err := e.wc.Leave(ctx, &shardscrapev1.LeaveRequest{WorkerId: fw.id, LeaseEpoch: fw.epoch})
			results <- result{resp, err}
		}()
	}
	var remaining uint64
	for range fws {
		var r result
		require.Eventually(t, func() bool {
			select {
			case r = <-results:
				return true
			default:
				return false
			}
		}, 30*time.Second, 10*time.Millisecond, "a Leave with nowhere to hand off kept waiting")
		require.NoError(t, r.err)
		remaining += r.resp.GetRemainingTargetCount()
	}
	require.Positive(t, remaining, "targets with nowhere to go are reported as remaining")
	require.Equal(t, 0.0, gaugeOf(t, e, "shardscrape_coordinator_targets_assigned"))
}

func TestReplicationFactorWithZones(t *testing.T) {
	e := newEnv(t, nil, nil, Options{ReplicationFactor: 2})
	var fws []*fakeWorker
	for i := range 4 {
		fws = append(fws, e.joinWith(&shardscrapev1.JoinRequest{WorkerId: fmt.Sprintf("w%d", i), Zone: fmt.Sprintf("z%d", i%2)}))
	}
	ts := makeTargets("node", 200)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	zone := map[string]string{"w0": "z0", "w1": "z1", "w2": "z0", "w3": "z1"}
	owners := ownersOf(fws...)
	require.Len(t, owners, len(ts))
	for id, os := range owners {
		require.Len(t, os, 2, "%x", id)
		require.NotEqual(t, zone[os[0]], zone[os[1]], "replicas spread over zones")
	}
	require.Zero(t, gaugeOf(t, e, "shardscrape_coordinator_targets_owned_twice"))
}

func TestServeTargets(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 2)
	cfg, err := config.Load("scrape_configs:\n- job_name: node\n  metrics_path: /m\n", nil)
	require.NoError(t, err)
	jc := jobConfig("node", "job_name: node\n")
	jc.ScrapeConfig = cfg.ScrapeConfigs[0]
	require.NoError(t, e.c.ApplyConfig(Config{Jobs: []JobConfig{jc}}))
	ts := makeTargets("node", 5)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/api/v1/targets")
	require.NoError(t, err)
	defer res.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			ActiveTargets []struct {
				DiscoveredLabels map[string]string `json:"discoveredLabels"`
				Labels           map[string]string `json:"labels"`
				ScrapePool       string            `json:"scrapePool"`
				ScrapeURL        string            `json:"scrapeUrl"`
				Owner            string            `json:"owner"`
			} `json:"activeTargets"`
			DroppedTargets []any `json:"droppedTargets"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
	require.Equal(t, "success", body.Status)
	require.Len(t, body.Data.ActiveTargets, 5)
	owners := ownersOf(fws...)
	for _, at := range body.Data.ActiveTargets {
		require.Equal(t, "node", at.ScrapePool)
		require.Equal(t, "node", at.Labels["job"])
		require.Equal(t, at.DiscoveredLabels["__address__"], at.Labels["instance"])
		require.Equal(t, "http://"+at.DiscoveredLabels["__address__"]+"/m", at.ScrapeURL)
		require.NotEmpty(t, at.Owner)
		found := false
		for _, rt := range ts {
			if rt.Address == at.DiscoveredLabels["__address__"] {
				found = owners[rt.ID][0] == at.Owner
			}
		}
		require.True(t, found)
	}
	for _, p := range []string{"/ring", "/assignment"} {
		res, err := http.Get(srv.URL + p)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode, p)
	}
}

func slowOwned(e *env) map[uint64]struct{} {
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	owned := map[uint64]struct{}{}
	for _, t := range e.c.workers["slow"].owned {
		if t != nil {
			owned[t.ID] = struct{}{}
		}
	}
	return owned
}

func TestRejoinKeepsOwnershipAndMetrics(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 3)
	ts := makeTargets("node", 300)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	before := requireOwnedOnce(t, ts, fws...)
	require.Equal(t, 1, int(histogramCount(t, e, "shardscrape_coordinator_assignment_latency_seconds")))
	require.NotZero(t, gaugeOf(t, e, "shardscrape_coordinator_stream_messages_sent_total"))
	require.NotZero(t, gaugeOf(t, e, "shardscrape_coordinator_stream_sent_bytes_total"))

	// Loads in heartbeats feed the per-worker series.
	var loads []*shardscrapev1.TargetLoad
	for id := range fws[0].owned() {
		loads = append(loads, &shardscrapev1.TargetLoad{TargetId: id, Series: 10, Up: true})
	}
	_, err := e.wc.Heartbeat(context.Background(), &shardscrapev1.HeartbeatRequest{
		WorkerId: fws[0].id, LeaseEpoch: fws[0].epoch, Generation: fws[0].generation(), Loads: loads})
	require.NoError(t, err)
	lw, err := e.ac.ListWorkers(context.Background(), &shardscrapev1.ListWorkersRequest{})
	require.NoError(t, err)
	require.Equal(t, uint64(10*len(loads)), lw.GetWorkers()[0].GetSeriesCount())
	require.Equal(t, uint64(len(loads)), lw.GetWorkers()[0].GetTargetCount())

	// A restart in place: same id, its generation; a new epoch, nothing moves.
	gen := fws[1].generation()
	fws[1].stop()
	old := fws[1].epoch
	fws[1] = e.join(fws[1].id, gen)
	require.NotEqual(t, old, fws[1].epoch)
	e.settle(fws...)
	require.Equal(t, before, requireOwnedOnce(t, ts, fws...))
	require.Zero(t, gaugeOf(t, e, "shardscrape_coordinator_handoffs_started_total"))
	_, err = e.wc.Heartbeat(context.Background(), &shardscrapev1.HeartbeatRequest{WorkerId: fws[1].id, LeaseEpoch: old})
	require.Error(t, err, "the old epoch is stale")
}

func histogramCount(t *testing.T, e *env, name string) uint64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestAppendTarget checks the hand-encoded upserts against proto.Marshal of
// the same Targets, and that a receiver decodes them as Targets.
func TestAppendTarget(t *testing.T) {
	long := strings.Repeat("x", 200) // length prefixes of two bytes
	items := []item{
		{id: 1, job: "a", lbls: labels.FromStrings("__address__", "h:1")},
		{id: 1<<64 - 1, job: "job", lbls: labels.FromStrings("__address__", "h:2", "empty", "", "z", long), state: stateIncoming, replica: 3},
		{id: 7, job: "", lbls: labels.EmptyLabels(), state: stateOutgoing},
		{id: 8, job: long, lbls: labels.FromStrings("a", strings.Repeat("y", 120))},
	}
	var raw []byte
	want := &shardscrapev1.WatchAssignmentsResponse{}
	for i := range items {
		body := appendTarget(nil, &items[i])
		require.Len(t, body, targetSize(&items[i]), "item %d", i)
		raw = protowire.AppendTag(raw, fieldUpserts, protowire.BytesType)
		raw = protowire.AppendBytes(raw, body)
		want.Upserts = append(want.Upserts, toTarget(&items[i]))
	}
	wantRaw, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
	require.NoError(t, err)
	require.Equal(t, wantRaw, raw)
	// appendUpsert encodes the same whatever its length hint: right, too
	// short (the Target moves up) or too long (it moves down).
	for _, hint := range []int{-1, 0, 1, 130, 1 << 20} {
		var got []byte
		n := hint
		for i := range items {
			got, n = appendUpsert(got, &items[i], max(n, 0))
			if hint >= 0 {
				n = hint
			}
		}
		require.Equal(t, wantRaw, got, "hint %d", hint)
	}

	m := &shardscrapev1.WatchAssignmentsResponse{Generation: 5, RemovedTargetIds: []uint64{9}}
	m.ProtoReflect().SetUnknown(protoreflect.RawFields(raw))
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	got := &shardscrapev1.WatchAssignmentsResponse{}
	require.NoError(t, proto.Unmarshal(b, got))
	want.Generation, want.RemovedTargetIds = 5, []uint64{9}
	require.True(t, proto.Equal(want, got), "got %v", got)

	// Invalid UTF-8, which proto.Marshal refuses, is replaced.
	bad := item{id: 2, job: "j", lbls: labels.FromStrings("a", "b\xffc")}
	body := appendTarget(nil, &bad)
	require.Len(t, body, targetSize(&bad))
	gotT := &shardscrapev1.Target{}
	require.NoError(t, proto.Unmarshal(body, gotT))
	require.Equal(t, "b\uFFFDc", gotT.GetLabels()[0].GetValue())
}

// TestDeltaRemovedThenRediscovered: a target removed and discovered again
// between two updates of a stream is an upsert only; one removed twice is
// listed once. (The stream is driven by hand: buildUpdate.)
func TestDeltaRemovedThenRediscovered(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	resp, err := e.wc.Join(t.Context(), &shardscrapev1.JoinRequest{WorkerId: "w"})
	require.NoError(t, err)
	require.NotZero(t, resp.GetLeaseEpoch())
	e.c.mu.Lock()
	w := e.c.workers["w"]
	sess := &session{wakeCh: make(chan struct{}, 1), done: make(chan struct{}), known: map[string]struct{}{}}
	w.sess = sess
	e.c.mu.Unlock()
	build := func() *shardscrapev1.WatchAssignmentsResponse {
		parts := e.c.buildUpdate(w, sess)
		require.Len(t, parts, 1)
		b, err := proto.Marshal(parts[0].msg)
		require.NoError(t, err)
		m := &shardscrapev1.WatchAssignmentsResponse{}
		require.NoError(t, proto.Unmarshal(b, m))
		return m
	}

	ts := makeTargets("node", 4)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	m := build()
	require.True(t, m.GetSnapshot())
	require.Len(t, m.GetUpserts(), 4)

	back := ts[0]
	back.Labels = labelsWith(back.Labels, "__meta_new", "1")
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts[2:]})
	e.c.UpdateTargets(map[string][]relabel.Target{"node": append([]relabel.Target{back, ts[1]}, ts[2:]...)})
	e.c.UpdateTargets(map[string][]relabel.Target{"node": append([]relabel.Target{back}, ts[2:]...)})
	m = build()
	require.False(t, m.GetSnapshot())
	require.Equal(t, []uint64{ts[1].ID}, m.GetRemovedTargetIds())
	require.Len(t, m.GetUpserts(), 1)
	require.Equal(t, ts[0].ID, m.GetUpserts()[0].GetId())
	require.Equal(t, "1", labelsOf(m.GetUpserts()[0]).Get("__meta_new"))
}

func labelsOf(t *shardscrapev1.Target) labels.Labels {
	b := labels.NewScratchBuilder(len(t.GetLabels()))
	for _, l := range t.GetLabels() {
		b.Add(l.GetName(), l.GetValue())
	}
	return b.Labels()
}

// TestAssignmentLatencyStartsAtDiscovery: the latency histogram counts from
// the moment discovery delivered the targets, not from UpdateTargets.
func TestAssignmentLatencyStartsAtDiscovery(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 2)
	ts := makeTargets("node", 50)
	e.c.UpdateTargetsSince(map[string][]relabel.Target{"node": ts}, e.c.opts.Now().Add(-time.Hour))
	e.settle(fws...)
	requireOwnedOnce(t, ts, fws...)
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "shardscrape_coordinator_assignment_latency_seconds" {
			sum = mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	require.GreaterOrEqual(t, sum, time.Hour.Seconds())
}
