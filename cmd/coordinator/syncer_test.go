package main

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/relabel"
)

// fakePipeline keeps every discovered target.
type fakePipeline struct{}

func (fakePipeline) ApplyScrapeConfigs([]*config.ScrapeConfig) {}

func (fakePipeline) Update(job string, groups []*targetgroup.Group) ([]relabel.Target, []error, bool) {
	var out []relabel.Target
	for _, g := range groups {
		for _, t := range g.Targets {
			out = append(out, relabel.Target{Job: job, Address: string(t[model.AddressLabel])})
		}
	}
	return out, nil, true
}

type fakeSink struct {
	mu    sync.Mutex
	jobs  map[string][]relabel.Target
	sends map[string]int // updates per job
}

func (s *fakeSink) updateTargets(byJob map[string][]relabel.Target, _ map[string]int, _ time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for job, ts := range byJob {
		if s.sends == nil {
			s.sends = map[string]int{}
		}
		s.sends[job]++
		if len(ts) == 0 {
			delete(s.jobs, job)
			continue
		}
		s.jobs[job] = ts
	}
}

func (s *fakeSink) count(job string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs[job])
}

func (s *fakeSink) has(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.jobs[job]
	return ok
}

func configWithJobs(t *testing.T, jobs ...string) []*config.ScrapeConfig {
	t.Helper()
	text := "scrape_configs:\n"
	for _, j := range jobs {
		text += "- job_name: " + j + "\n"
	}
	cfg, err := config.Load(text, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	scs, err := cfg.GetScrapeConfigs()
	require.NoError(t, err)
	return scs
}

func groups(addrs ...string) []*targetgroup.Group {
	g := &targetgroup.Group{Source: "0"}
	for _, a := range addrs {
		g.Targets = append(g.Targets, model.LabelSet{model.AddressLabel: model.LabelValue(a)})
	}
	return []*targetgroup.Group{g}
}

func TestSyncerRemovedJobLosesItsTargets(t *testing.T) {
	sink := &fakeSink{jobs: map[string][]relabel.Target{}}
	s := newSyncer(fakePipeline{}, sink, slog.New(slog.DiscardHandler))
	s.applyConfig(configWithJobs(t, "a", "b"))
	s.update(map[string][]*targetgroup.Group{"a": groups("x:1", "y:1"), "b": groups("z:1")})
	require.Equal(t, 2, sink.count("a"))
	require.Equal(t, 1, sink.count("b"))

	// Groups of a job that is not configured are ignored.
	s.update(map[string][]*targetgroup.Group{"c": groups("w:1")})
	require.False(t, sink.has("c"))

	s.applyConfig(configWithJobs(t, "b"))
	require.False(t, sink.has("a"))
	require.Equal(t, 1, sink.count("b"))
}

func TestSyncerProceedsWhenPodIndexDoesNotSync(t *testing.T) {
	sink := &fakeSink{jobs: map[string][]relabel.Target{}}
	s := newSyncer(fakePipeline{}, sink, slog.New(slog.DiscardHandler))
	s.podSyncTimeout = 50 * time.Millisecond
	s.applyConfig(configWithJobs(t, "a"))

	syncCh := make(chan map[string][]*targetgroup.Group, 1)
	syncCh <- map[string][]*targetgroup.Group{"a": groups("x:1")}
	never := func(ctx context.Context) bool { <-ctx.Done(); return false }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.run(ctx, syncCh, never, make(chan struct{})) }()
	require.Eventually(t, func() bool { return sink.count("a") == 1 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

// With the real pipeline, a job whose groups did not change is not sent
// again; a changed one, a reload and a removed job are.
func TestSyncerSendsOnlyChangedJobs(t *testing.T) {
	p, err := relabel.NewPipeline(relabel.PipelineOptions{}, nil, nil)
	require.NoError(t, err)
	sink := &fakeSink{jobs: map[string][]relabel.Target{}}
	s := newSyncer(p, sink, slog.New(slog.DiscardHandler))
	s.applyConfig(configWithJobs(t, "a", "b"))
	a, b := groups("x:1", "y:1"), groups("z:1")
	s.update(map[string][]*targetgroup.Group{"a": a, "b": b})
	require.Equal(t, map[string]int{"a": 1, "b": 1}, sink.sends)

	// Discovery sends every job; only a changed.
	s.update(map[string][]*targetgroup.Group{"a": groups("x:1", "y:1", "w:1"), "b": b})
	require.Equal(t, map[string]int{"a": 2, "b": 1}, sink.sends)
	require.Equal(t, 3, sink.count("a"))
	require.Equal(t, 1, sink.count("b"))

	// Same content in new groups: nothing sent.
	s.update(map[string][]*targetgroup.Group{"a": groups("x:1", "y:1", "w:1"), "b": groups("z:1")})
	require.Equal(t, map[string]int{"a": 2, "b": 1}, sink.sends)

	// A reload of the same config sends nothing; one that changes a's
	// scrape config re-runs and sends a.
	s.applyConfig(configWithJobs(t, "a", "b"))
	require.Equal(t, map[string]int{"a": 2, "b": 1}, sink.sends)
	scs := configWithJobs(t, "a", "b")
	scs[0].MetricsPath = "/other"
	s.applyConfig(scs)
	require.Equal(t, map[string]int{"a": 3, "b": 1}, sink.sends)
	require.Equal(t, 3, sink.count("a"))

	// A job's source gone: sent, empty.
	s.update(map[string][]*targetgroup.Group{"a": {}, "b": b})
	require.Equal(t, map[string]int{"a": 4, "b": 1}, sink.sends)
	require.False(t, sink.has("a"))

	// A job removed from the config: its targets go, although discovery
	// no longer mentions it and b did not change.
	s.update(map[string][]*targetgroup.Group{"a": groups("x:1"), "b": b})
	require.True(t, sink.has("a"))
	s.applyConfig(configWithJobs(t, "b"))
	s.update(map[string][]*targetgroup.Group{"b": b})
	require.False(t, sink.has("a"), "a removed job's targets must be withdrawn")
	require.Equal(t, 1, sink.sends["b"])
}
