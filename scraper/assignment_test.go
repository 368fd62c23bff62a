package scraper

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

func tgt(id uint64, job string, s pb.TargetState) *pb.Target {
	return &pb.Target{Id: id, Job: job, State: s, Labels: []*pb.Label{{Name: "__address__", Value: "h:1"}}}
}

func TestAssignmentApply(t *testing.T) {
	base := func() *assignment {
		a := emptyAssignment()
		a.generation = 5
		a.global = &pb.GlobalConfig{Hash: "g"}
		a.configs["a"] = &pb.ScrapeConfig{Hash: "ha", JobName: "a", Yaml: []byte("job_name: a\n")}
		a.configs["b"] = &pb.ScrapeConfig{Hash: "hb", JobName: "b", Yaml: []byte("job_name: b\n")}
		a.targets[1] = tgt(1, "a", active)
		a.targets[2] = tgt(2, "a", incoming)
		a.targets[3] = tgt(3, "b", active)
		a.targets[4] = tgt(4, "b", outgoing)
		return a
	}
	for name, tc := range map[string]struct {
		u             *pb.WatchAssignmentsResponse
		err           error
		targets       []uint64
		noStaleness   []uint64
		configChanged bool
	}{
		"delta on another base": {
			u:   &pb.WatchAssignmentsResponse{Generation: 7, BaseGeneration: 6},
			err: ErrBaseMismatch,
		},
		"unknown config hash": {
			u:   &pb.WatchAssignmentsResponse{Generation: 6, BaseGeneration: 5, Configs: []*pb.ScrapeConfig{{Hash: "new", JobName: "a"}}},
			err: ErrUnknownConfig,
		},
		"known config hash without text": {
			u:       &pb.WatchAssignmentsResponse{Generation: 6, BaseGeneration: 5, Configs: []*pb.ScrapeConfig{{Hash: "ha", JobName: "a"}}},
			targets: []uint64{1, 2, 3, 4},
		},
		"outgoing and removed": {
			u: &pb.WatchAssignmentsResponse{Generation: 6, BaseGeneration: 5,
				Upserts: []*pb.Target{tgt(1, "a", outgoing)}, RemovedTargetIds: []uint64{3, 4}},
			targets:     []uint64{1, 2},
			noStaleness: []uint64{1},
		},
		"removed job": {
			u:             &pb.WatchAssignmentsResponse{Generation: 6, BaseGeneration: 5, RemovedJobs: []string{"b"}},
			targets:       []uint64{1, 2},
			configChanged: true,
		},
		"snapshot leaving targets out": {
			u: &pb.WatchAssignmentsResponse{Generation: 9, Snapshot: true, Global: &pb.GlobalConfig{Hash: "g"},
				Configs: []*pb.ScrapeConfig{{Hash: "ha", JobName: "a"}}, Upserts: []*pb.Target{tgt(2, "a", active)}},
			targets:       []uint64{2},
			noStaleness:   []uint64{1, 3}, // 4 was outgoing already: not scraped
			configChanged: true,
		},
		"new global": {
			u:             &pb.WatchAssignmentsResponse{Generation: 6, BaseGeneration: 5, Global: &pb.GlobalConfig{Hash: "g2"}},
			targets:       []uint64{1, 2, 3, 4},
			configChanged: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			a := base()
			before := proto.Clone(a.snapshot())
			res, err := a.apply(tc.u, map[string][]byte{"ha": []byte("job_name: a\n")})
			require.True(t, proto.Equal(before, a.snapshot()), "apply changed its receiver")
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			var ids []uint64
			for id := range res.next.targets {
				ids = append(ids, id)
			}
			require.ElementsMatch(t, tc.targets, ids)
			var ns []uint64
			for id := range res.noStaleness {
				ns = append(ns, id)
			}
			require.ElementsMatch(t, tc.noStaleness, ns)
			require.Equal(t, tc.configChanged, res.configChanged)
			require.Equal(t, tc.u.Generation, res.next.generation)
			for _, c := range res.next.configs {
				require.NotEmpty(t, c.Yaml)
			}
		})
	}
}

func TestMergeParts(t *testing.T) {
	p1 := &pb.WatchAssignmentsResponse{Generation: 3, Snapshot: true, Partial: true, Global: &pb.GlobalConfig{Hash: "g"},
		Upserts: []*pb.Target{tgt(1, "a", active)}}
	p2 := &pb.WatchAssignmentsResponse{Generation: 3, Snapshot: true, Upserts: []*pb.Target{tgt(2, "a", active)},
		Configs: []*pb.ScrapeConfig{{Hash: "h", JobName: "a"}}}
	m := mergeParts(mergeParts(nil, p1), p2)
	require.False(t, m.Partial)
	require.Len(t, m.Upserts, 2)
	require.Len(t, m.Configs, 1)
	require.Equal(t, "g", m.Global.Hash)
	require.Len(t, p1.Upserts, 1, "merging changed the first part")
}

func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := readState(dir)
	require.NoError(t, err)
	require.Nil(t, s)
	a := emptyAssignment()
	a.generation = 12
	a.global = &pb.GlobalConfig{Hash: "g", Yaml: []byte("global: {}\n")}
	a.configs["a"] = &pb.ScrapeConfig{Hash: "ha", JobName: "a", Yaml: []byte("job_name: a\n")}
	a.targets[1] = tgt(1, "a", incoming)
	require.NoError(t, writeState(dir, a.snapshot()))
	s, err = readState(dir)
	require.NoError(t, err)
	require.True(t, proto.Equal(a.snapshot(), s))
	back, err := emptyAssignment().apply(s, nil)
	require.NoError(t, err)
	require.True(t, proto.Equal(a.snapshot(), back.next.snapshot()))
}
