package relabel

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/require"
)

// requireSameAsPrometheus checks ts against scrape.TargetsFromGroup on
// groups, and against a cold run of a fresh pipeline.
func requireSameAsPrometheus(t *testing.T, p *Pipeline, job string, groups []*targetgroup.Group, ts []Target) {
	t.Helper()
	want, _ := prometheusTargets(t, job, p.ScrapeConfig(job), groups)
	require.Len(t, ts, len(want))
	for _, tt := range ts {
		_, ok := want[tt.ID]
		require.True(t, ok, "target %s not Prometheus's", tt.Labels)
	}
	cold, err := NewPipeline(PipelineOptions{Parallelism: p.opts.Parallelism}, nil, nil)
	require.NoError(t, err)
	cold.ApplyScrapeConfigs([]*config.ScrapeConfig{p.ScrapeConfig(job)})
	coldTs, _ := cold.Targets(job, groups)
	require.ElementsMatch(t, coldTs, ts)
}

func TestPipelineRelabelsOnlyChangedGroups(t *testing.T) {
	p := newPipeline(t, prometheus.NewRegistry(), PipelineOptions{Parallelism: 2}, pipelineYAML)
	groups := make([]*targetgroup.Group, 50)
	for g := range groups {
		groups[g] = consulGroup(fmt.Sprintf("svc-%d", g), 20, func(i int) string { return ipOf(g*20 + i) })
	}
	ts, errs, changed := p.Update("app", groups)
	require.True(t, changed)
	_, failed := prometheusTargets(t, "app", p.ScrapeConfig("app"), groups)
	require.Len(t, errs, failed)
	require.Equal(t, int64(1000), p.relabeled.Load())
	requireSameAsPrometheus(t, p, "app", groups, ts)

	// The same groups (pointers), in another order: nothing relabeled,
	// nothing changed; Targets gives the same targets.
	rev := append([]*targetgroup.Group(nil), groups...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	again, errs, changed := p.Update("app", rev)
	require.False(t, changed)
	require.Nil(t, again)
	require.Nil(t, errs)
	require.Equal(t, int64(1000), p.relabeled.Load())
	same, _ := p.Targets("app", groups)
	require.Equal(t, ts, same)
	require.Equal(t, int64(1000), p.relabeled.Load())

	// Equal content in new groups: hashed, not relabeled.
	copies := make([]*targetgroup.Group, len(groups))
	for g := range groups {
		copies[g] = consulGroup(fmt.Sprintf("svc-%d", g), 20, func(i int) string { return ipOf(g*20 + i) })
	}
	_, _, changed = p.Update("app", copies)
	require.False(t, changed)
	require.Equal(t, int64(1000), p.relabeled.Load())

	// One group changed (a new group, as discovery gives it): that group
	// alone is relabeled.
	groups[7] = consulGroup("svc-7", 30, func(i int) string { return ipOf(100_000 + i) })
	ts, _, changed = p.Update("app", groups)
	require.True(t, changed)
	require.Equal(t, int64(1030), p.relabeled.Load())
	requireSameAsPrometheus(t, p, "app", groups, ts)

	// A source gone: its targets go, nothing relabeled.
	gone := append(append([]*targetgroup.Group(nil), groups[:7]...), groups[8:]...)
	ts, _, changed = p.Update("app", gone)
	require.True(t, changed)
	require.Equal(t, int64(1030), p.relabeled.Load())
	requireSameAsPrometheus(t, p, "app", gone, ts)
	for _, tt := range ts {
		require.NotEqual(t, "svc-7", tt.Labels.Get("__meta_consul_service"))
	}
	// ... and back: relabeled again (evicted from the cache).
	ts, _, changed = p.Update("app", groups)
	require.True(t, changed)
	require.Equal(t, int64(1060), p.relabeled.Load())
	requireSameAsPrometheus(t, p, "app", groups, ts)

	// A reload of the same config relabels nothing; a changed config
	// (another scrape interval) everything, then nothing again.
	require.NoError(t, p.ApplyConfig(loadConfig(t, pipelineYAML)))
	_, _, changed = p.Update("app", groups)
	require.False(t, changed)
	require.Equal(t, int64(1060), p.relabeled.Load())
	require.NoError(t, p.ApplyConfig(loadConfig(t, strings.Replace(pipelineYAML, "15s", "20s", 1))))
	ts, _, changed = p.Update("app", groups)
	require.True(t, changed)
	require.Equal(t, int64(1060+1010), p.relabeled.Load())
	requireSameAsPrometheus(t, p, "app", groups, ts)
	_, _, changed = p.Update("app", groups)
	require.False(t, changed)

	// A group emptied of targets (discovery sends it so) is gone too.
	groups[3] = &targetgroup.Group{Source: "svc-3"}
	ts, _, changed = p.Update("app", groups)
	require.True(t, changed)
	requireSameAsPrometheus(t, p, "app", groups, ts)
}

func TestPipelineRelabelsChangedPods(t *testing.T) {
	ip := "10.9.0.1"
	pods := staticPods{ip: newPod(podAt("ns", "web-0", "n1", ip, nil), ip)}
	p := newPipeline(t, nil, PipelineOptions{Pods: pods}, pipelineYAML)
	groups := []*targetgroup.Group{consulGroup("web", 4, func(int) string { return ip })}
	ts, _, changed := p.Update("app", groups)
	require.True(t, changed)
	require.Equal(t, "web-0", ts[0].Labels.Get(MetaPodName))
	_, _, changed = p.Update("app", groups)
	require.False(t, changed)

	// Same group, another pod at its IP: relabeled.
	pods[ip] = newPod(podAt("ns", "web-1", "n1", ip, nil), ip)
	ts, _, changed = p.Update("app", groups)
	require.True(t, changed)
	require.Equal(t, "web-1", ts[0].Labels.Get(MetaPodName))
}

// One group larger than a chunk runs on every goroutine, its targets in
// order, as Prometheus makes them.
func TestPipelineSplitsLargeGroups(t *testing.T) {
	const n = 5*2048 + 17
	tg := consulGroup("big", n, ipOf)
	one := newPipeline(t, nil, PipelineOptions{Parallelism: 1}, pipelineYAML)
	four := newPipeline(t, nil, PipelineOptions{Parallelism: 4}, pipelineYAML)
	want, _ := one.Targets("app", []*targetgroup.Group{tg})
	got, _ := four.Targets("app", []*targetgroup.Group{tg})
	require.Equal(t, want, got)
	requireSameAsPrometheus(t, four, "app", []*targetgroup.Group{tg}, got)
	// Read again (a new group, the same content): hashed in chunks, equal
	// to the hash taken while relabeling, so nothing is relabeled.
	before := four.relabeled.Load()
	_, _, changed := four.Update("app", []*targetgroup.Group{consulGroup("big", n, ipOf)})
	require.False(t, changed)
	require.Equal(t, before, four.relabeled.Load())
	require.Equal(t, groupHash(tg), four.jobs["app"].cache["big"].hash)
	// Kept in discovery order.
	next := 0
	for _, tt := range got {
		addr := tt.Labels.Get(model.AddressLabel)
		for next < n && string(tg.Targets[next][model.AddressLabel]) != addr {
			next++
		}
		require.Less(t, next, n, "target %s out of order", addr)
	}
}

// Targets found in three groups are kept once, the same one whatever the
// order, and the cached groups are left whole.
func TestPipelineDuplicatesInThreeGroups(t *testing.T) {
	p := newPipeline(t, nil, PipelineOptions{Parallelism: 2}, pipelineYAML)
	a := consulGroup("web", 40, ipOf)
	b := consulGroup("web", 40, ipOf)
	b.Source = "web-b"
	b.Labels["__meta_consul_dc"] = "dc0" // sorts first: b's wins
	c := consulGroup("web", 40, ipOf)
	c.Source = "web-c"
	c.Labels["__meta_consul_dc"] = "dc2"
	want, _ := p.Targets("app", []*targetgroup.Group{b})
	for _, order := range [][]*targetgroup.Group{{a, b, c}, {c, a, b}, {b, c, a}} {
		got, _ := p.Targets("app", order)
		require.ElementsMatch(t, want, got)
		only, _ := p.Targets("app", []*targetgroup.Group{order[0]})
		require.Len(t, only, len(want), "the first group's cached targets are whole")
	}
}
