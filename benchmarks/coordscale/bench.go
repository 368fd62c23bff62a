package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/shardscrape/shardscrape/internal/fleet"
	"github.com/shardscrape/shardscrape/internal/testenv"
)

// Scenario names (-scenario).
const (
	scenarioAll    = "all"
	scenarioK8s    = "k8s"
	scenarioStatic = "static"
)

// options are the benchmark's settings (flags).
type options struct {
	bin            string // directory holding the coordinator binary
	out            string
	scenario       string
	workers        int
	nodes          int
	podsPerNode    int
	staticTargets  int
	updateInterval time.Duration
	leaseTTL       time.Duration // passed to the coordinator when set
	ackPoll        time.Duration
	idle           time.Duration
	timeout        time.Duration // per wait (full assignment, each event)
	logDir         string        // keeps the coordinator's output there when set
	// settle: a state counts as converged once no view changed for this
	// long after it (later moves, e.g. after heartbeats' loads, would
	// show).
	settle time.Duration
	logger *slog.Logger
}

// totals sums the live views' counts.
type totals struct {
	active, incoming, outgoing int
}

// eventFigures are the figures of one membership change.
type eventFigures struct {
	kind string // "join" or "leave"
	// converged: from the call to every target ACTIVE on exactly one
	// worker, none INCOMING (every handoff acked), and the joiner holding
	// targets / the leaver none.
	converged time.Duration
	// cleaned: until no view holds an OUTGOING target any more (the
	// coordinator removes them once the old owner's heartbeat reports the
	// generation: up to one heartbeat interval).
	cleaned time.Duration
	// leaveReturned: the Leave call's duration and answer (leave only).
	leaveReturned time.Duration
	drained       bool
	remaining     uint64
	moved         int
	// ideal: targets / workers after a join; the leaver's targets for a
	// leave.
	ideal       float64
	subject     int // the joiner's / leaver's targets after / before
	wire        int64
	wireMax     int64
	cpu         time.Duration
	countsAfter []int
}

// scenarioResult holds every figure of one scenario.
type scenarioResult struct {
	kind     string // scenarioK8s or scenarioStatic
	name     string
	workload string
	targets  int
	workers  int
	note     string

	ready, joined time.Duration // from the coordinator's start
	// released: the fakes answer / the file_sd file was renamed in.
	released time.Duration
	// delayed: prometheus_sd_updates_delayed_total's increase from the
	// release to full assignment (haveDelayed: both read). Non-zero: the
	// discovery manager found the syncer busy and retried at its next
	// tick, a wait the syncer anchor does not see.
	delayed     float64
	haveDelayed bool
	// apiLast: the fake API's last response write before full assignment;
	// zero when not measured.
	apiLast time.Duration
	// delivered: the coordinator's syncer received the discovery update
	// that brought the full count (debug log: line time − duration);
	// relabeled: that update relabeled and handed to the core (line time).
	delivered, relabeled time.Duration
	haveSync             bool
	// metricFull: targets_discovered first seen at the full count.
	metricFull time.Duration
	full       time.Duration
	cpuFull    time.Duration
	rssFull    uint64
	// benchCPU: the benchmark process's own CPU (fakes, simulated
	// workers) from the coordinator's start to full assignment.
	benchCPU time.Duration
	wireFull int64
	wireMaxW int64
	payload  int64
	// counts: targets per worker (sorted) in the last phase reached;
	// countsPhase names it.
	counts      []int
	countsPhase string

	join, leave eventFigures
	idle        time.Duration
	idleCPU     time.Duration
	idleWire    int64
	peakRSS     uint64
	cpuTotal    time.Duration
	rejoins     int64
	reconnects  int64
	problems    []string
}

// bench runs one scenario against one coordinator process.
type bench struct {
	opts     options
	coord    *coordProc
	expected map[jobAddr]struct{}
	changed  chan struct{}

	mu      sync.Mutex
	workers []*simWorker // index = view index; nil once stopped
	// goneWire: a stopped worker's stream bytes, by index, so that
	// deltas across its leave keep them.
	goneWire map[int]int64
	// lastOwners: the ownership at the last convergence.
	lastOwners ownership
}

func (b *bench) live() []*simWorker {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*simWorker(nil), b.workers...)
}

func (b *bench) totals(ws []*simWorker) (totals, time.Time) {
	var t totals
	var last time.Time
	for _, w := range ws {
		if w == nil {
			continue
		}
		a, i, o, l := w.counts()
		t.active += a
		t.incoming += i
		t.outgoing += o
		if l.After(last) {
			last = l
		}
	}
	return t, last
}

// check freezes every live view (their locks, in order) and runs the
// exactly-once check; at is the last update before the frozen state that
// changed what a worker holds (removing OUTGOING targets does not).
func (b *bench) check(ws []*simWorker) (res checkResult, at time.Time) {
	views := make([]*view, len(ws))
	for i, w := range ws {
		if w == nil {
			continue
		}
		w.mu.Lock()
		views[i] = w.v
		if w.lastOwning.After(at) {
			at = w.lastOwning
		}
	}
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.mu.Unlock()
			}
		}
	}()
	return checkExactlyOnce(views, b.expected), at
}

// sample is what the benchmark reads when it first verifies a state:
// the coordinator's and its own usage, and the streams' bytes.
type sample struct {
	coord, self testenv.Usage
	wire        []int64
	// delayed: prometheus_sd_updates_delayed_total (delayedErr: its read
	// failed), read after the rest.
	delayed    float64
	delayedErr error
}

func (b *bench) sample(ctx context.Context) sample {
	var s sample
	s.coord, _ = b.coord.usage()
	s.self, _ = testenv.ProcUsage(os.Getpid())
	s.wire = b.wire()
	s.delayed, s.delayedErr = b.coord.delayedUpdates(ctx)
	return s
}

// waitOwned waits until cond holds on the totals and the exactly-once check
// passes, and no view changed for the settle time after. It returns when
// that state came about (its last change) and the sample taken when it was
// first verified (within one check of its coming about: up to about
// 0.5 s at 1M targets). A value on fail (nil: none) ends the wait with that
// error.
func (b *bench) waitOwned(ctx context.Context, what string, cond func(totals, []*simWorker) bool, fail <-chan error) (time.Time, checkResult, sample, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastProblem string
	var nextFull, candidate time.Time
	var smp sample
	for {
		ws := b.live()
		tot, _ := b.totals(ws)
		if cond(tot, ws) && time.Now().After(nextFull) {
			res, at := b.check(ws)
			if res.ok && !at.Equal(candidate) {
				candidate, smp = at, b.sample(ctx)
			}
			switch {
			case !res.ok:
				lastProblem = res.problem
				nextFull = time.Now().Add(200 * time.Millisecond)
			case time.Since(at) >= b.opts.settle:
				// No update since the verified state came about.
				return at, res, smp, nil
			default:
				nextFull = at.Add(b.opts.settle)
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, checkResult{}, smp, fmt.Errorf("%s: not reached within %s (totals %+v; last check: %s): %w\n%s",
				what, b.opts.timeout, tot, lastProblem, ctx.Err(), b.coord.logs.tail(2<<10))
		case <-b.coord.exited:
			return time.Time{}, checkResult{}, smp, fmt.Errorf("%s: coordinator exited (%v):\n%s", what, b.coord.exitErr, b.coord.logs.tail(4<<10))
		case err := <-fail:
			return time.Time{}, checkResult{}, smp, fmt.Errorf("%s: %w", what, err)
		case <-b.changed:
		case <-tick.C:
		}
	}
}

// waitNoOutgoing waits until no live view holds an OUTGOING target.
func (b *bench) waitNoOutgoing(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		tot, last := b.totals(b.live())
		if tot.outgoing == 0 {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("outgoing targets not removed within %s (totals %+v): %w", b.opts.timeout, tot, ctx.Err())
		case <-b.changed:
		case <-tick.C:
		}
	}
}

// wire returns every worker's stream bytes so far, by index.
func (b *bench) wire() []int64 {
	ws := b.live()
	out := make([]int64, len(ws))
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, w := range ws {
		if w != nil {
			out[i] = w.streamWire.Load()
		} else {
			out[i] = b.goneWire[i]
		}
	}
	return out
}

// wireDelta sums after − before and returns the largest per worker.
func wireDelta(before, after []int64) (sum, maxW int64) {
	for i, a := range after {
		d := a
		if i < len(before) {
			d -= before[i]
		}
		sum += d
		maxW = max(maxW, d)
	}
	return sum, maxW
}

// addWorker starts a simulated worker and waits for its Join.
func (b *bench) addWorker(ctx context.Context, i int) (*simWorker, error) {
	w, err := newSimWorker(b.coord.grpc, fmt.Sprintf("sim-%03d", i), b.opts.ackPoll, b.changed)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.workers = append(b.workers, w)
	b.mu.Unlock()
	return w, b.startWorker(ctx, w)
}

// startWorker starts w and waits for its Join.
func (b *bench) startWorker(ctx context.Context, w *simWorker) error {
	w.start(ctx)
	select {
	case <-w.joined:
		return nil
	case <-w.done:
		return fmt.Errorf("worker %s ended before joining: %w", w.id, w.err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *bench) stopWorkers() {
	for _, w := range b.live() {
		if w != nil {
			w.stop()
		}
	}
}

// runScenario runs one scenario: the coordinator started on cfgFile, the
// workers joined, discovery's full target set assigned, a join, a leave,
// then an idle period.
//
// release lets discovery deliver the targets; it is called once every
// worker joined. apiLast, when not nil, says when the fake API last wrote.
func runScenario(ctx context.Context, o options, r *scenarioResult, cfgFile, dir string, expected map[jobAddr]struct{}, release func() error, apiLast func() time.Time) (err error) {
	logFile := ""
	if o.logDir != "" {
		logFile = filepath.Join(o.logDir, "coordinator-"+r.kind+".log")
	}
	coord, err := startCoordinator(coordOptions{bin: filepath.Join(o.bin, "coordinator"), configFile: cfgFile, dir: dir, updateInterval: o.updateInterval, leaseTTL: o.leaseTTL, logFile: logFile})
	if err != nil {
		return err
	}
	defer func() {
		if serr := coord.stop(30 * time.Second); serr != nil && err == nil {
			err = serr
		}
	}()
	self0, err := testenv.ProcUsage(os.Getpid())
	if err != nil {
		return err
	}
	b := &bench{opts: o, coord: coord, expected: expected, changed: make(chan struct{}, 1)}
	defer b.stopWorkers()
	since := func(t time.Time) time.Duration { return t.Sub(coord.started) }
	r.targets, r.workers = len(expected), o.workers

	readyAt, err := coord.waitReady(ctx, time.Minute)
	if err != nil {
		return err
	}
	r.ready = since(readyAt)
	o.logger.Info("coordinator ready", "scenario", r.name, "after", r.ready)

	// Discovery's progress, polled every second until the full count: each
	// /metrics scrape walks every target for the coverage gauges (tens of
	// ms of the coordinator's CPU at 1M), so polling faster would slow the
	// very assignment being timed. This anchor is informational.
	var metricFull, metricPrev time.Time
	pollCtx, stopPoll := context.WithCancel(ctx)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			before := time.Now()
			if n, err := coord.discovered(pollCtx); err == nil && int(n) >= len(expected) {
				metricFull = time.Now()
				return
			}
			metricPrev = before
			select {
			case <-pollCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	defer func() { stopPoll(); <-pollDone }()

	// Every worker joins at once, as a StatefulSet's pods would.
	var jwg sync.WaitGroup
	jerrs := make([]error, o.workers)
	ws := make([]*simWorker, o.workers)
	for i := range o.workers {
		w, err := newSimWorker(coord.grpc, fmt.Sprintf("sim-%03d", i), o.ackPoll, b.changed)
		if err != nil {
			return err
		}
		ws[i] = w
	}
	b.mu.Lock()
	b.workers = ws
	b.mu.Unlock()
	for i, w := range ws {
		jwg.Go(func() { jerrs[i] = b.startWorker(ctx, w) })
	}
	jwg.Wait()
	if err := errors.Join(jerrs...); err != nil {
		return err
	}
	for _, w := range b.live() {
		select {
		case <-w.first:
		case <-ctx.Done():
			return ctx.Err()
		case <-coord.exited:
			return fmt.Errorf("coordinator exited (%v):\n%s", coord.exitErr, coord.logs.tail(4<<10))
		}
	}
	r.joined = since(time.Now())
	o.logger.Info("workers joined", "scenario", r.name, "workers", o.workers, "after", r.joined)
	// Discovery may answer now: the figures are those of a full target
	// set assigned to a full fleet, not of joins one by one.
	delayed0, delayedErr := coord.delayedUpdates(ctx)
	// Stamped before releasing: nothing can reach the coordinator earlier,
	// whereas a stamp after release() may come late on a busy machine.
	releasedAt := time.Now()
	if err := release(); err != nil {
		return err
	}
	r.released = since(releasedAt)

	fullAt, res, smp, err := b.waitOwned(ctx, "full assignment", func(t totals, _ []*simWorker) bool {
		return t.active == len(expected) && t.incoming == 0
	}, nil)
	if err != nil {
		return err
	}
	r.full = since(fullAt)
	switch {
	case delayedErr != nil:
		r.problems = append(r.problems, "delayed discovery updates not read at the release: "+oneLine(delayedErr.Error()))
	case smp.delayedErr != nil:
		r.problems = append(r.problems, "delayed discovery updates not read at full assignment: "+oneLine(smp.delayedErr.Error()))
	default:
		r.delayed, r.haveDelayed = smp.delayed-delayed0, true
	}
	if apiLast != nil {
		if t := apiLast(); !t.IsZero() {
			r.apiLast = since(t)
		}
	}
	r.cpuFull, r.rssFull = smp.coord.CPU, smp.coord.PeakRSSBytes
	r.benchCPU = smp.self.CPU - self0.CPU
	r.wireFull, r.wireMaxW = wireDelta(nil, smp.wire)
	for _, w := range b.live() {
		r.payload += w.payload.Load()
	}
	r.counts, r.countsPhase = sortedCounts(res.owners, o.workers), "at full assignment"
	o.logger.Info("fully assigned", "scenario", r.name, "after", r.full, "cpu", r.cpuFull, "peak_rss", r.rssFull)

	// The discovery anchors: the metric's first full reading (its poll
	// may not have seen it yet when the assignment was fast), the sync
	// that set it, the fake API.
	select {
	case <-pollDone:
	case <-time.After(5 * time.Second):
	}
	stopPoll()
	<-pollDone
	if metricFull.IsZero() {
		r.problems = append(r.problems, "targets_discovered never read the full count before full assignment; the metric anchor is missing")
	} else {
		r.metricFull = since(metricFull)
		for _, s := range coord.syncRecords() {
			// The first update applied after the metric's last reading
			// short of the full count, and received after the release
			// (an earlier, empty update may be applied after a reading
			// taken before the release; the log's time is stamped to the
			// millisecond).
			if !s.applied.Before(metricPrev) && !s.received.Before(releasedAt.Add(-time.Millisecond)) {
				r.delivered, r.relabeled, r.haveSync = since(s.received), since(s.applied), true
				break
			}
		}
	}
	if r.haveSync && r.delivered < r.joined {
		r.problems = append(r.problems, fmt.Sprintf("discovery delivered (%s) before every worker had joined (%s): the full-assignment figure includes joins", r.delivered, r.joined))
	}

	if err := b.joinEvent(ctx, r, res.owners); err != nil {
		return err
	}
	if err := b.leaveEvent(ctx, r); err != nil {
		return err
	}

	// Idle: no change for o.idle.
	u0, err := coord.usage()
	if err != nil {
		return err
	}
	w0 := b.wire()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.idle):
	}
	u1, err := coord.usage()
	if err != nil {
		return err
	}
	r.idle, r.idleCPU = o.idle, u1.CPU-u0.CPU
	r.idleWire, _ = wireDelta(w0, b.wire())
	r.peakRSS, r.cpuTotal = u1.PeakRSSBytes, u1.CPU
	for _, w := range b.live() {
		if w != nil {
			r.rejoins += w.rejoins.Load()
			r.reconnects += w.reconnects.Load()
		}
	}
	return nil
}

// joinEvent joins one more worker and measures until it converged.
func (b *bench) joinEvent(ctx context.Context, r *scenarioResult, before ownership) error {
	e := &r.join
	e.kind = "join"
	idx := len(b.live())
	w0 := b.wire()
	u0, err := b.coord.usage()
	if err != nil {
		return err
	}
	start := time.Now()
	joiner, err := b.addWorker(ctx, idx)
	if err != nil {
		return err
	}
	at, res, smp, err := b.waitOwned(ctx, "join", func(t totals, ws []*simWorker) bool {
		a, _, _, _ := joiner.counts()
		return t.active == len(b.expected) && t.incoming == 0 && a > 0
	}, nil)
	if err != nil {
		return err
	}
	e.converged = at.Sub(start)
	cleanAt, err := b.waitNoOutgoing(ctx)
	if err != nil {
		return err
	}
	e.cleaned = cleanAt.Sub(start)
	// CPU and bytes at convergence (the sample taken when the state was
	// first verified), as at full assignment: not after the settle wait.
	e.cpu = smp.coord.CPU - u0.CPU
	e.wire, e.wireMax = wireDelta(w0, smp.wire)
	e.moved = moved(before, res.owners)
	n := len(b.live())
	e.ideal = float64(len(b.expected)) / float64(n)
	e.countsAfter = sortedCounts(res.owners, n)
	for _, v := range res.owners {
		if v == idx {
			e.subject++
		}
	}
	r.counts, r.countsPhase = e.countsAfter, "after the join"
	b.lastOwners = res.owners
	b.opts.logger.Info("join converged", "scenario", r.name, "after", e.converged, "moved", e.moved, "joiner", e.subject)
	return nil
}

// leaveEvent makes worker 0 Leave, as a SIGTERM'd worker does: it keeps
// heartbeating and watching until Leave returns, then stops.
func (b *bench) leaveEvent(ctx context.Context, r *scenarioResult) error {
	e := &r.leave
	e.kind = "leave"
	before := b.lastOwners
	leaver := b.live()[0]
	for _, v := range before {
		if v == 0 {
			e.subject++
		}
	}
	e.ideal = float64(e.subject)
	w0 := b.wire()
	u0, err := b.coord.usage()
	if err != nil {
		return err
	}
	start := time.Now()
	type leaveRes struct {
		drained   bool
		remaining uint64
		at        time.Time
		err       error
	}
	lc := make(chan leaveRes, 1)
	failed := make(chan error, 1)
	go func() {
		lctx, cancel := context.WithTimeout(ctx, b.opts.timeout)
		defer cancel()
		resp, err := leaver.leave(lctx)
		lr := leaveRes{at: time.Now(), err: err}
		if err != nil {
			failed <- err
			lc <- lr
			return
		}
		lr.drained, lr.remaining = resp.GetDrained(), resp.GetRemainingTargetCount()
		// Leave returned: the worker stops every target (drained: without
		// waiting for OUTGOING updates) and exits; its view goes.
		leaver.stop()
		b.mu.Lock()
		b.workers[0] = nil
		if b.goneWire == nil {
			b.goneWire = map[int]int64{}
		}
		b.goneWire[0] = leaver.streamWire.Load()
		b.mu.Unlock()
		lc <- lr
		select {
		case b.changed <- struct{}{}:
		default:
		}
	}()
	at, res, smp, err := b.waitOwned(ctx, "leave", func(t totals, ws []*simWorker) bool {
		return ws[0] == nil && t.active == len(b.expected) && t.incoming == 0
	}, failed)
	if err != nil {
		return err
	}
	lr := <-lc
	e.leaveReturned, e.drained, e.remaining = lr.at.Sub(start), lr.drained, lr.remaining
	e.converged = max(at.Sub(start), e.leaveReturned)
	cleanAt, err := b.waitNoOutgoing(ctx)
	if err != nil {
		return err
	}
	e.cleaned = max(cleanAt.Sub(start), e.leaveReturned)
	// At convergence, as for the join.
	e.cpu = smp.coord.CPU - u0.CPU
	e.wire, e.wireMax = wireDelta(w0, smp.wire)
	e.moved = moved(before, res.owners)
	e.countsAfter = sortedCounts(res.owners, len(b.live()))[1:] // without the leaver's empty slot
	r.counts, r.countsPhase = e.countsAfter, "after the leave"
	b.opts.logger.Info("leave converged", "scenario", r.name, "after", e.converged, "moved", e.moved, "drained", e.drained)
	return nil
}

// apiRecorder wraps the fakes' handler: it holds every request until
// released, and records when it last wrote a response byte (Kubernetes
// SD's watch-list streams and Consul's queries alike).
type apiRecorder struct {
	next    http.Handler
	gate    chan struct{}
	release func()
	mu      sync.Mutex
	last    time.Time
}

func newAPIRecorder(next http.Handler) *apiRecorder {
	a := &apiRecorder{next: next, gate: make(chan struct{})}
	a.release = sync.OnceFunc(func() { close(a.gate) })
	return a
}

func (a *apiRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-a.gate:
	case <-r.Context().Done():
		return
	}
	a.next.ServeHTTP(&recordingWriter{ResponseWriter: w, a: a}, r)
}

func (a *apiRecorder) wrote() {
	a.mu.Lock()
	a.last = time.Now()
	a.mu.Unlock()
}

func (a *apiRecorder) lastWrite() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// recordingWriter tells its apiRecorder of every write and flush.
type recordingWriter struct {
	http.ResponseWriter
	a *apiRecorder
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.a.wrote()
	return n, err
}

func (w *recordingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	w.a.wrote()
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// runFleet is scenario A: the fleet's Consul and Kubernetes fakes.
func runFleet(ctx context.Context, o options) (*scenarioResult, error) {
	r := &scenarioResult{kind: scenarioK8s, name: fmt.Sprintf("%s nodes × %d pods", thousands(o.nodes), o.podsPerNode)}
	dir, err := os.MkdirTemp("", "coordscale-fleet-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	f, err := fleet.New(fleet.Options{Nodes: o.nodes, PodsPerNode: o.podsPerNode, NodePort: 0, PodPort: 0})
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if err := f.Start(); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	defer f.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake API listener: %w", err)
	}
	rec := newAPIRecorder(f.Handler())
	defer rec.release()
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	// Close, not Shutdown: watches and blocking queries stay open.
	defer srv.Close()

	expected := map[jobAddr]struct{}{}
	for _, n := range f.Nodes() {
		expected[jobAddr{jobNodes, n.Addr}] = struct{}{}
	}
	for _, p := range f.Pods() {
		expected[jobAddr{jobPods, p.Addr}] = struct{}{}
	}
	r.workload = fmt.Sprintf("internal/fleet: %d nodes × %d pods per node, served by its Consul and Kubernetes fakes (in the benchmark process, 127.0.0.1); "+
		"job %s (consul_sd, %d targets) and job %s (kubernetes_sd role pod, prometheus.io/scrape annotation relabeling, %d targets)",
		o.nodes, o.podsPerNode, jobNodes, len(f.Nodes()), jobPods, len(f.Pods()))
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(renderFleetConfig(lis.Addr().String())), 0o600); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	release := func() error { rec.release(); return nil }
	return r, runScenario(ctx, o, r, cfgFile, dir, expected, release, rec.lastWrite)
}

// runStatic is scenario B: generated targets in one file_sd file.
func runStatic(ctx context.Context, o options) (*scenarioResult, error) {
	r := &scenarioResult{kind: scenarioStatic, name: fmt.Sprintf("%s static targets", thousands(o.staticTargets))}
	dir, err := os.MkdirTemp("", "coordscale-static-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	// Written aside, renamed into place once the workers joined: file_sd
	// watches the directory and reads it then.
	file := filepath.Join(dir, "sd", "targets.json")
	aside := filepath.Join(dir, "targets.json.tmp")
	if err := os.Mkdir(filepath.Dir(file), 0o755); err != nil {
		return nil, fmt.Errorf("file_sd dir: %w", err)
	}
	if err := writeStaticTargets(aside, o.staticTargets); err != nil {
		return nil, err
	}
	st, err := os.Stat(aside)
	if err != nil {
		return nil, fmt.Errorf("file_sd targets: %w", err)
	}
	r.workload = fmt.Sprintf("job %s: %d generated targets (10.x.y.z:9100, never scraped) in one file_sd JSON file (%s, groups of %d with a group label)",
		jobStatic, o.staticTargets, bytesStr(st.Size()), staticGroupSize)
	r.note = "file_sd, not static_configs: the coordinator sends each worker its jobs' original YAML (ScrapeConfig.yaml), which with static_configs would carry all 1M targets to every worker, and file_sd's JSON parses faster than YAML"
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(renderStaticConfig(file)), 0o600); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	release := func() error {
		if err := os.Rename(aside, file); err != nil {
			return fmt.Errorf("file_sd targets: %w", err)
		}
		return nil
	}
	return r, runScenario(ctx, o, r, cfgFile, dir, staticExpected(o.staticTargets), release, nil)
}

// runBench runs the chosen scenarios and writes the report.
func runBench(ctx context.Context, o options, stdout *os.File) error {
	bin := filepath.Join(o.bin, "coordinator")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("coordinator binary (-bin %s): %w (go build -o bin/ ./cmd/...)", o.bin, err)
	}
	var results []*scenarioResult
	var errs []error
	for _, s := range []struct {
		name string
		fn   func(context.Context, options) (*scenarioResult, error)
	}{{scenarioK8s, runFleet}, {scenarioStatic, runStatic}} {
		if o.scenario != scenarioAll && o.scenario != s.name {
			continue
		}
		o.logger.Info("scenario starting", "scenario", s.name)
		r, err := s.fn(ctx, o)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("scenario %s: %w", s.name, err))
			if r != nil {
				r.problems = append(r.problems, "failed: "+oneLine(err.Error()))
			}
		}
		if r != nil {
			results = append(results, r)
		}
	}
	now := time.Now()
	md := renderReport(o, bin, results, now)
	if _, err := stdout.WriteString(md); err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	path := reportFile(o.out, now)
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	o.logger.Info("report written", "file", path)
	return errors.Join(errs...)
}
