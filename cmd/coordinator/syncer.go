package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"

	"github.com/shardscrape/shardscrape/relabel"
)

// defaultPodSyncTimeout bounds the wait for the pod index's initial list.
const defaultPodSyncTimeout = time.Minute

// targetPipeline is relabel.Pipeline as the syncer uses it.
type targetPipeline interface {
	// ApplyScrapeConfigs takes every job's scrape config.
	ApplyScrapeConfigs(scs []*config.ScrapeConfig)
	// Update returns the kept targets of job's discovered groups and the
	// relabeling failures, or changed false when they are those of its
	// previous run (every group unchanged: only changed groups are
	// relabeled).
	Update(job string, groups []*targetgroup.Group) (ts []relabel.Target, errs []error, changed bool)
}

var _ targetPipeline = (*relabel.Pipeline)(nil)

// targetSink is where the syncer sends each job's kept targets (the host).
type targetSink interface {
	// since is when discovery delivered the update (zero for pod changes
	// and reloads), for the core's latency histogram.
	updateTargets(byJob map[string][]relabel.Target, discovered map[string]int, since time.Time)
}

// syncer runs discovery's target groups through the pipeline into the
// coordinator core: on every discovery update, on every pod change (pod
// enrichment) and after a configuration reload.
type syncer struct {
	pipeline targetPipeline
	sink     targetSink
	logger   *slog.Logger
	// podSyncTimeout bounds the wait for the pod index at start.
	podSyncTimeout time.Duration

	mu     sync.Mutex
	jobs   map[string]struct{}             // jobs of the configuration in force
	groups map[string][]*targetgroup.Group // latest from discovery, per job
	sent   map[string]struct{}             // jobs with targets sent
}

func newSyncer(p targetPipeline, sink targetSink, logger *slog.Logger) *syncer {
	return &syncer{
		pipeline: p, sink: sink, logger: logger, podSyncTimeout: defaultPodSyncTimeout,
		jobs: map[string]struct{}{}, groups: map[string][]*targetgroup.Group{}, sent: map[string]struct{}{},
	}
}

// applyConfig applies a configuration to the pipeline and re-runs every
// job: relabel_configs may have changed, and removed jobs lose their
// targets. Call it before the discovery manager gets the configuration.
func (s *syncer) applyConfig(scs []*config.ScrapeConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pipeline.ApplyScrapeConfigs(scs)
	s.jobs = make(map[string]struct{}, len(scs))
	for _, sc := range scs {
		s.jobs[sc.JobName] = struct{}{}
	}
	s.resyncLocked(nil, time.Time{})
}

// update takes a discovery update (every job's groups, as
// discovery.Manager's SyncCh sends them) and re-runs the jobs in it.
func (s *syncer) update(tgs map[string][]*targetgroup.Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	since := time.Now()
	for job, groups := range tgs {
		s.groups[job] = groups
	}
	s.resyncLocked(tgs, since)
}

// resync re-runs every job (pods changed).
func (s *syncer) resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resyncLocked(nil, time.Time{})
}

// resyncLocked re-runs the jobs in only (all of them when nil), sends
// those whose targets changed, and empties jobs no longer configured.
func (s *syncer) resyncLocked(only map[string][]*targetgroup.Group, since time.Time) {
	byJob := map[string][]relabel.Target{}
	discovered := map[string]int{}
	for job := range s.sent {
		if _, ok := s.jobs[job]; !ok {
			byJob[job] = nil
			delete(s.sent, job)
			delete(s.groups, job)
		}
	}
	for job, groups := range s.groups {
		if _, ok := s.jobs[job]; !ok {
			delete(s.groups, job)
			continue
		}
		if only != nil {
			if _, ok := only[job]; !ok {
				continue
			}
		}
		ts, errs, changed := s.pipeline.Update(job, groups)
		if !changed {
			// The sink has them: discovery sends every job on every
			// update, most of them unchanged.
			continue
		}
		if len(errs) > 0 {
			s.logger.Warn("Targets dropped by relabeling errors", "job", job, "count", len(errs), "err", errs[0])
		}
		n := 0
		for _, g := range groups {
			if g != nil {
				n += len(g.Targets)
			}
		}
		byJob[job], discovered[job] = ts, n
		s.sent[job] = struct{}{}
	}
	if len(byJob) > 0 {
		s.sink.updateTargets(byJob, discovered, since)
	}
}

// run feeds discovery updates and pod changes until ctx ends. With pod
// enrichment (podsSynced and podChanged not nil) it first waits for the
// pod index's initial list, so that targets are not assigned without
// their pod labels and then moved when those arrive (the labels are part
// of a target's identity).
func (s *syncer) run(ctx context.Context, syncCh <-chan map[string][]*targetgroup.Group, podsSynced func(context.Context) bool, podChanged <-chan struct{}) error {
	if podsSynced != nil {
		s.logger.Info("Waiting for the pod index to sync", "timeout", s.podSyncTimeout)
		wctx, cancel := context.WithTimeout(ctx, s.podSyncTimeout)
		synced := podsSynced(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case synced:
			s.logger.Info("Pod index synced")
		default:
			// Fail static: assign without pod labels rather than not at
			// all; they follow when the index fills (podChanged).
			s.logger.Warn("Pod index not synced in time; assigning targets without pod labels until it is", "timeout", s.podSyncTimeout)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case tgs := <-syncCh:
			start := time.Now()
			s.update(tgs)
			s.logger.Debug("Discovery update applied", "jobs", len(tgs), "duration", time.Since(start))
		case <-podChanged:
			s.resync()
		}
	}
}
