package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
	"github.com/shardscrape/shardscrape/shardring"
)

func startWorkers(e *env, n int) []*fakeWorker {
	fws := make([]*fakeWorker, n)
	for i := range fws {
		fws[i] = e.join(fmt.Sprintf("scraper-%d", i), 0)
	}
	return fws
}

func requireOwnedOnce(t *testing.T, ts []relabel.Target, fws ...*fakeWorker) map[uint64][]string {
	t.Helper()
	owners := ownersOf(fws...)
	require.Len(t, owners, len(ts))
	for _, rt := range ts {
		require.Len(t, owners[rt.ID], 1, "target %s", rt.Address)
	}
	for _, fw := range fws {
		for id, s := range fw.owned() {
			require.Equal(t, stateActive, s, "%s: target %x", fw.id, id)
		}
	}
	return owners
}

func TestEveryTargetOwnedOnce(t *testing.T) {
	e := newEnv(t, objstore.NewInMemBucket(), nil, Options{})
	fws := startWorkers(e, 5)
	ts := makeTargets("node", 1000)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	owners := requireOwnedOnce(t, ts, fws...)

	// Spread: no worker above the ring's bound.
	counts := map[string]int{}
	for _, os := range owners {
		counts[os[0]]++
	}
	bound := e.c.lastAsgn.Capacity("scraper-0")
	for id, n := range counts {
		require.LessOrEqual(t, n, bound, id)
	}
	require.Equal(t, 1000.0, gaugeOf(t, e, "shardscrape_coordinator_targets_assigned"))
	require.Equal(t, 0.0, gaugeOf(t, e, "shardscrape_coordinator_targets_owned_twice"))
	require.Equal(t, 0.0, gaugeOf(t, e, "shardscrape_coordinator_targets_unassigned"))

	// Targets gone from discovery are removed (staleness) from their owner.
	gone := ts[0]
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts[1:]})
	e.waitSynced(fws...)
	requireOwnedOnce(t, ts[1:], fws...)
	owner := owners[gone.ID][0]
	for _, fw := range fws {
		if fw.id == owner {
			fw.with(func() {
				require.Equal(t, 1, fw.removed[gone.ID])
			})
		}
	}
}

// gaugeOf gathers one metric from the env's registry as a collector.
func gaugeOf(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func labelsWith(ls labels.Labels, name, value string) labels.Labels {
	b := labels.NewBuilder(ls)
	b.Set(name, value)
	return b.Labels()
}

// ringMoves returns the moves shardring's Diff counts between two member sets.
func ringMoves(t *testing.T, ts []relabel.Target, before, after []string) int {
	t.Helper()
	keys := make([]uint64, len(ts))
	for i, rt := range ts {
		keys[i] = rt.Key
	}
	mk := func(ids []string) *shardring.Assignment {
		ms := make([]shardring.Member, len(ids))
		for i, id := range ids {
			ms[i] = shardring.Member{ID: id, Weight: 1}
		}
		r, err := shardring.New(ms, shardring.Options{})
		require.NoError(t, err)
		return r.Assign(keys)
	}
	moves, err := shardring.Diff(mk(before), mk(after))
	require.NoError(t, err)
	return len(moves)
}

func countMoved(a, b map[uint64][]string) int {
	n := 0
	for id, os := range a {
		if len(b[id]) != 1 || b[id][0] != os[0] {
			n++
		}
	}
	return n
}

func TestJoinAndLeaveMoveOnlyTheRingsShare(t *testing.T) {
	e := newEnv(t, objstore.NewInMemBucket(), nil, Options{})
	fws := startWorkers(e, 5)
	ts := makeTargets("node", 1000)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	before := requireOwnedOnce(t, ts, fws...)
	ids5 := []string{"scraper-0", "scraper-1", "scraper-2", "scraper-3", "scraper-4"}

	// Join: the new worker gets about 1/6: what the preview said, no more
	// than the ring's own diff (which also shifts targets between old
	// workers as the bounds cascade), within 1.10 × the fair share.
	pv, err := e.ac.PreviewRebalance(context.Background(), &shardscrapev1.PreviewRebalanceRequest{AddWorkers: []*shardscrapev1.WorkerSpec{{Id: "scraper-5"}}})
	require.NoError(t, err)
	fws = append(fws, e.join("scraper-5", 0))
	e.settle(fws...)
	afterJoin := requireOwnedOnce(t, ts, fws...)
	moved := countMoved(before, afterJoin)
	require.Equal(t, int(pv.GetMovedTargetCount()), moved, "the preview is what a join does")
	require.LessOrEqual(t, moved, ringMoves(t, ts, ids5, append(ids5, "scraper-5")))
	require.LessOrEqual(t, float64(moved), 1.10*1000/6, "moves within 1.10 × the joiner's share")
	require.InDelta(t, 1000.0/6, float64(moved), 1000.0/6*0.25, "about 1/N moves")
	toNew := 0
	for id, os := range afterJoin {
		if before[id][0] != os[0] && os[0] == "scraper-5" {
			toNew++
		}
	}
	require.GreaterOrEqual(t, float64(toNew), 0.9*float64(moved), "a join moves targets to the new worker, bar spills at the bound")
	require.Equal(t, float64(moved), testutil.ToFloat64(e.c.metrics.handoffsStarted))
	require.Equal(t, float64(moved), testutil.ToFloat64(e.c.metrics.handoffsCompleted))

	// Leave: drains make before break, returns drained, moves what the
	// ring says.
	leaver := fws[2]
	type result struct {
		resp *shardscrapev1.LeaveResponse
		err  error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := e.wc.Leave(ctx, &shardscrapev1.LeaveRequest{WorkerId: leaver.id, LeaseEpoch: leaver.epoch})
		res <- result{r, err}
	}()
	rest := append(append([]*fakeWorker{}, fws[:2]...), fws[3:]...)
	var r result
	require.Eventually(t, func() bool {
		for _, fw := range rest {
			fw.ackAll()
		}
		select {
		case r = <-res:
			return true
		default:
			return false
		}
	}, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, r.err)
	require.True(t, r.resp.GetDrained())
	require.Zero(t, r.resp.GetRemainingTargetCount())
	e.settle(rest...)
	afterLeave := requireOwnedOnce(t, ts, rest...)
	ids6 := append(ids5, "scraper-5")
	// A leave moves the leaver's targets and nothing else: the others are
	// under their (looser) bounds and keep what they have.
	left := 0
	for _, os := range afterJoin {
		if os[0] == leaver.id {
			left++
		}
	}
	movedOnLeave := countMoved(afterJoin, afterLeave)
	require.Equal(t, left, movedOnLeave)
	require.LessOrEqual(t, movedOnLeave, ringMoves(t, ts, ids6, []string{"scraper-0", "scraper-1", "scraper-3", "scraper-4", "scraper-5"}))
	// The worker is released: its lease is gone.
	_, err = leaver.heartbeat()
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
}

func TestLeaseExpiryReownsAtOnce(t *testing.T) {
	e := newEnv(t, nil, nil, Options{LeaseTTL: 15 * time.Second})
	fws := startWorkers(e, 3)
	ts := makeTargets("node", 300)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	before := requireOwnedOnce(t, ts, fws...)

	e.clock.Advance(10 * time.Second)
	for _, fw := range fws[:2] {
		_, err := fw.heartbeat()
		require.NoError(t, err)
	}
	e.clock.Advance(6 * time.Second)
	e.c.tick()
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.leaseExpiries))
	// No handoff: the survivors own the dead worker's targets ACTIVE now
	// (the bound may also move a few between survivors, make before break).
	e.waitSynced(fws[:2]...)
	dead := 0
	for id, os := range before {
		if os[0] != "scraper-2" {
			continue
		}
		dead++
		active := 0
		for _, fw := range fws[:2] {
			if fw.state(id) == stateActive {
				active++
			}
		}
		require.Equal(t, 1, active, "target %x of the dead worker", id)
	}
	require.NotZero(t, dead)
	e.settle(fws[:2]...)
	requireOwnedOnce(t, ts, fws[:2]...)
	// The dead worker's stream ends; its lease is gone.
	<-fws[2].done
	_, err := fws[2].heartbeat()
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	lw, err := e.ac.ListWorkers(context.Background(), &shardscrapev1.ListWorkersRequest{})
	require.NoError(t, err)
	require.Equal(t, shardscrapev1.WorkerState_WORKER_STATE_EXPIRED, lw.GetWorkers()[2].GetState())

	// It may join again and gets its share back, make before break.
	fw := e.join("scraper-2", 0)
	fws = append(fws[:2], fw)
	e.settle(fws...)
	requireOwnedOnce(t, ts, fws...)
}

func TestHandoffAckThenOutgoingThenRemoved(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	a := e.join("a", 0)
	ts := makeTargets("node", 50)
	for i := range ts {
		ts[i].Labels = labelsWith(ts[i].Labels, "__scrape_interval__", "10s")
	}
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(a)
	b := e.join("b", 0)
	e.waitSynced(a, b)
	incoming := b.owned()
	require.NotEmpty(t, incoming)
	var id uint64
	for tid, s := range incoming {
		require.Equal(t, stateIncoming, s)
		require.Equal(t, stateActive, a.state(tid), "the old owner keeps scraping")
		id = tid
	}
	require.Equal(t, float64(len(incoming)), gaugeOf(t, e, "shardscrape_coordinator_targets_owned_twice"))

	// b acknowledges one: a gets it OUTGOING (no staleness), b ACTIVE.
	_, err := b.heartbeat(id)
	require.NoError(t, err)
	e.waitSynced(a, b)
	require.Equal(t, stateOutgoing, a.state(id))
	require.Equal(t, stateActive, b.state(id))
	a.with(func() {
		require.Zero(t, a.removed[id])
	})
	// a reports the generation that made it outgoing: removed.
	_, err = a.heartbeat()
	require.NoError(t, err)
	e.waitSynced(a, b)
	require.Equal(t, stateNew, a.state(id))
	a.with(func() {
		require.Equal(t, 1, a.removed[id])
	})
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.handoffsCompleted))

	// Timeout: 2 × the target's 10s interval.
	e.clock.Advance(19 * time.Second)
	_, err = a.heartbeat()
	require.NoError(t, err)
	_, err = b.heartbeat()
	require.NoError(t, err)
	e.c.tick()
	e.waitSynced(a, b)
	require.Contains(t, b.owned(), anyIncoming(incoming, id))
	require.Equal(t, stateIncoming, b.state(anyIncoming(incoming, id)))
	e.clock.Advance(2 * time.Second)
	e.c.tick()
	e.waitSynced(a, b)
	for tid := range incoming {
		require.Equal(t, stateActive, b.state(tid))
		if tid != id {
			require.Equal(t, stateOutgoing, a.state(tid))
		}
	}
	require.Equal(t, float64(len(incoming)-1), testutil.ToFloat64(e.c.metrics.handoffsTimedOut))
	_, err = a.heartbeat()
	require.NoError(t, err)
	e.waitSynced(a, b)
	requireOwnedOnce(t, ts, a, b)
	for tid := range incoming {
		require.Equal(t, stateNew, a.state(tid))
	}
}

func anyIncoming(m map[uint64]shardscrapev1.TargetState, not uint64) uint64 {
	for id := range m {
		if id != not {
			return id
		}
	}
	return 0
}

// TestOwnedListFollowsSlots removes targets from the middle of the workers'
// owned lists, moves them between workers and expires a worker, checking the
// lists against the slots after each step.
func TestOwnedListFollowsSlots(t *testing.T) {
	e := newEnv(t, nil, nil, Options{})
	fws := startWorkers(e, 3)
	ts := makeTargets("node", 300)
	check := func() {
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		e.checkOwned()
	}
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	e.settle(fws...)
	check()
	var kept []relabel.Target
	for i, tg := range ts {
		if i%3 == 1 { // two thirds removed: later adds compact the lists
			kept = append(kept, tg)
		}
	}
	e.c.UpdateTargets(map[string][]relabel.Target{"node": kept})
	check()
	e.settle(fws...)
	requireOwnedOnce(t, kept, fws...)
	fws = append(fws, e.join("w-extra", 0))
	e.settle(fws...)
	check()
	requireOwnedOnce(t, kept, fws...)
	e.clock.Advance(e.c.opts.LeaseTTL + time.Second)
	for _, fw := range fws[1:] {
		_, err := fw.heartbeat()
		require.NoError(t, err)
	}
	e.c.tick()
	check()
	e.settle(fws[1:]...)
	requireOwnedOnce(t, kept, fws[1:]...)
}

// A coordinator whose bucket lost its state (a fail-over onto a replica
// with an empty or older store) meets workers holding newer generations.
// Generations only increase (the contract): it continues above the newest
// one a worker brings, so their heartbeats stay valid and every later
// update is newer than anything a worker holds.
func TestGenerationContinuesAboveWhatWorkersHold(t *testing.T) {
	e := newEnv(t, objstore.NewInMemBucket(), nil, Options{})
	ts := makeTargets("node", 50)
	e.c.UpdateTargets(map[string][]relabel.Target{"node": ts})
	const held = 1000
	fw := e.join("scraper-0", held)
	// Before its snapshot arrives the worker still reports what it holds.
	_, err := e.wc.Heartbeat(context.Background(), &shardscrapev1.HeartbeatRequest{WorkerId: fw.id, LeaseEpoch: fw.epoch, Generation: held})
	require.NoError(t, err)
	e.settle(fw)
	require.Greater(t, fw.generation(), uint64(held))
	requireOwnedOnce(t, ts, fw)
	_, err = fw.heartbeat()
	require.NoError(t, err)
}
