// Package coordinator is the core of the shardscrape coordinator: it keeps
// the fleet's membership (leases), places the kept targets on the shardring
// ring, hands moved targets over make before break, streams each worker its
// assignment (WorkerService), serves the admin API (AdminService) and keeps
// its state in object storage.
//
// Discovery and relabeling happen elsewhere: the caller hands the kept
// targets of each job to UpdateTargets and the split configuration to
// ApplyConfig.
package coordinator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/thanos-io/objstore"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
	"github.com/shardscrape/shardscrape/shardring"
)

// Defaults of Options.
const (
	DefaultLeaseTTL        = 15 * time.Second
	DefaultMaxMessageBytes = 4 << 20
	DefaultSaveInterval    = 5 * time.Second
	DefaultTickInterval    = 250 * time.Millisecond
	defaultScrapeInterval  = time.Minute
	// generationReserve is how many generations one write of the
	// high-water mark reserves.
	generationReserve = 1 << 16
)

// Options configure a Coordinator. The zero value means the defaults.
type Options struct {
	// LeaseTTL is how long a worker's lease lasts without a heartbeat
	// (default 15s); workers heartbeat every LeaseTTL/3. It is also the
	// startup grace: after a restart nothing is reassigned until the
	// previous workers joined again or one TTL passed.
	LeaseTTL time.Duration
	// HandoffTimeout bounds a make-before-break move: the old owner stops
	// after the new owner's first scrape or after this. 0: twice the
	// target's scrape interval.
	HandoffTimeout time.Duration
	// ReplicationFactor is the number of owners per target (default 1).
	ReplicationFactor int
	// Ring tunes the consistent-hash ring (virtual nodes, load factor).
	Ring shardring.Options
	// MaxMessageBytes bounds one stream message; larger updates are split
	// into parts (default 4 MiB, gRPC's default receive limit).
	MaxMessageBytes int
	// SaveInterval debounces writes of the assignment (default 5s).
	SaveInterval time.Duration
	// TickInterval is how often Run checks leases and handoff timeouts
	// (default 250ms).
	TickInterval time.Duration
	// Bucket holds the state; nil keeps it in memory only.
	Bucket objstore.Bucket
	// StatePrefix is the object name prefix in Bucket (default "coordinator/").
	StatePrefix string
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LeaseTTL < 0 {
		return o, fmt.Errorf("lease ttl %v must be positive", o.LeaseTTL)
	}
	if o.HandoffTimeout < 0 {
		return o, fmt.Errorf("handoff timeout %v must not be negative", o.HandoffTimeout)
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = 1
	}
	if o.ReplicationFactor < 1 || o.ReplicationFactor > 16 {
		return o, fmt.Errorf("replication factor %d not in [1, 16]", o.ReplicationFactor)
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxMessageBytes < 64<<10 {
		return o, fmt.Errorf("max message bytes %d below 64 KiB", o.MaxMessageBytes)
	}
	if o.SaveInterval == 0 {
		o.SaveInterval = DefaultSaveInterval
	}
	if o.TickInterval == 0 {
		o.TickInterval = DefaultTickInterval
	}
	if o.StatePrefix == "" {
		o.StatePrefix = "coordinator/"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if _, err := shardring.New([]shardring.Member{{ID: "probe"}}, o.Ring); err != nil {
		return o, fmt.Errorf("ring options: %w", err)
	}
	return o, nil
}

// Config is the configuration the coordinator sends workers, already split
// from the user's prometheus.yml by the caller.
type Config struct {
	// Global is sent in every snapshot and whenever its hash changes.
	Global *shardscrapev1.GlobalConfig
	// ScrapeInterval is global.scrape_interval, the fallback for handoff
	// timeouts.
	ScrapeInterval time.Duration
	// Jobs are the scrape configs in force, one per job name.
	Jobs []JobConfig
}

// JobConfig is one job's scrape config.
type JobConfig struct {
	// Config is what workers receive; Config.JobName names the job.
	Config *shardscrapev1.ScrapeConfig
	// ScrapeInterval is the job's scrape interval (0: the global one).
	ScrapeInterval time.Duration
	// ScrapeConfig is the parsed config, optional: with it /api/v1/targets
	// shows relabeled labels and scrape URLs.
	ScrapeConfig *config.ScrapeConfig
}

// Coordinator is the membership, assignment and streaming core. Build it
// with New, serve its gRPC services (Register), call UpdateTargets and
// ApplyConfig as discovery and configuration change, and run Run.
type Coordinator struct {
	opts    Options
	logger  *slog.Logger
	metrics *metrics
	bucket  objstore.Bucket

	mu sync.Mutex
	// changed is closed and replaced on every commit, for waiters (Leave).
	changed chan struct{}

	gen      uint64 // last generation handed out
	genLimit uint64 // generations up to this are reserved in the bucket
	epoch    uint64 // last lease epoch handed out

	workers map[string]*worker
	targets *targetTable
	// jobTargets lists each job's targets, in the order given.
	jobTargets map[string][]*target
	// discovered counts targets before relabeling per job (SetDiscovered).
	discovered map[string]int
	duplicates int

	cfg     Config
	jobCfgs map[string]JobConfig

	admin adminState

	ring     *shardring.Ring // active members; nil when none
	ringSig  string
	lastAsgn *shardring.Assignment

	handoffs map[uint64]*target // targets with an INCOMING owner

	// needReconcile: targets, members or admin state changed since the
	// last reconcile.
	needReconcile bool
	// moves counts targets that got a new owner while having one.
	moves uint64
	// seq numbers target updates (target.seen).
	seq uint64

	dirty       map[*worker]struct{}
	assignDirty bool
	lastSave    time.Time

	// grace is set while the coordinator waits for the previous workers
	// after a restart; prevOwners is the loaded assignment.
	grace      bool
	graceUntil time.Time
	prevOwners map[uint64][]string
	prevIDs    map[string]struct{}
	prevUntil  time.Time

	// Latency from UpdateTargets to every stream sent.
	updStart   time.Time
	updWaiting map[*worker]struct{}
	// onAllSent, when set (benchmarks), is called when the last stream
	// waited for has sent its update.
	onAllSent func()

	scratch []*worker
}

// New builds a Coordinator and loads its state from opts.Bucket. It starts
// no goroutine: call Run.
func New(ctx context.Context, opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Coordinator, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("coordinator options: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Coordinator{
		opts:       opts,
		logger:     logger.With("component", "coordinator"),
		metrics:    newMetrics(reg),
		bucket:     opts.Bucket,
		changed:    make(chan struct{}),
		workers:    map[string]*worker{},
		targets:    newTargetTable(),
		jobTargets: map[string][]*target{},
		discovered: map[string]int{},
		jobCfgs:    map[string]JobConfig{},
		admin:      newAdminState(),
		handoffs:   map[uint64]*target{},
		dirty:      map[*worker]struct{}{},
		updWaiting: map[*worker]struct{}{},
		epoch:      uint64(opts.Now().UnixNano()),
	}
	c.metrics.coordinator = c
	if err := c.load(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Run checks leases and handoff timeouts and saves the assignment until ctx
// ends, then saves it one last time.
func (c *Coordinator) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			saveCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.saveAssignment(saveCtx, true); err != nil {
				c.logger.Error("Save assignment on stop", "err", err)
			}
			return nil
		case <-t.C:
			c.tick()
			if err := c.saveAssignment(ctx, false); err != nil {
				c.logger.Error("Save assignment", "err", err)
			}
		}
	}
}

// tick expires leases, times out handoffs and ends the startup grace.
func (c *Coordinator) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if c.grace && !now.Before(c.graceUntil) {
		c.endGrace()
	}
	if !c.grace && c.prevOwners != nil && now.After(c.prevUntil) {
		c.prevOwners = nil
	}
	for _, w := range c.workers {
		if w.state != shardscrapev1.WorkerState_WORKER_STATE_EXPIRED && now.After(w.leaseExpiry) {
			c.logger.Warn("Lease expired", "worker", w.id)
			c.metrics.leaseExpiries.Inc()
			c.expire(w)
		}
	}
	for _, t := range c.handoffs {
		if now.Before(t.deadline) {
			continue
		}
		for i := range t.slots {
			if t.slots[i].state == shardscrapev1.TargetState_TARGET_STATE_INCOMING {
				t.slots[i].state = shardscrapev1.TargetState_TARGET_STATE_ACTIVE
				c.touch(t.slots[i].w, t)
			}
		}
		c.metrics.handoffsTimedOut.Inc()
		c.settle(t)
	}
	c.reconcile()
	c.commit()
}

// SetDiscovered records how many targets discovery found for job before
// relabeling dropped any, for the coverage metrics.
func (c *Coordinator) SetDiscovered(job string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= 0 {
		delete(c.discovered, job)
		return
	}
	c.discovered[job] = n
}

// UpdateTargets replaces the kept targets of every job in byJob (a job with
// no targets: an empty or nil slice) and reassigns. Jobs not in byJob keep
// their targets. Targets sharing an id keep the first and count the rest as
// duplicates. The targets' label sets must not be modified afterwards.
func (c *Coordinator) UpdateTargets(byJob map[string][]relabel.Target) {
	c.UpdateTargetsSince(byJob, time.Time{})
}

// UpdateTargetsSince is UpdateTargets for targets discovered at since (the
// moment discovery delivered them, before relabeling), so that
// shardscrape_coordinator_assignment_latency_seconds measures discovery to
// every stream sent. A zero since means now.
func (c *Coordinator) UpdateTargetsSince(byJob map[string][]relabel.Target, since time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := since
	if start.IsZero() {
		start = c.opts.Now()
	}
	for job, ts := range byJob {
		c.setJobTargets(job, ts)
	}
	c.needReconcile = true
	c.reconcile()
	if len(c.dirty) > 0 && c.updStart.IsZero() {
		c.updStart = start
	}
	for w := range c.dirty {
		c.updWaiting[w] = struct{}{}
	}
	c.commit()
}

// What setJobTargets' lookup found for a given target.
const (
	foundSame uint8 = iota
	foundChanged
	foundNew
	foundDuplicate
	foundOtherJob
)

func (c *Coordinator) setJobTargets(job string, ts []relabel.Target) {
	old := c.jobTargets[job]
	// Mark the targets seen in this update instead of building a set: a
	// full change of a million targets is one pass over each list.
	c.seq++
	seq := c.seq
	// Look up, update and insert by shard, on every core: the lookups and
	// insertions are cache misses in a table of millions. What needs the
	// workers (touch, seedPrevious) follows in order, on this goroutine.
	found := make([]*target, len(ts))
	how := make([]uint8, len(ts))
	c.targets.eachShard(len(ts), func(shard int, tab *idTable) {
		for i := range ts {
			rt := &ts[i]
			if shardOf(rt.ID) != shard {
				continue
			}
			if rt.Job != job {
				how[i] = foundOtherJob
				continue
			}
			t := tab.get(rt.ID)
			if t == nil {
				t = &target{Target: *rt, interval: intervalOf(rt.Labels), seen: seq}
				t.slots = t.inline[:0]
				tab.put(rt.ID, t)
				found[i], how[i] = t, foundNew
				continue
			}
			if t.seen == seq {
				how[i] = foundDuplicate
				continue
			}
			t.seen = seq
			found[i] = t
			if t.Key != rt.Key || t.Address != rt.Address || !labelsEqual(t, rt) {
				t.Key, t.Address, t.Labels = rt.Key, rt.Address, rt.Labels
				t.interval = intervalOf(rt.Labels)
				how[i] = foundChanged
			}
		}
	})
	kept := make([]*target, 0, len(ts))
	seed := c.prevOwners != nil && !c.grace
	for i, t := range found {
		switch how[i] {
		case foundOtherJob:
			rt := &ts[i]
			c.logger.Warn("Target of another job ignored", "job", job, "target_job", rt.Job, "address", rt.Address)
			continue
		case foundDuplicate:
			c.duplicates++
			continue
		case foundChanged:
			for _, s := range t.slots {
				c.touch(s.w, t)
			}
		case foundNew:
			if seed {
				c.seedPrevious(t)
			}
		}
		kept = append(kept, t)
	}
	var gone []uint64
	for _, t := range old {
		if t.seen != seq {
			c.forget(t)
			gone = append(gone, t.ID)
		}
	}
	c.targets.eachShard(len(gone), func(shard int, tab *idTable) {
		for _, id := range gone {
			if shardOf(id) == shard {
				tab.del(id)
			}
		}
	})
	if len(kept) == 0 {
		delete(c.jobTargets, job)
		return
	}
	c.jobTargets[job] = kept
}

// ApplyConfig replaces the configuration sent to workers; streams send the
// changed scrape configs and removed jobs as a delta.
func (c *Coordinator) ApplyConfig(cfg Config) error {
	jobs := make(map[string]JobConfig, len(cfg.Jobs))
	for i, j := range cfg.Jobs {
		if j.Config == nil || j.Config.GetJobName() == "" {
			return fmt.Errorf("apply config: scrape config %d has no job_name", i)
		}
		if _, dup := jobs[j.Config.GetJobName()]; dup {
			return fmt.Errorf("apply config: duplicate job_name %q", j.Config.GetJobName())
		}
		if j.ScrapeInterval < 0 {
			return fmt.Errorf("apply config: job %q: negative scrape interval", j.Config.GetJobName())
		}
		jobs[j.Config.GetJobName()] = j
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = cfg
	c.jobCfgs = jobs
	for _, w := range c.workers {
		if w.alive() {
			c.markDirty(w)
		}
	}
	c.commit()
	return nil
}

// handoffTimeout returns the handoff timeout for t.
func (c *Coordinator) handoffTimeout(t *target) time.Duration {
	if c.opts.HandoffTimeout > 0 {
		return c.opts.HandoffTimeout
	}
	iv := t.interval
	if iv == 0 {
		iv = c.jobCfgs[t.Job].ScrapeInterval
	}
	if iv == 0 {
		iv = c.cfg.ScrapeInterval
	}
	if iv == 0 {
		iv = defaultScrapeInterval
	}
	return 2 * iv
}

// commit hands out a generation for the changes touched since the last
// commit, wakes their streams and waiters.
func (c *Coordinator) commit() {
	c.settleDrains()
	if len(c.dirty) == 0 {
		return
	}
	c.nextGeneration()
	for w := range c.dirty {
		w.wanted = true
		w.wake()
	}
	clear(c.dirty)
	c.assignDirty = true
	close(c.changed)
	c.changed = make(chan struct{})
}

// nextGeneration advances the generation, reserving a new range in the
// bucket when the reserved one is used up.
func (c *Coordinator) nextGeneration() uint64 {
	c.gen++
	if c.gen > c.genLimit {
		limit := c.gen + generationReserve
		if err := c.saveAdmin(context.Background(), c.admin, limit); err != nil {
			// Keep going: the generation stays monotonic within this
			// process; the next reservation retries the write.
			c.logger.Error("Reserve generations", "err", err)
		} else {
			c.genLimit = limit
		}
	}
	c.metrics.generation.Set(float64(c.gen))
	return c.gen
}
