package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"

	"github.com/shardscrape/shardscrape/coordinator"
	"github.com/shardscrape/shardscrape/internal/rpc"
	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

// errNotLeader is what every worker and admin call gets while this replica
// does not lead (or has not loaded its state yet), as the contract says.
// The gRPC server then closes the caller's connection: a worker that
// reached this replica through a Service reconnects to the leader.
var errNotLeader = rpc.NotServing("this coordinator is not the leader")

// healthSetter is the gRPC server's health switch (rpc.Server).
type healthSetter interface {
	SetServing()
	SetNotServing()
}

// host runs the coordinator core while this replica leads. Each leadership
// term gets a fresh core: coordinator.New loads the state from the bucket
// and starts the startup grace (one lease TTL for the workers to join
// again before anything is reassigned), which is exactly what a new leader
// must do. Between terms, host keeps the latest configuration and targets
// from discovery, so a new term starts from them at once, and answers
// every gRPC call with UNAVAILABLE, /-/ready and the core's pages with 503.
//
// Without leader election there is one term, for the life of the process.
type host struct {
	opts   coordinator.Options
	logger *slog.Logger
	reg    *prometheus.Registry
	health healthSetter

	// feedMu orders the feeds of configuration and targets into the
	// cores; mu guards the fields below and is never held during a feed.
	feedMu     sync.Mutex
	mu         sync.Mutex
	cur        *term // nil while not leading or loading
	next       *term // the term being started, until it is loaded
	last       *term // the last term started, to wait for its end
	cfg        *coordinator.Config
	targets    map[string][]relabel.Target
	discovered map[string]int
}

// term is one leadership term's core.
type term struct {
	// fenced is set when leadership was lost (not given up): the core may
	// no longer write state, since another replica may lead already.
	fenced atomic.Bool
	c      *coordinator.Coordinator
	worker shardscrapev1.WorkerServiceServer
	admin  shardscrapev1.AdminServiceServer
	web    http.Handler
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newHost(opts coordinator.Options, logger *slog.Logger, reg *prometheus.Registry, health healthSetter) *host {
	return &host{
		opts:       opts,
		logger:     logger,
		reg:        reg,
		health:     health,
		targets:    map[string][]relabel.Target{},
		discovered: map[string]int{},
	}
}

// startTerm begins a term: it loads the state and starts the core in the
// background, and returns at once (it runs in the leader election's
// callback). The term ends at stopTerm or loseTerm only, not when ctx
// ends: a lost Lease cancels the elector's context first, and the core,
// which saves when it stops, must not stop before loseTerm has fenced its
// writes off.
func (h *host) startTerm(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.next != nil || h.cur != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t := &term{ctx: ctx, cancel: cancel, done: make(chan struct{})}
	prev := h.last
	h.next, h.last = t, t
	go h.runTerm(t, prev)
}

// stopTerm ends the current term: calls fail with UNAVAILABLE from now on,
// open streams end, and the core stops in the background, saving its
// assignment. Use it when giving leadership up (shutdown), before the Lease
// is released, and wait for the save with wait.
func (h *host) stopTerm() { h.endTerm(false) }

// loseTerm is stopTerm when leadership is lost (the Lease could not be
// renewed): the core's writes to the bucket are fenced off first, since
// another replica may lead and write already.
func (h *host) loseTerm() { h.endTerm(true) }

func (h *host) endTerm(lost bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range []*term{h.cur, h.next} {
		if t != nil {
			if lost {
				t.fenced.Store(true)
			}
			t.cancel()
		}
	}
	if h.cur != nil {
		h.logger.Info("Leadership term over: no longer serving workers")
	}
	h.cur, h.next = nil, nil
	h.health.SetNotServing()
}

// wait blocks until the last term's core has stopped.
func (h *host) wait() {
	h.mu.Lock()
	t := h.last
	h.mu.Unlock()
	if t != nil {
		<-t.done
	}
}

// runTerm builds the term's core (after the previous term's core has
// stopped and saved), retrying while the bucket fails, feeds it the latest
// configuration and targets and runs it until the term ends.
func (h *host) runTerm(t *term, prev *term) {
	defer close(t.done)
	if prev != nil {
		<-prev.done
	}
	// The core's metrics leave the registry with the term, so that the
	// next term's core can register them again.
	reg := &unregisterer{reg: h.reg}
	defer reg.unregisterAll()
	opts := h.opts
	if opts.Bucket != nil {
		opts.Bucket = &fencedBucket{Bucket: opts.Bucket, t: t}
	}
	var c *coordinator.Coordinator
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		var err error
		c, err = coordinator.New(t.ctx, opts, h.logger, reg)
		if err == nil {
			break
		}
		reg.unregisterAll()
		h.logger.Error("Load coordinator state", "err", err)
		select {
		case <-t.ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
	t.c, t.worker, t.admin, t.web = c, c.WorkerService(), c.AdminService(), c.Handler()

	// Feed the new core what discovery and the configuration gave so far,
	// then serve. feedMu keeps later feeds from overtaking this one;
	// h.mu is not held while the core works, so that readiness and
	// gRPC calls are not held up by a large target set.
	h.feedMu.Lock()
	h.mu.Lock()
	if h.next != t {
		h.mu.Unlock()
		h.feedMu.Unlock()
		return // stopped while loading
	}
	cfg, targets, discovered := h.cfg, maps.Clone(h.targets), maps.Clone(h.discovered)
	h.mu.Unlock()
	if cfg != nil {
		if err := c.ApplyConfig(*cfg); err != nil {
			// Validated at load; cannot happen short of a bug.
			h.logger.Error("Apply configuration to the coordinator core", "err", err)
		}
	}
	for job, n := range discovered {
		c.SetDiscovered(job, n)
	}
	if len(targets) > 0 {
		c.UpdateTargets(targets)
	}
	h.mu.Lock()
	serving := h.next == t
	if serving {
		h.next, h.cur = nil, t
		h.health.SetServing()
	}
	h.mu.Unlock()
	h.feedMu.Unlock()
	if !serving {
		return
	}
	h.logger.Info("Coordinator core started: serving workers")

	if err := c.Run(t.ctx); err != nil {
		h.logger.Error("Coordinator core stopped", "err", err)
	}
}

// ready reports whether a term's core is loaded and serving.
func (h *host) ready() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur != nil
}

func (h *host) current() (*term, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil {
		return nil, errNotLeader
	}
	return h.cur, nil
}

// applyConfig keeps cfg for later terms and applies it to the current one.
func (h *host) applyConfig(cfg coordinator.Config) error {
	h.feedMu.Lock()
	defer h.feedMu.Unlock()
	h.mu.Lock()
	h.cfg = &cfg
	cur := h.cur
	h.mu.Unlock()
	if cur != nil {
		return cur.c.ApplyConfig(cfg)
	}
	return nil
}

// updateTargets keeps the targets of the jobs in byJob (nil or empty: the
// job has none) and hands them to the current term.
func (h *host) updateTargets(byJob map[string][]relabel.Target, discovered map[string]int, since time.Time) {
	h.feedMu.Lock()
	defer h.feedMu.Unlock()
	h.mu.Lock()
	for job, ts := range byJob {
		if len(ts) == 0 {
			delete(h.targets, job)
		} else {
			h.targets[job] = ts
		}
		if discovered[job] == 0 {
			delete(h.discovered, job)
		} else {
			h.discovered[job] = discovered[job]
		}
	}
	cur := h.cur
	h.mu.Unlock()
	if cur == nil {
		return
	}
	for job := range byJob {
		cur.c.SetDiscovered(job, discovered[job])
	}
	cur.c.UpdateTargetsSince(byJob, since)
}

// ServeHTTP serves the current core's pages (/api/v1/targets, /ring,
// /assignment), or 503 while not leading.
func (h *host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, err := h.current()
	if err != nil {
		http.Error(w, "this coordinator is not the leader", http.StatusServiceUnavailable)
		return
	}
	t.web.ServeHTTP(w, r)
}

// register registers the gated services on s.
func (h *host) register(s grpc.ServiceRegistrar) {
	shardscrapev1.RegisterWorkerServiceServer(s, workerGate{h: h})
	shardscrapev1.RegisterAdminServiceServer(s, adminGate{h: h})
}

// callCtx is ctx, also ended when t ends, for calls that wait (Leave,
// streams).
func callCtx(ctx context.Context, t *term) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(t.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// forward runs one unary call on the current term's core; a call cut short
// by the end of the term fails with UNAVAILABLE.
func forward[Resp any](h *host, ctx context.Context, call func(t *term, ctx context.Context) (Resp, error)) (Resp, error) {
	t, err := h.current()
	if err != nil {
		var zero Resp
		return zero, err
	}
	ctx, cancel := callCtx(ctx, t)
	defer cancel()
	resp, err := call(t, ctx)
	if err != nil && t.ctx.Err() != nil {
		var zero Resp
		return zero, errNotLeader
	}
	return resp, err
}

// workerGate is WorkerService while leading, UNAVAILABLE otherwise.
type workerGate struct {
	shardscrapev1.UnimplementedWorkerServiceServer
	h *host
}

var _ shardscrapev1.WorkerServiceServer = workerGate{}

func (g workerGate) Join(ctx context.Context, req *shardscrapev1.JoinRequest) (*shardscrapev1.JoinResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.JoinResponse, error) {
		return t.worker.Join(ctx, req)
	})
}

func (g workerGate) Heartbeat(ctx context.Context, req *shardscrapev1.HeartbeatRequest) (*shardscrapev1.HeartbeatResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.HeartbeatResponse, error) {
		return t.worker.Heartbeat(ctx, req)
	})
}

func (g workerGate) Leave(ctx context.Context, req *shardscrapev1.LeaveRequest) (*shardscrapev1.LeaveResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.LeaveResponse, error) {
		return t.worker.Leave(ctx, req)
	})
}

// WatchAssignments runs the stream on the current term's core; when the
// term ends the stream ends with UNAVAILABLE.
func (g workerGate) WatchAssignments(req *shardscrapev1.WatchAssignmentsRequest, stream grpc.ServerStreamingServer[shardscrapev1.WatchAssignmentsResponse]) error {
	t, err := g.h.current()
	if err != nil {
		return err
	}
	ctx, cancel := callCtx(stream.Context(), t)
	defer cancel()
	err = t.worker.WatchAssignments(req, termStream{stream, ctx})
	if t.ctx.Err() != nil {
		return errNotLeader
	}
	return err
}

// termStream is a stream whose context also ends with the term.
type termStream struct {
	grpc.ServerStreamingServer[shardscrapev1.WatchAssignmentsResponse]
	ctx context.Context
}

func (s termStream) Context() context.Context { return s.ctx }

// adminGate is AdminService while leading, UNAVAILABLE otherwise.
type adminGate struct {
	shardscrapev1.UnimplementedAdminServiceServer
	h *host
}

var _ shardscrapev1.AdminServiceServer = adminGate{}

func (g adminGate) ListWorkers(ctx context.Context, req *shardscrapev1.ListWorkersRequest) (*shardscrapev1.ListWorkersResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.ListWorkersResponse, error) {
		return t.admin.ListWorkers(ctx, req)
	})
}

func (g adminGate) ListTargets(ctx context.Context, req *shardscrapev1.ListTargetsRequest) (*shardscrapev1.ListTargetsResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.ListTargetsResponse, error) {
		return t.admin.ListTargets(ctx, req)
	})
}

func (g adminGate) LocateTarget(ctx context.Context, req *shardscrapev1.LocateTargetRequest) (*shardscrapev1.LocateTargetResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.LocateTargetResponse, error) {
		return t.admin.LocateTarget(ctx, req)
	})
}

func (g adminGate) RingStatus(ctx context.Context, req *shardscrapev1.RingStatusRequest) (*shardscrapev1.RingStatusResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.RingStatusResponse, error) {
		return t.admin.RingStatus(ctx, req)
	})
}

func (g adminGate) DrainWorker(ctx context.Context, req *shardscrapev1.DrainWorkerRequest) (*shardscrapev1.DrainWorkerResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.DrainWorkerResponse, error) {
		return t.admin.DrainWorker(ctx, req)
	})
}

func (g adminGate) UndrainWorker(ctx context.Context, req *shardscrapev1.UndrainWorkerRequest) (*shardscrapev1.UndrainWorkerResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.UndrainWorkerResponse, error) {
		return t.admin.UndrainWorker(ctx, req)
	})
}

func (g adminGate) PinTarget(ctx context.Context, req *shardscrapev1.PinTargetRequest) (*shardscrapev1.PinTargetResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.PinTargetResponse, error) {
		return t.admin.PinTarget(ctx, req)
	})
}

func (g adminGate) UnpinTarget(ctx context.Context, req *shardscrapev1.UnpinTargetRequest) (*shardscrapev1.UnpinTargetResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.UnpinTargetResponse, error) {
		return t.admin.UnpinTarget(ctx, req)
	})
}

func (g adminGate) ExcludeTarget(ctx context.Context, req *shardscrapev1.ExcludeTargetRequest) (*shardscrapev1.ExcludeTargetResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.ExcludeTargetResponse, error) {
		return t.admin.ExcludeTarget(ctx, req)
	})
}

func (g adminGate) IncludeTarget(ctx context.Context, req *shardscrapev1.IncludeTargetRequest) (*shardscrapev1.IncludeTargetResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.IncludeTargetResponse, error) {
		return t.admin.IncludeTarget(ctx, req)
	})
}

func (g adminGate) PauseRebalancing(ctx context.Context, req *shardscrapev1.PauseRebalancingRequest) (*shardscrapev1.PauseRebalancingResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.PauseRebalancingResponse, error) {
		return t.admin.PauseRebalancing(ctx, req)
	})
}

func (g adminGate) ResumeRebalancing(ctx context.Context, req *shardscrapev1.ResumeRebalancingRequest) (*shardscrapev1.ResumeRebalancingResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.ResumeRebalancingResponse, error) {
		return t.admin.ResumeRebalancing(ctx, req)
	})
}

func (g adminGate) PreviewRebalance(ctx context.Context, req *shardscrapev1.PreviewRebalanceRequest) (*shardscrapev1.PreviewRebalanceResponse, error) {
	return forward(g.h, ctx, func(t *term, ctx context.Context) (*shardscrapev1.PreviewRebalanceResponse, error) {
		return t.admin.PreviewRebalance(ctx, req)
	})
}

// errFenced is what a term's core gets for writes after its leadership was
// lost.
var errFenced = errors.New("not the leader any more: state writes fenced off")

// fencedBucket is a term's view of the state bucket: writes fail once the
// term's leadership is lost.
type fencedBucket struct {
	objstore.Bucket
	t *term
}

func (b *fencedBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	if b.t.fenced.Load() {
		return fmt.Errorf("upload %s: %w", name, errFenced)
	}
	return b.Bucket.Upload(ctx, name, r, opts...)
}

func (b *fencedBucket) Delete(ctx context.Context, name string) error {
	if b.t.fenced.Load() {
		return fmt.Errorf("delete %s: %w", name, errFenced)
	}
	return b.Bucket.Delete(ctx, name)
}

// unregisterer registers on reg and unregisters everything it registered
// at unregisterAll.
type unregisterer struct {
	reg *prometheus.Registry
	mu  sync.Mutex
	cs  []prometheus.Collector
}

var _ prometheus.Registerer = (*unregisterer)(nil)

func (u *unregisterer) Register(c prometheus.Collector) error {
	if err := u.reg.Register(c); err != nil {
		return err
	}
	u.mu.Lock()
	u.cs = append(u.cs, c)
	u.mu.Unlock()
	return nil
}

func (u *unregisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := u.Register(c); err != nil {
			panic(err)
		}
	}
}

func (u *unregisterer) Unregister(c prometheus.Collector) bool { return u.reg.Unregister(c) }

func (u *unregisterer) unregisterAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.cs {
		u.reg.Unregister(c)
	}
	u.cs = nil
}
