package coordinator

import (
	"context"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

func ref(job, addr string) *shardscrapev1.TargetRef {
	return &shardscrapev1.TargetRef{Ref: &shardscrapev1.TargetRef_JobAddress{JobAddress: &shardscrapev1.JobAddress{Job: job, Address: addr}}}
}

func idRef(id uint64) *shardscrapev1.TargetRef {
	return &shardscrapev1.TargetRef{Ref: &shardscrapev1.TargetRef_Id{Id: id}}
}

// restart stops e and its workers and starts a coordinator on the same
// bucket; the workers join again with the generation they hold.
func restart(t *testing.T, e *env, fws []*fakeWorker, ts []relabel.Target) (*env, []*fakeWorker) {
	t.Helper()
	require.NoError(t, e.c.saveAssignment(context.Background(), true))
	gens := make([]uint64, len(fws))
	for i, fw := range fws {
		fw.stop()
		gens[i] = fw.generation()
	}
	e.stop()
	e2 := newEnv(t, e.bucket, e.clock, Options{})
	require.True(t, e2.c.grace, "a coordinator with saved state waits for its workers")
	e2.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	out := make([]*fakeWorker, len(fws))
	for i, fw := range fws {
		out[i] = e2.join(fw.id, gens[i])
		e2.c.mu.Lock()
		grace := e2.c.grace
		e2.c.mu.Unlock()
		if grace {
			require.Zero(t, out[i].generation(), "nothing is sent during the startup grace")
		}
		if i == 0 {
			require.True(t, grace)
		}
	}
	require.False(t, e2.c.grace, "grace ends when every previous worker joined")
	return e2, out
}

func TestRestartKeepsAssignmentAndAdminState(t *testing.T) {
	bucket, err := filesystem.NewBucket(t.TempDir())
	require.NoError(t, err)
	e := newEnv(t, bucket, nil, Options{})
	fws := startWorkers(e, 5)
	ts := makeTargets("node", 1000)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	ctx := context.Background()

	// Pin a target away from its ring owner, exclude one, drain a worker.
	pinned, excluded := ts[10], ts[20]
	loc, err := e.ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: ref("node", pinned.Address)})
	require.NoError(t, err)
	pinTo := "scraper-0"
	if loc.GetRingOwner() == pinTo {
		pinTo = "scraper-1"
	}
	_, err = e.ac.PinTarget(ctx, &shardscrapev1.PinTargetRequest{Target: ref("node", pinned.Address), WorkerId: pinTo})
	require.NoError(t, err)
	_, err = e.ac.ExcludeTarget(ctx, &shardscrapev1.ExcludeTargetRequest{Target: idRef(excluded.ID), Reason: "flaky exporter"})
	require.NoError(t, err)
	dr, err := e.ac.DrainWorker(ctx, &shardscrapev1.DrainWorkerRequest{WorkerId: "scraper-4"})
	require.NoError(t, err)
	require.Equal(t, shardscrapev1.WorkerState_WORKER_STATE_DRAINING, dr.GetWorker().GetState())
	require.NotZero(t, dr.GetMovingTargetCount())
	e.settle(fws...)
	kept := append(append([]relabel.Target{}, ts[:20]...), ts[21:]...)
	before := requireOwnedOnce(t, kept, fws...)
	require.Empty(t, fws[4].owned())
	require.Equal(t, []string{pinTo}, before[pinned.ID])
	checkAdmin := func(e *env) {
		t.Helper()
		loc, err := e.ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: idRef(pinned.ID)})
		require.NoError(t, err)
		require.Equal(t, shardscrapev1.LocateReason_LOCATE_REASON_PINNED, loc.GetReason())
		require.Equal(t, pinTo, loc.GetTarget().GetPinnedWorkerId())
		loc, err = e.ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: idRef(excluded.ID)})
		require.NoError(t, err)
		require.Equal(t, shardscrapev1.LocateReason_LOCATE_REASON_EXCLUDED, loc.GetReason())
		require.Equal(t, "flaky exporter", loc.GetTarget().GetExcludeReason())
		require.Empty(t, loc.GetTarget().GetOwners())
		lw, err := e.ac.ListWorkers(ctx, &shardscrapev1.ListWorkersRequest{})
		require.NoError(t, err)
		require.Equal(t, shardscrapev1.WorkerState_WORKER_STATE_DRAINED, lw.GetWorkers()[4].GetState())
		lt, err := e.ac.ListTargets(ctx, &shardscrapev1.ListTargetsRequest{ExcludedOnly: true})
		require.NoError(t, err)
		require.Len(t, lt.GetTargets(), 1)
	}
	checkAdmin(e)
	genBefore := e.c.gen

	e, fws = restart(t, e, fws, ts)
	e.settle(fws...)
	after := requireOwnedOnce(t, kept, fws...)
	unchanged := 0
	for id, os := range before {
		if after[id][0] == os[0] {
			unchanged++
		}
	}
	require.GreaterOrEqual(t, float64(unchanged), 0.99*float64(len(before)), "assignments unchanged over a restart")
	checkAdmin(e)
	require.Greater(t, e.c.gen, genBefore, "generations never go back")

	// Pause, then a join moves nothing; that survives a restart too.
	_, err = e.ac.PauseRebalancing(ctx, &shardscrapev1.PauseRebalancingRequest{Reason: "incident 42"})
	require.NoError(t, err)
	fws = append(fws, e.join("scraper-5", 0))
	e.settle(fws...)
	require.Empty(t, fws[5].owned(), "paused: a join moves nothing")
	pv, err := e.ac.PreviewRebalance(ctx, &shardscrapev1.PreviewRebalanceRequest{})
	require.NoError(t, err)
	require.NotZero(t, pv.GetMovedTargetCount(), "preview of resuming shows the pending moves")
	// New targets are still placed while paused.
	more := append(append([]relabel.Target{}, ts...), makeTargets("node2", 10)...)
	e.c.UpdateTargets(map[string][]relabel.Target{"node2": more[1000:]})
	e.settle(fws...)
	paused := ownersOf(fws...)
	require.Len(t, paused, len(kept)+10)

	e, fws = restart(t, e, fws, ts)
	e.c.UpdateTargets(map[string][]relabel.Target{"node2": more[1000:]})
	e.settle(fws...)
	require.Equal(t, paused, ownersOf(fws...), "still paused after a restart: nothing moved")
	rs, err := e.ac.RingStatus(ctx, &shardscrapev1.RingStatusRequest{})
	require.NoError(t, err)
	require.True(t, rs.GetRebalancingPaused())
	require.Equal(t, "incident 42", rs.GetPauseReason())
	loc, err = e.ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: idRef(ts[0].ID)})
	require.NoError(t, err)
	if loc.GetRingOwner() == "scraper-5" {
		require.Equal(t, shardscrapev1.LocateReason_LOCATE_REASON_PAUSED, loc.GetReason())
	}

	pv, err = e.ac.PreviewRebalance(ctx, &shardscrapev1.PreviewRebalanceRequest{})
	require.NoError(t, err)
	res, err := e.ac.ResumeRebalancing(ctx, &shardscrapev1.ResumeRebalancingRequest{})
	require.NoError(t, err)
	require.Equal(t, pv.GetMovedTargetCount(), res.GetMovedTargetCount(), "resume moves what the preview said")
	e.settle(fws...)
	require.NotEmpty(t, fws[5].owned())

	// Undrain, unpin, include: all back on the ring.
	_, err = e.ac.UndrainWorker(ctx, &shardscrapev1.UndrainWorkerRequest{WorkerId: "scraper-4"})
	require.NoError(t, err)
	_, err = e.ac.UnpinTarget(ctx, &shardscrapev1.UnpinTargetRequest{Target: idRef(pinned.ID)})
	require.NoError(t, err)
	_, err = e.ac.IncludeTarget(ctx, &shardscrapev1.IncludeTargetRequest{Target: ref("node", excluded.Address)})
	require.NoError(t, err)
	e.settle(fws...)
	requireOwnedOnce(t, more, fws...)
	require.NotEmpty(t, fws[4].owned())
}

func TestPreviewRebalance(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 4)
	ts := makeTargets("node", 2000)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	ctx := context.Background()
	before := e.c.gen

	pv, err := e.ac.PreviewRebalance(ctx, &shardscrapev1.PreviewRebalanceRequest{
		AddWorkers: []*shardscrapev1.WorkerSpec{{Id: "scraper-new"}}, Limit: 5})
	require.NoError(t, err)
	ringDiff := ringMoves(t, ts, []string{"scraper-0", "scraper-1", "scraper-2", "scraper-3"}, []string{"scraper-0", "scraper-1", "scraper-2", "scraper-3", "scraper-new"})
	require.LessOrEqual(t, pv.GetMovedTargetCount(), uint64(ringDiff), "no more than the ring's own diff")
	require.Len(t, pv.GetMoves(), 5)
	require.InDelta(t, 1.0, pv.GetMovedOverIdeal(), 0.2)
	var sum uint64
	for _, c := range pv.GetCounts() {
		sum += c.GetTargetCount()
	}
	require.Equal(t, pv.GetMovedTargetCount(), sum)
	require.Equal(t, before, e.c.gen, "a preview changes nothing")

	removed, err := e.ac.PreviewRebalance(ctx, &shardscrapev1.PreviewRebalanceRequest{RemoveWorkerIds: []string{"scraper-1"}})
	require.NoError(t, err)
	require.Equal(t, uint64(len(fws[1].owned())), removed.GetMovedTargetCount(), "a removal moves the removed worker's targets only")

	// The preview is what the join then does, target by target.
	prev := ownersOf(fws...)
	pv, err = e.ac.PreviewRebalance(ctx, &shardscrapev1.PreviewRebalanceRequest{
		AddWorkers: []*shardscrapev1.WorkerSpec{{Id: "scraper-new"}}, Limit: 10000})
	require.NoError(t, err)
	fws = append(fws, e.join("scraper-new", 0))
	e.settle(fws...)
	next := ownersOf(fws...)
	require.Equal(t, int(pv.GetMovedTargetCount()), countMoved(prev, next))
	for _, m := range pv.GetMoves() {
		require.Equal(t, m.GetFromWorkerId(), prev[m.GetTargetId()][0])
		require.Equal(t, m.GetToWorkerId(), next[m.GetTargetId()][0])
	}
}

func TestListTargetsAndLocate(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 2)
	ts := makeTargets("node", 100)
	// Two targets of one job on one address (different paths).
	twin := ts[5]
	twin.ID++
	twin.Labels = labelsWith(twin.Labels, "__metrics_path__", "/other")
	ts = append(ts, twin)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	ctx := context.Background()

	var all []*shardscrapev1.AssignedTarget
	tok := ""
	for {
		lt, err := e.ac.ListTargets(ctx, &shardscrapev1.ListTargetsRequest{PageSize: 30, PageToken: tok})
		require.NoError(t, err)
		require.Equal(t, uint64(len(ts)), lt.GetTotal())
		all = append(all, lt.GetTargets()...)
		if tok = lt.GetNextPageToken(); tok == "" {
			break
		}
	}
	require.Len(t, all, len(ts))

	lt, err := e.ac.ListTargets(ctx, &shardscrapev1.ListTargetsRequest{Selector: `{__address__=~"10\\.0\\.0\\.1.:9100"}`})
	require.NoError(t, err)
	require.Len(t, lt.GetTargets(), 10)
	lt, err = e.ac.ListTargets(ctx, &shardscrapev1.ListTargetsRequest{WorkerId: "scraper-0", State: stateActive})
	require.NoError(t, err)
	require.Len(t, lt.GetTargets(), len(fws[0].owned()))

	_, err = e.ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: ref("node", twin.Address)})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.Contains(t, err.Error(), "/other")
	loc, err := e.ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: ref("node", ts[0].Address)})
	require.NoError(t, err)
	require.Contains(t, []shardscrapev1.LocateReason{shardscrapev1.LocateReason_LOCATE_REASON_RING, shardscrapev1.LocateReason_LOCATE_REASON_SPILLED}, loc.GetReason())
	require.Len(t, loc.GetTarget().GetOwners(), 1)
	require.NotEmpty(t, loc.GetRingOwner())
	// Spilled targets name their ring owner and bound.
	spilled := 0
	for _, rt := range ts {
		loc, err := e.ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: idRef(rt.ID)})
		require.NoError(t, err)
		if loc.GetReason() == shardscrapev1.LocateReason_LOCATE_REASON_SPILLED {
			spilled++
			require.NotEqual(t, loc.GetRingOwner(), loc.GetTarget().GetOwners()[0].GetWorkerId())
			require.Contains(t, loc.GetDetail(), "at bound")
		}
	}
	t.Logf("%d of %d targets spilled", spilled, len(ts))
}

func TestBadRequestsChangeNothing(t *testing.T) {
	e := newEnv(t, objstore.NewInMemBucket(), nil, Options{})
	fws := startWorkers(e, 2)
	ts := makeTargets("node", 50)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	ctx := context.Background()
	// A superseded lease: fws[1] joins again; its old epoch is stale.
	stale := fws[1].epoch
	fws[1].stop()
	fws[1] = e.join("scraper-1", fws[1].generation())
	e.settle(fws...)

	snapshot := func() string {
		lw, err := e.ac.ListWorkers(ctx, &shardscrapev1.ListWorkersRequest{})
		require.NoError(t, err)
		lt, err := e.ac.ListTargets(ctx, &shardscrapev1.ListTargetsRequest{IncludeUnassigned: true})
		require.NoError(t, err)
		var sb strings.Builder
		for _, w := range lw.GetWorkers() {
			w.LeaseExpireTime, w.LastHeartbeatTime = nil, nil
			sb.WriteString(w.String())
		}
		for _, at := range lt.GetTargets() {
			sb.WriteString(at.String())
		}
		return sb.String()
	}
	before, genBefore := snapshot(), e.c.gen

	for _, tc := range []struct {
		name  string
		call  func() error
		code  codes.Code
		field string
	}{
		{"join empty id", func() error {
			_, err := e.wc.Join(ctx, &shardscrapev1.JoinRequest{})
			return err
		}, codes.InvalidArgument, "worker_id"},
		{"join capacity too big", func() error {
			_, err := e.wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0", Capacity: 1001})
			return err
		}, codes.InvalidArgument, "capacity"},
		{"join negative capacity", func() error {
			_, err := e.wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "x", Capacity: -1})
			return err
		}, codes.InvalidArgument, "capacity"},
		{"join NaN capacity", func() error {
			_, err := e.wc.Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "x", Capacity: math.NaN()})
			return err
		}, codes.InvalidArgument, "capacity"},
		{"heartbeat unknown worker", func() error {
			_, err := e.wc.Heartbeat(ctx, &shardscrapev1.HeartbeatRequest{WorkerId: "nobody", LeaseEpoch: 1})
			return err
		}, codes.FailedPrecondition, "nobody"},
		{"heartbeat stale epoch", func() error {
			_, err := e.wc.Heartbeat(ctx, &shardscrapev1.HeartbeatRequest{WorkerId: "scraper-1", LeaseEpoch: stale})
			return err
		}, codes.FailedPrecondition, "lease_epoch"},
		{"heartbeat future generation", func() error {
			_, err := e.wc.Heartbeat(ctx, &shardscrapev1.HeartbeatRequest{WorkerId: "scraper-0", LeaseEpoch: fws[0].epoch, Generation: 1 << 60})
			return err
		}, codes.InvalidArgument, "generation"},
		{"leave stale epoch", func() error {
			_, err := e.wc.Leave(ctx, &shardscrapev1.LeaveRequest{WorkerId: "scraper-1", LeaseEpoch: stale})
			return err
		}, codes.FailedPrecondition, "lease_epoch"},
		{"watch stale epoch", func() error {
			s, err := e.wc.WatchAssignments(ctx, &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-1", LeaseEpoch: stale})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.FailedPrecondition, "lease_epoch"},
		{"drain unknown worker", func() error {
			_, err := e.ac.DrainWorker(ctx, &shardscrapev1.DrainWorkerRequest{WorkerId: "nobody"})
			return err
		}, codes.NotFound, "nobody"},
		{"drain empty id", func() error {
			_, err := e.ac.DrainWorker(ctx, &shardscrapev1.DrainWorkerRequest{})
			return err
		}, codes.InvalidArgument, "worker_id"},
		{"pin unknown target", func() error {
			_, err := e.ac.PinTarget(ctx, &shardscrapev1.PinTargetRequest{Target: idRef(42), WorkerId: "scraper-0"})
			return err
		}, codes.NotFound, "target"},
		{"pin to unknown worker", func() error {
			_, err := e.ac.PinTarget(ctx, &shardscrapev1.PinTargetRequest{Target: idRef(ts[0].ID), WorkerId: "nobody"})
			return err
		}, codes.NotFound, "worker_id"},
		{"exclude without ref", func() error {
			_, err := e.ac.ExcludeTarget(ctx, &shardscrapev1.ExcludeTargetRequest{})
			return err
		}, codes.InvalidArgument, "target"},
		{"exclude unknown address", func() error {
			_, err := e.ac.ExcludeTarget(ctx, &shardscrapev1.ExcludeTargetRequest{Target: ref("node", "1.2.3.4:1")})
			return err
		}, codes.NotFound, "1.2.3.4:1"},
		{"bad selector", func() error {
			_, err := e.ac.ListTargets(ctx, &shardscrapev1.ListTargetsRequest{Selector: "{__address__=~"})
			return err
		}, codes.InvalidArgument, "selector"},
		{"bad page token", func() error {
			_, err := e.ac.ListTargets(ctx, &shardscrapev1.ListTargetsRequest{PageToken: "zz"})
			return err
		}, codes.InvalidArgument, "page_token"},
		{"preview remove unknown", func() error {
			_, err := e.ac.PreviewRebalance(ctx, &shardscrapev1.PreviewRebalanceRequest{RemoveWorkerIds: []string{"nobody"}})
			return err
		}, codes.NotFound, "remove_worker_ids"},
		{"preview add existing", func() error {
			_, err := e.ac.PreviewRebalance(ctx, &shardscrapev1.PreviewRebalanceRequest{AddWorkers: []*shardscrapev1.WorkerSpec{{Id: "scraper-0"}}})
			return err
		}, codes.InvalidArgument, "add_workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), tc.field)
		})
	}
	require.Equal(t, before, snapshot(), "bad requests changed state")
	require.Equal(t, genBefore, e.c.gen)
	_, err := fws[0].heartbeat()
	require.NoError(t, err)
}

func TestRunSavesStateOnStop(t *testing.T) {
	bucket := objstore.NewInMemBucket()
	e := newEnv(t, bucket, nil, Options{TickInterval: time.Millisecond})
	fws := startWorkers(e, 2)
	ts := makeTargets("node", 20)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.c.Run(ctx) }()
	cancel()
	require.NoError(t, <-done)
	ok, err := bucket.Exists(context.Background(), "coordinator/"+assignmentObject)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = bucket.Exists(context.Background(), "coordinator/"+adminObject)
	require.NoError(t, err)
	require.True(t, ok, "the generation reservation is persisted")
	r, err := bucket.Get(context.Background(), "coordinator/"+assignmentObject)
	require.NoError(t, err)
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	prev, gen, err := decodeAssignment(b)
	require.NoError(t, err)
	require.Len(t, prev, len(ts))
	require.Equal(t, ownersOf(fws...), prev)
	require.NotZero(t, gen)
	_, _, err = decodeAssignment(b[:len(b)-3])
	require.ErrorIs(t, err, errCorrupt)
}
