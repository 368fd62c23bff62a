// Package scraper is the shardscrape worker: it joins the coordinator,
// watches its assignment, feeds its targets to Prometheus's scrape.Manager
// and writes through the tsdb/agent WAL to storage/remote, exactly as a
// Prometheus agent does. It fails static on its persisted assignment when
// the coordinator is away. Without a coordinator it runs one configuration
// file with its own discovery, as a Prometheus agent.
package scraper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/agent"
	"github.com/prometheus/prometheus/util/logging"

	"github.com/shardscrape/shardscrape/internal/promcfg"
	"github.com/shardscrape/shardscrape/internal/targetid"
	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// Defaults for Options.
const (
	DefaultHandoffTimeout = 2 * time.Minute
	DefaultFlushDeadline  = time.Minute
	DefaultBackoffMin     = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultAckPoll        = time.Second
	// DefaultCoordinatorReload is the scrape manager's target reload
	// throttle in coordinator mode (Prometheus's 5s in standalone mode).
	DefaultCoordinatorReload = time.Second
	// DefaultHeartbeat is used until a JoinResponse says otherwise.
	DefaultHeartbeat = 10 * time.Second
)

// Options configures a Worker.
type Options struct {
	// Client is the coordinator's WorkerService. Nil: standalone mode,
	// running ConfigFile.
	Client pb.WorkerServiceClient
	// ConfigFile is the prometheus.yml of standalone mode.
	ConfigFile string

	// WorkerID identifies the worker to the coordinator; empty means
	// $HOSTNAME (the StatefulSet pod name).
	WorkerID string
	// Address is the advertised host:port of the worker's HTTP endpoint.
	Address  string
	Zone     string
	Capacity float64
	Version  string

	// StoragePath holds the agent WAL and the assignment state file.
	StoragePath string
	// Agent configures the WAL; nil means Prometheus agent mode's defaults
	// (DefaultAgentOptions).
	Agent *agent.Options
	// Scrape configures the scrape manager; nil means Prometheus's
	// defaults.
	Scrape *scrape.Options

	// ConfigHook, when set, edits every configuration before it is
	// applied (local remote-write flags replacing remote_write).
	ConfigHook func(*promconfig.Config) error

	// SetGOGC applies the config's runtime.gogc (default 75) to the process,
	// as Prometheus does. A process-wide setting: for binaries.
	SetGOGC bool

	// Leave the coordinator on shutdown (drain). A worker restarting in
	// place may skip it: its lease holds its targets for one TTL.
	LeaveOnShutdown bool
	// HandoffTimeout bounds Leave.
	HandoffTimeout time.Duration
	// FlushDeadline bounds the remote-write flush on shutdown.
	FlushDeadline time.Duration

	// Reconnect backoff, jittered exponential.
	BackoffMin, BackoffMax time.Duration
	// AckPoll is how often incoming targets are checked for their first
	// completed scrape.
	AckPoll time.Duration
}

// DefaultAgentOptions returns the WAL options of Prometheus agent mode's
// flag defaults (snappy compression, default retention and truncation).
func DefaultAgentOptions() *agent.Options {
	o := agent.DefaultOptions()
	o.WALCompression = "snappy"
	o.CheckpointBatchSize = 1000
	return o
}

func (o *Options) applyDefaults() {
	if o.WorkerID == "" {
		o.WorkerID, _ = os.Hostname()
		if h := os.Getenv("HOSTNAME"); h != "" {
			o.WorkerID = h
		}
	}
	if o.Agent == nil {
		o.Agent = DefaultAgentOptions()
	}
	if o.Scrape == nil {
		o.Scrape = &scrape.Options{}
	}
	if o.Scrape.DiscoveryReloadInterval == 0 && o.Client != nil {
		// Incoming targets must start within the coordinator's handoff
		// timeout (by default twice the scrape interval), after this
		// throttle and their scrape offset.
		o.Scrape.DiscoveryReloadInterval = model.Duration(DefaultCoordinatorReload)
	}
	if o.HandoffTimeout <= 0 {
		o.HandoffTimeout = DefaultHandoffTimeout
	}
	if o.FlushDeadline <= 0 {
		o.FlushDeadline = DefaultFlushDeadline
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(DefaultBackoffMax, o.BackoffMin)
	}
	if o.AckPoll <= 0 {
		o.AckPoll = DefaultAckPoll
	}
}

// Worker is one scraper worker. New builds it without starting anything;
// Run runs it until its context ends, then shuts down gracefully.
type Worker struct {
	opts    Options
	logger  *slog.Logger
	reg     prometheus.Registerer
	metrics *workerMetrics

	remote  *remote.Storage
	scrapeM *scrape.Manager
	loads   *loadTracker
	fanout  storage.Storage
	db      atomic.Pointer[agent.DB]
	// wrap, when set (tests), wraps the storage the scrape manager writes to.
	wrap func(storage.AppendableV2) storage.AppendableV2

	tsets chan map[string][]*targetgroup.Group

	// applyMtx serializes updates of the assignment and the configuration.
	applyMtx sync.Mutex
	asg      *assignment
	bodies   map[string][]byte // scrape config text by hash
	cfg      *promconfig.Config

	mtx          sync.Mutex
	ready        bool
	shuttingDown bool
	generation   uint64               // applied
	incoming     map[uint64]time.Time // incoming, not acknowledged yet: since when
	acked        map[uint64]struct{}  // incoming, acknowledged
	acks         []*pb.HandoffAck
	idCache      map[*scrape.Target]targetKeys
	toPersist    *assignment
	persistKick  chan struct{}

	sdMetrics  *discovery.SDMetrics
	discoveryM *discovery.Manager
	reloadCh   chan chan error
}

type targetKeys struct {
	id, labels uint64
}

// New builds a worker. logger and reg may be nil.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	opts.applyDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil && opts.ConfigFile == "" {
		return nil, errors.New("scraper: neither a coordinator client nor a config file")
	}
	if opts.StoragePath == "" {
		return nil, errors.New("scraper: empty storage path")
	}
	if opts.Client != nil && opts.WorkerID == "" {
		return nil, errors.New("scraper: empty worker id and no $HOSTNAME")
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newWorkerMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	w := &Worker{
		opts:        opts,
		logger:      logger,
		reg:         reg,
		metrics:     m,
		tsets:       make(chan map[string][]*targetgroup.Group),
		asg:         emptyAssignment(),
		bodies:      map[string][]byte{},
		incoming:    map[uint64]time.Time{},
		acked:       map[uint64]struct{}{},
		idCache:     map[*scrape.Target]targetKeys{},
		persistKick: make(chan struct{}, 1),
		reloadCh:    make(chan chan error),
	}
	rm := &readyScrapeManager{}
	w.remote = remote.NewStorage(logger.With("component", "remote"), reg, w.startTime, opts.StoragePath, opts.FlushDeadline, rm, opts.Scrape.EnableTypeAndUnitLabels)
	// Run opens the WAL and points the tracker at WAL and remote storage.
	w.loads = newLoadTracker(nil)
	w.scrapeM, err = scrape.NewManager(opts.Scrape, logger.With("component", "scrape manager"), logging.NewJSONFileLogger, nil, w.loads, reg)
	if err != nil {
		return nil, fmt.Errorf("scrape manager: %w", err)
	}
	rm.set(w.scrapeM)
	if opts.Client == nil {
		w.sdMetrics, err = discovery.CreateAndRegisterSDMetrics(reg)
		if err != nil {
			return nil, fmt.Errorf("register discovery metrics: %w", err)
		}
	}
	return w, nil
}

// Ready reports whether the worker has an assignment (or config) in force
// and is not shutting down.
func (w *Worker) Ready() bool {
	w.mtx.Lock()
	defer w.mtx.Unlock()
	return w.ready && !w.shuttingDown
}

func (w *Worker) setReady() {
	w.mtx.Lock()
	w.ready = true
	r := !w.shuttingDown
	w.mtx.Unlock()
	if r {
		w.metrics.ready.Set(1)
	}
}

// Generation returns the generation of the assignment applied.
func (w *Worker) Generation() uint64 {
	w.mtx.Lock()
	defer w.mtx.Unlock()
	return w.generation
}

// ScrapeManager returns the worker's scrape manager (for the targets API).
func (w *Worker) ScrapeManager() *scrape.Manager { return w.scrapeM }

// Run opens the WAL, runs the worker until ctx ends, then shuts down:
// readiness false, Leave (bounded by HandoffTimeout), scraping stopped,
// remote write flushed (bounded by FlushDeadline), WAL closed. It returns
// nil after a clean shutdown.
func (w *Worker) Run(ctx context.Context) error {
	db, err := agent.Open(w.logger.With("component", "agent"), w.reg, w.remote, w.opts.StoragePath, w.opts.Agent)
	if err != nil {
		return fmt.Errorf("open WAL in %s: %w", w.opts.StoragePath, err)
	}
	db.SetWriteNotified(w.remote)
	w.db.Store(db)
	// As Prometheus agent mode: the WAL first, remote storage second.
	w.fanout = storage.NewFanout(w.logger, db, w.remote)
	var app storage.AppendableV2 = w.fanout
	if w.wrap != nil {
		app = w.wrap(app)
	}
	w.loads.inner = app

	// The session outlives ctx: Leave runs on it while the worker drains.
	sessCtx, cancelSess := context.WithCancel(context.Background())
	defer cancelSess()

	var wg sync.WaitGroup
	scrapeDone := make(chan struct{})
	var tsets <-chan map[string][]*targetgroup.Group = w.tsets
	dctx, cancelD := context.WithCancel(sessCtx)
	defer cancelD()
	if w.opts.Client == nil {
		w.discoveryM = discovery.NewManager(dctx, w.logger.With("component", "discovery manager scrape"), w.reg, w.sdMetrics, discovery.Name("scrape"))
		if w.discoveryM == nil {
			_ = w.fanout.Close()
			return errors.New("create discovery manager")
		}
		tsets = w.discoveryM.SyncCh()
	}
	go func() {
		defer close(scrapeDone)
		if err := w.scrapeM.Run(tsets); err != nil {
			w.logger.Error("scrape manager", "err", err)
		}
	}()

	var runErr error
	if w.opts.Client != nil {
		// The persist loop outlives the session, so that the session's last
		// update is written too.
		persistCtx, stopPersist := context.WithCancel(context.Background())
		defer stopPersist()
		persistDone := make(chan struct{})
		go func() {
			defer close(persistDone)
			w.persistLoop(persistCtx)
		}()
		w.loadState()
		var sessionDone = make(chan struct{})
		s := newSession(w)
		wg.Go(func() {
			defer close(sessionDone)
			s.run(sessCtx)
		})
		<-ctx.Done()
		w.beginShutdown()
		drained := false
		if w.opts.LeaveOnShutdown {
			drained = s.leave(w.opts.HandoffTimeout)
		}
		cancelSess()
		<-sessionDone
		stopPersist()
		<-persistDone // the last assignment is on disk
		if drained {
			w.countMovedAway()
			// Every target moved away: nothing to resume after a restart.
			if err := os.Remove(w.statePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
				w.logger.Warn("remove assignment state", "err", err)
			}
		}
	} else {
		runErr = w.runStandalone(ctx, dctx, cancelD)
		w.beginShutdown()
	}

	// Stop order matters: scraping stops before the WAL and remote storage
	// close, so nothing appends to a closed WAL.
	w.scrapeM.Stop()
	<-scrapeDone
	wg.Wait()
	w.waitRemoteWrite()
	if err := w.fanout.Close(); err != nil {
		w.logger.Error("close storage", "err", err)
	}
	w.logger.Info("worker stopped")
	return runErr
}

// waitRemoteWrite waits, at most FlushDeadline, until remote write has
// sent the newest sample appended, so that closing (which stops the WAL
// watchers, then flushes the queues) loses nothing still unread in the WAL.
func (w *Worker) waitRemoteWrite() {
	newest := w.loads.newest.Load()
	cfg := w.CurrentConfig()
	if newest == 0 || cfg == nil || len(cfg.RemoteWriteConfigs) == 0 {
		return
	}
	deadline := time.Now().Add(w.opts.FlushDeadline)
	// Remote storage tracks sent timestamps in whole seconds.
	target := newest - newest%1000
	for w.remote.LowestSentTimestamp() < target {
		if time.Now().After(deadline) {
			w.logger.Warn("remote write did not catch up before the flush deadline", "flush_deadline", w.opts.FlushDeadline,
				"newest_appended", time.UnixMilli(newest), "lowest_sent", time.UnixMilli(w.remote.LowestSentTimestamp()))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Within that second, records written after the one sent: give the WAL
	// watchers a moment to read them, within the deadline.
	time.Sleep(min(time.Second, time.Until(deadline)))
}

func (w *Worker) beginShutdown() {
	w.mtx.Lock()
	w.shuttingDown = true
	w.mtx.Unlock()
	w.metrics.ready.Set(0)
	w.logger.Info("shutting down")
}

func (w *Worker) statePath() string { return w.opts.StoragePath + string(os.PathSeparator) + stateFile }

// loadState resumes the persisted assignment (fail static).
func (w *Worker) loadState() {
	s, err := readState(w.opts.StoragePath)
	if err != nil {
		w.metrics.persistErrors.Inc()
		w.logger.Error("load assignment state; starting empty", "err", err)
		return
	}
	if s == nil {
		return
	}
	if err := w.applyUpdate(s); err != nil {
		w.logger.Error("apply assignment state; starting empty", "err", err)
		return
	}
	w.logger.Info("resumed assignment from local state", "generation", s.Generation, "targets", len(s.Upserts))
}

// applyUpdate applies one complete update (all parts merged): rebuilds
// and applies the configuration when it changed, stops targets leaving
// without staleness markers, hands the scrape manager the new target
// groups, and persists the result.
func (w *Worker) applyUpdate(u *pb.WatchAssignmentsResponse) error {
	w.applyMtx.Lock()
	defer w.applyMtx.Unlock()
	for _, c := range u.Configs {
		if len(c.Yaml) > 0 {
			w.bodies[c.Hash] = c.Yaml
		}
	}
	res, err := w.asg.apply(u, w.bodies)
	if err != nil {
		switch {
		case errors.Is(err, ErrBaseMismatch):
			w.metrics.updatesRejected.WithLabelValues("base_mismatch").Inc()
		case errors.Is(err, ErrUnknownConfig):
			w.metrics.updatesRejected.WithLabelValues("unknown_config").Inc()
		}
		return err
	}
	next := res.next
	cfg := w.cfg
	if res.configChanged || cfg == nil {
		g, jobs := next.promParts()
		cfg, err = promcfg.Build(g, jobs, w.logger)
		if err == nil && w.opts.ConfigHook != nil {
			err = w.opts.ConfigHook(cfg)
		}
		if err != nil {
			w.metrics.configErrors.Inc()
			w.metrics.updatesRejected.WithLabelValues("config").Inc()
			return fmt.Errorf("generation %d: %w", u.Generation, err)
		}
	}
	w.disableStaleness(res.noStaleness)
	if cfg != w.cfg {
		if err := w.applyConfig(cfg); err != nil {
			w.metrics.configErrors.Inc()
			w.metrics.updatesRejected.WithLabelValues("config").Inc()
			return fmt.Errorf("generation %d: %w", u.Generation, err)
		}
		w.cfg = cfg
		// A changed scrape config restarts its pool's loops, and new loops
		// write staleness markers again: disable them on those too.
		w.disableStaleness(res.noStaleness)
	}
	w.tsets <- next.targetGroups()
	w.asg = next

	// Drop config texts no longer in force.
	inForce := map[string]bool{}
	for _, c := range next.configs {
		inForce[c.Hash] = true
	}
	for h := range w.bodies {
		if !inForce[h] {
			delete(w.bodies, h)
		}
	}

	w.trackIncoming(next)
	w.schedulePersist(next)
	w.mtx.Lock()
	w.generation = next.generation
	w.mtx.Unlock()
	w.metrics.generation.Set(float64(next.generation))
	w.metrics.updatesApplied.Inc()
	var active, incoming, outgoing int
	for _, t := range next.targets {
		switch t.State {
		case pb.TargetState_TARGET_STATE_INCOMING:
			incoming++
		case pb.TargetState_TARGET_STATE_OUTGOING:
			outgoing++
		default:
			active++
		}
	}
	w.metrics.targets.WithLabelValues("active").Set(float64(active))
	w.metrics.targets.WithLabelValues("incoming").Set(float64(incoming))
	w.metrics.targets.WithLabelValues("outgoing").Set(float64(outgoing))
	w.setReady()
	w.logger.Debug("assignment applied", "generation", next.generation, "snapshot", u.Snapshot,
		"targets", len(next.targets), "jobs", len(next.configs), "stopped_without_staleness", len(res.noStaleness))
	return nil
}

// schedulePersist hands a to the persist loop, replacing an older one not
// written yet: updates do not wait for the disk, and a burst of them is
// written once.
func (w *Worker) schedulePersist(a *assignment) {
	w.mtx.Lock()
	w.toPersist = a
	w.mtx.Unlock()
	select {
	case w.persistKick <- struct{}{}:
	default:
	}
}

// persistLoop writes scheduled assignments to the state file until ctx
// ends, then writes the last one still pending.
func (w *Worker) persistLoop(ctx context.Context) {
	write := func() {
		w.mtx.Lock()
		a := w.toPersist
		w.toPersist = nil
		w.mtx.Unlock()
		if a == nil {
			return
		}
		if err := writeState(w.opts.StoragePath, a.snapshot()); err != nil {
			w.metrics.persistErrors.Inc()
			w.logger.Error("persist assignment", "err", err)
		}
	}
	for {
		select {
		case <-w.persistKick:
			write()
		case <-ctx.Done():
			write()
			return
		}
	}
}

// applyConfig applies cfg to remote storage and the scrape manager, in
// Prometheus's reload order.
func (w *Worker) applyConfig(cfg *promconfig.Config) error {
	if err := w.remote.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("apply remote write config: %w", err)
	}
	if err := w.scrapeM.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("apply scrape config: %w", err)
	}
	if w.opts.SetGOGC {
		if old := debug.SetGCPercent(cfg.Runtime.GoGC); old != cfg.Runtime.GoGC {
			w.logger.Info("updated GOGC", "old", old, "new", cfg.Runtime.GoGC)
		}
	}
	return nil
}

// trackIncoming notes targets that became incoming, to acknowledge their
// first completed scrape once (they stay incoming in later updates until
// the coordinator has the ack), and forgets those no longer incoming.
func (w *Worker) trackIncoming(a *assignment) {
	now := time.Now()
	isIncoming := func(id uint64) bool {
		t, ok := a.targets[id]
		return ok && t.State == pb.TargetState_TARGET_STATE_INCOMING
	}
	w.mtx.Lock()
	defer w.mtx.Unlock()
	for id := range w.incoming {
		if !isIncoming(id) {
			delete(w.incoming, id)
		}
	}
	for id := range w.acked {
		if !isIncoming(id) {
			delete(w.acked, id)
		}
	}
	for id, t := range a.targets {
		if t.State != pb.TargetState_TARGET_STATE_INCOMING {
			continue
		}
		if _, ok := w.acked[id]; ok {
			continue
		}
		if _, ok := w.incoming[id]; !ok {
			w.incoming[id] = now
		}
	}
}

// scrapeTargets returns the scrape manager's active targets by id, with the
// key of their labels for load lookups. ids are cached per *scrape.Target.
func (w *Worker) scrapeTargets() map[uint64]scrapeTarget {
	active := w.scrapeM.TargetsActive()
	out := map[uint64]scrapeTarget{}
	w.mtx.Lock()
	defer w.mtx.Unlock()
	seen := make(map[*scrape.Target]struct{}, len(w.idCache))
	lb := labels.NewBuilder(labels.EmptyLabels())
	for job, ts := range active {
		for _, t := range ts {
			k, ok := w.idCache[t]
			if !ok {
				k = targetKeys{id: targetid.Of(job, t), labels: labelsKey(t.Labels(lb))}
				w.idCache[t] = k
			}
			seen[t] = struct{}{}
			out[k.id] = scrapeTarget{job: job, t: t, labelsKey: k.labels}
		}
	}
	for t := range w.idCache {
		if _, ok := seen[t]; !ok {
			delete(w.idCache, t)
		}
	}
	return out
}

type scrapeTarget struct {
	job       string
	t         *scrape.Target
	labelsKey uint64
}

// disableStaleness turns off end-of-run staleness markers for the given
// targets (id → job) before the scrape manager drops them.
func (w *Worker) disableStaleness(ids map[uint64]string) {
	if len(ids) == 0 {
		return
	}
	byJob := map[string][]*scrape.Target{}
	for id, st := range w.scrapeTargets() {
		if _, ok := ids[id]; ok {
			byJob[st.job] = append(byJob[st.job], st.t)
		}
	}
	for job, ts := range byJob {
		w.scrapeM.DisableEndOfRunStalenessMarkers(job, ts)
		w.metrics.noStalenessStopped.Add(float64(len(ts)))
	}
}

// countMovedAway counts every running target as stopped without
// staleness markers after a drained Leave: they all moved to new owners.
// Nothing needs disabling: scrape.Manager.Stop cancels the pools' context
// before their loops end, and a loop whose parent context is done writes no
// end-of-run markers (Prometheus v0.316 scrape.go, scrapeLoop.run).
func (w *Worker) countMovedAway() {
	for _, ts := range w.scrapeM.TargetsActive() {
		w.metrics.noStalenessStopped.Add(float64(len(ts)))
	}
}

// collectAcks moves incoming targets whose first scrape completed to the
// pending acks and returns how many there are.
func (w *Worker) collectAcks() int {
	w.mtx.Lock()
	n := len(w.incoming)
	w.mtx.Unlock()
	if n == 0 {
		w.mtx.Lock()
		defer w.mtx.Unlock()
		return len(w.acks)
	}
	targets := w.scrapeTargets()
	w.mtx.Lock()
	defer w.mtx.Unlock()
	for id, since := range w.incoming {
		st, ok := targets[id]
		if !ok {
			continue
		}
		last := st.t.LastScrape()
		if last.IsZero() || last.Before(since) {
			continue
		}
		w.acks = append(w.acks, &pb.HandoffAck{
			TargetId:   id,
			ScrapeTime: timestampPB(last),
			Up:         st.t.Health() == scrape.HealthGood,
		})
		delete(w.incoming, id)
		w.acked[id] = struct{}{}
	}
	return len(w.acks)
}

// takeAcks returns and clears the pending acks.
func (w *Worker) takeAcks() []*pb.HandoffAck {
	w.mtx.Lock()
	defer w.mtx.Unlock()
	a := w.acks
	w.acks = nil
	return a
}

// returnAcks puts back acks a failed heartbeat did not deliver.
func (w *Worker) returnAcks(a []*pb.HandoffAck) {
	if len(a) == 0 {
		return
	}
	w.mtx.Lock()
	defer w.mtx.Unlock()
	w.acks = append(a, w.acks...)
}

// targetLoads returns the load of every target the worker scrapes, by id.
func (w *Worker) targetLoads() map[uint64]*pb.TargetLoad {
	targets := w.scrapeTargets()
	out := make(map[uint64]*pb.TargetLoad, len(targets))
	keep := make(map[uint64]struct{}, len(targets))
	for id, st := range targets {
		keep[st.labelsKey] = struct{}{}
		if st.t.LastScrape().IsZero() {
			continue
		}
		series, _ := w.loads.seriesOf(st.labelsKey)
		out[id] = &pb.TargetLoad{
			TargetId:       id,
			Series:         series,
			ScrapeDuration: durationPB(st.t.LastScrapeDuration()),
			Up:             st.t.Health() == scrape.HealthGood,
		}
	}
	w.loads.forget(keep)
	return out
}

// runStandalone runs the configuration file with the worker's own
// discovery until ctx ends; Reload requests reload it.
func (w *Worker) runStandalone(ctx, dctx context.Context, stopDiscovery context.CancelFunc) error {
	defer stopDiscovery()
	if err := w.reloadFile(); err != nil {
		return err
	}
	dm := w.discoveryM
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dm.Run()
	}()
	defer func() {
		stopDiscovery()
		<-done
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-dctx.Done():
			return nil
		case errc := <-w.reloadCh:
			errc <- w.reloadFile()
		}
	}
}

// Reload reloads the configuration file (standalone mode): SIGHUP and
// POST /-/reload.
func (w *Worker) Reload(ctx context.Context) error {
	if w.opts.ConfigFile == "" || w.opts.Client != nil {
		return errors.New("reload: not in standalone mode")
	}
	errc := make(chan error, 1)
	select {
	case w.reloadCh <- errc:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Worker) reloadFile() (err error) {
	defer func() {
		if err != nil {
			w.metrics.configReloads.WithLabelValues("failure").Inc()
			w.metrics.lastReloadSucceeded.Set(0)
			w.logger.Error("reload config", "file", w.opts.ConfigFile, "err", err)
			return
		}
		w.metrics.configReloads.WithLabelValues("success").Inc()
		w.metrics.lastReloadSucceeded.Set(1)
	}()
	cfg, err := promconfig.LoadFile(w.opts.ConfigFile, true, w.logger)
	if err != nil {
		return fmt.Errorf("load config %s: %w", w.opts.ConfigFile, err)
	}
	if w.opts.ConfigHook != nil {
		if err := w.opts.ConfigHook(cfg); err != nil {
			return fmt.Errorf("config %s: %w", w.opts.ConfigFile, err)
		}
	}
	scfgs, err := cfg.GetScrapeConfigs()
	if err != nil {
		return fmt.Errorf("config %s: %w", w.opts.ConfigFile, err)
	}
	if err := w.applyConfig(cfg); err != nil {
		return err
	}
	sd := make(map[string]discovery.Configs, len(scfgs))
	for _, sc := range scfgs {
		sd[sc.JobName] = sc.ServiceDiscoveryConfigs
	}
	if err := w.discoveryM.ApplyConfig(sd); err != nil {
		return fmt.Errorf("apply discovery config: %w", err)
	}
	w.applyMtx.Lock()
	w.cfg = cfg
	w.applyMtx.Unlock()
	w.setReady()
	return nil
}

// CurrentConfig returns the configuration in force (nil before the first).
func (w *Worker) CurrentConfig() *promconfig.Config {
	w.applyMtx.Lock()
	defer w.applyMtx.Unlock()
	return w.cfg
}

// startTime is remote storage's start time callback: the WAL's, once open.
func (w *Worker) startTime() (int64, error) {
	if db := w.db.Load(); db != nil {
		return db.StartTime()
	}
	return int64(model.Latest), nil
}

// readyScrapeManager hands remote storage the scrape manager (metadata).
type readyScrapeManager struct {
	mtx sync.RWMutex
	m   *scrape.Manager
}

func (r *readyScrapeManager) set(m *scrape.Manager) {
	r.mtx.Lock()
	r.m = m
	r.mtx.Unlock()
}

// Get returns the scrape manager, or ErrNotReady.
func (r *readyScrapeManager) Get() (*scrape.Manager, error) {
	r.mtx.RLock()
	defer r.mtx.RUnlock()
	if r.m == nil {
		return nil, errNotReady
	}
	return r.m, nil
}

var errNotReady = errors.New("not ready")
