package main

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

func target(id uint64, job, addr string, st pb.TargetState) *pb.Target {
	return &pb.Target{Id: id, Job: job, State: st, Labels: []*pb.Label{
		{Name: "__address__", Value: addr}, {Name: "__meta_x", Value: "y"},
	}}
}

// decode marshals m as the coordinator sends it and decodes it as the
// simulated workers do.
func decode(t *testing.T, m *pb.WatchAssignmentsResponse) *update {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	var u update
	require.NoError(t, rawCodec{}.Unmarshal(b, &u))
	require.Equal(t, len(b), u.bytes)
	return &u
}

func TestDecodeUpdate(t *testing.T) {
	m := &pb.WatchAssignmentsResponse{
		Generation: 7, BaseGeneration: 5, Partial: true,
		Global:           &pb.GlobalConfig{Hash: "g", Yaml: []byte("global: {}")},
		Configs:          []*pb.ScrapeConfig{{Hash: "h", JobName: "a", Yaml: []byte("job_name: a")}},
		RemovedJobs:      []string{"old"},
		Upserts:          []*pb.Target{target(1, "a", "h1:1", pb.TargetState_TARGET_STATE_INCOMING), target(2, "a", "h2:1", pb.TargetState_TARGET_STATE_UNSPECIFIED)},
		RemovedTargetIds: []uint64{3, 4, 0xffffffffffffffff},
	}
	u := decode(t, m)
	require.Equal(t, uint64(7), u.gen)
	require.Equal(t, uint64(5), u.base)
	require.True(t, u.partial)
	require.False(t, u.snapshot)
	require.Equal(t, []string{"old"}, u.removedJobs)
	require.Equal(t, []uint64{3, 4, 0xffffffffffffffff}, u.removed)
	require.Equal(t, []upsert{{id: 1, job: "a", addr: "h1:1", state: stateIncoming}, {id: 2, job: "a", addr: "h2:1", state: stateActive}}, u.upserts)

	var bad update
	require.Error(t, rawCodec{}.Unmarshal([]byte{0x42, 0x05, 0x01}, &bad), "truncated field")
}

func TestViewApply(t *testing.T) {
	const active, incoming, outgoing = pb.TargetState_TARGET_STATE_ACTIVE, pb.TargetState_TARGET_STATE_INCOMING, pb.TargetState_TARGET_STATE_OUTGOING
	v := newView()

	// A snapshot in two parts, merged.
	p1 := decode(t, &pb.WatchAssignmentsResponse{Generation: 10, Snapshot: true, Partial: true, Upserts: []*pb.Target{target(1, "a", "h1:1", active)}})
	p2 := decode(t, &pb.WatchAssignmentsResponse{Generation: 10, Snapshot: true, Upserts: []*pb.Target{target(2, "b", "h2:1", active), target(3, "b", "h3:1", incoming)}})
	p1.merge(p2)
	res, err := v.apply(p1)
	require.NoError(t, err)
	require.Equal(t, uint64(10), v.gen)
	require.Equal(t, []uint64{3}, res.newIncoming)
	require.ElementsMatch(t, []uint64{1, 2, 3}, res.newScraped)
	require.True(t, res.owning)
	require.Equal(t, [3]int{2, 1, 0}, [3]int{v.active, v.incoming, v.outgoing})

	// A delta on another base is refused and changes nothing.
	_, err = v.apply(decode(t, &pb.WatchAssignmentsResponse{Generation: 12, BaseGeneration: 11, Upserts: []*pb.Target{target(9, "a", "h9:1", active)}}))
	require.ErrorIs(t, err, errBaseMismatch)
	require.Len(t, v.targets, 3)

	// Handoff acked: 3 ACTIVE; 1 moves away (OUTGOING), 2 removed.
	res, err = v.apply(decode(t, &pb.WatchAssignmentsResponse{Generation: 11, BaseGeneration: 10,
		Upserts: []*pb.Target{target(3, "b", "h3:1", active), target(1, "a", "h1:1", outgoing)}, RemovedTargetIds: []uint64{2}}))
	require.NoError(t, err)
	require.Empty(t, res.newIncoming)
	require.Empty(t, res.newScraped)
	require.True(t, res.owning)
	require.Equal(t, [3]int{1, 0, 1}, [3]int{v.active, v.incoming, v.outgoing})

	// Removing an OUTGOING target does not change what the worker holds.
	res, err = v.apply(decode(t, &pb.WatchAssignmentsResponse{Generation: 12, BaseGeneration: 11, RemovedTargetIds: []uint64{1}}))
	require.NoError(t, err)
	require.False(t, res.owning)
	require.Equal(t, [3]int{1, 0, 0}, [3]int{v.active, v.incoming, v.outgoing})

	// A removed job takes its targets.
	_, err = v.apply(decode(t, &pb.WatchAssignmentsResponse{Generation: 13, BaseGeneration: 12, RemovedJobs: []string{"b"}}))
	require.NoError(t, err)
	require.Empty(t, v.targets)

	// A snapshot replaces everything.
	_, err = v.apply(decode(t, &pb.WatchAssignmentsResponse{Generation: 20, Snapshot: true, Upserts: []*pb.Target{target(5, "a", "h5:1", active)}}))
	require.NoError(t, err)
	require.Equal(t, map[uint64]vtarget{5: {job: "a", addr: "h5:1", state: stateActive}}, v.targets)
}

func viewOf(ts ...upsert) *view {
	v := newView()
	for _, t := range ts {
		v.targets[t.id] = vtarget{job: t.job, addr: t.addr, state: t.state}
	}
	return v
}

func TestCheckExactlyOnce(t *testing.T) {
	expected := map[jobAddr]struct{}{{"a", "h1"}: {}, {"a", "h2"}: {}, {"b", "h1"}: {}}
	a1 := upsert{id: 1, job: "a", addr: "h1", state: stateActive}
	a2 := upsert{id: 2, job: "a", addr: "h2", state: stateActive}
	b1 := upsert{id: 3, job: "b", addr: "h1", state: stateActive}
	with := func(u upsert, st uint8) upsert { u.state = st; return u }
	for _, tc := range []struct {
		name  string
		views []*view
		ok    bool
	}{
		{"once each", []*view{viewOf(a1, a2), viewOf(b1)}, true},
		{"outgoing copy allowed", []*view{viewOf(a1, a2), viewOf(b1, with(a1, stateOutgoing))}, true},
		{"gone worker skipped", []*view{nil, viewOf(a1, a2, b1)}, true},
		{"active twice", []*view{viewOf(a1, a2), viewOf(b1, a1)}, false},
		{"handoff pending", []*view{viewOf(a1, a2), viewOf(b1, with(a1, stateIncoming))}, false},
		{"missing", []*view{viewOf(a1), viewOf(b1)}, false},
		{"unexpected", []*view{viewOf(a1, a2, b1, upsert{id: 9, job: "c", addr: "h1", state: stateActive})}, false},
		{"same address twice under two ids", []*view{viewOf(a1, a2, b1, upsert{id: 9, job: "a", addr: "h1", state: stateActive})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := checkExactlyOnce(tc.views, expected)
			require.Equal(t, tc.ok, res.ok, res.problem)
			if tc.ok {
				require.Len(t, res.owners, 3)
			} else {
				require.NotEmpty(t, res.problem)
			}
		})
	}
	res := checkExactlyOnce([]*view{viewOf(a1, a2), viewOf(b1)}, expected)
	require.Equal(t, ownership{1: 0, 2: 0, 3: 1}, res.owners)
}

func TestMoved(t *testing.T) {
	before := ownership{1: 0, 2: 0, 3: 1, 4: 2}
	require.Equal(t, 0, moved(before, before))
	require.Equal(t, 2, moved(before, ownership{1: 3, 2: 0, 3: 1, 4: 3}))
	// A leaver's targets all move; a target only on one side counts.
	require.Equal(t, 2, moved(before, ownership{1: 1, 2: 1, 3: 1, 4: 2}))
	require.Equal(t, 2, moved(before, ownership{1: 0, 2: 0, 3: 1, 5: 2}))
	require.Equal(t, []int{0, 1, 1, 2}, sortedCounts(before, 4))
}
