package coordinator

import (
	"context"
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

const maxWorkerIDLen = 253

var errLeaseGone = status.Error(codes.FailedPrecondition, "lease expired or superseded: join again")

// worker is one member of the fleet.
type worker struct {
	id, address, zone, version string
	capacity                   float64
	state                      shardscrapev1.WorkerState
	// leaving: a Leave call is draining it.
	leaving bool

	epoch         uint64
	leaseExpiry   time.Time
	lastHeartbeat time.Time
	joinGen       uint64 // generation held at Join
	applied       uint64 // generation reported by heartbeats
	lastSent      uint64 // generation of the last update sent

	// owned lists the targets with a slot of this worker, in no order
	// (slot.pos is the index), and nil entries (ownedFree of them) for
	// removed ones: adding and removing one is O(1) without hashing, which
	// a full change of a million targets does a million times.
	owned     []*target
	ownedFree int
	outgoing  map[uint64]struct{} // ids of those whose slot is OUTGOING
	// pending lists targets to send in the next delta (repeats allowed;
	// a removed target stays listed by its last object).
	pending []pendingRef
	// needSnapshot: the next update is a snapshot (pending dropped).
	needSnapshot bool
	// sentOwned is how many targets it held at the last update built.
	sentOwned int
	// ringIndex is reconcile's scratch: its position in the ring's members.
	ringIndex int32

	// Config state as last sent: job → hash, and the global hash.
	jobHash    map[string]string
	globalHash string

	sess *session
	// wanted: changes were committed that its stream has not built yet.
	wanted bool
}

// pendingRef is a pending target: its id and its object when touched (nil:
// the target is gone).
type pendingRef struct {
	id uint64
	t  *target
}

// ownedCount is the number of targets with a slot of w.
func (w *worker) ownedCount() int { return len(w.owned) - w.ownedFree }

// addOwned records that w holds t in slot s.
func (w *worker) addOwned(t *target, s *slot) {
	if w.ownedFree > 0 && 2*w.ownedFree >= len(w.owned) {
		w.compactOwned()
	}
	s.pos = len(w.owned)
	w.owned = append(w.owned, t)
}

// removeOwned forgets w's slot s. Its entry in w.owned is cleared, not
// filled: moving another target there would read that target, a cache miss
// per removal.
func (w *worker) removeOwned(s *slot) {
	w.owned[s.pos] = nil
	w.ownedFree++
	if w.ownedFree == len(w.owned) {
		clear(w.owned)
		w.owned, w.ownedFree = w.owned[:0], 0
	}
}

// compactOwned drops the cleared entries of w.owned.
func (w *worker) compactOwned() {
	j := 0
	for _, t := range w.owned {
		if t != nil {
			t.slots[t.slotOf(w)].pos = j
			w.owned[j] = t
			j++
		}
	}
	clear(w.owned[j:])
	w.owned, w.ownedFree = w.owned[:j], 0
}

func newWorker(id string) *worker {
	return &worker{
		id:           id,
		outgoing:     map[uint64]struct{}{},
		needSnapshot: true,
		jobHash:      map[string]string{},
	}
}

func (w *worker) alive() bool {
	return w.state != shardscrapev1.WorkerState_WORKER_STATE_EXPIRED &&
		w.state != shardscrapev1.WorkerState_WORKER_STATE_UNSPECIFIED
}

func (w *worker) onRing() bool { return w.state == shardscrapev1.WorkerState_WORKER_STATE_ACTIVE }

// anyOnRing reports whether some worker is on the ring, able to take
// targets over. Call with c.mu held.
func (c *Coordinator) anyOnRing() bool {
	for _, w := range c.workers {
		if w.onRing() {
			return true
		}
	}
	return false
}

// holders counts the targets w holds and has not handed over.
func (w *worker) holders() int { return w.ownedCount() - len(w.outgoing) }

// session is one open WatchAssignments stream.
type session struct {
	wakeCh chan struct{}
	done   chan struct{}
	err    error
	// known holds the config hashes the worker has: those it named, and
	// those sent on this stream.
	known map[string]struct{}
}

func (w *worker) wake() {
	if w.sess != nil {
		select {
		case w.sess.wakeCh <- struct{}{}:
		default:
		}
	}
}

func (w *worker) endSession(err error) {
	if w.sess != nil {
		w.sess.err = err
		close(w.sess.done)
		w.sess = nil
	}
}

// workerService implements WorkerService on a Coordinator.
type workerService struct {
	shardscrapev1.UnimplementedWorkerServiceServer
	c *Coordinator
}

var _ shardscrapev1.WorkerServiceServer = workerService{}

// WorkerService returns the coordinator's WorkerService implementation.
func (c *Coordinator) WorkerService() shardscrapev1.WorkerServiceServer {
	return workerService{c: c}
}

// AdminService returns the coordinator's AdminService implementation.
func (c *Coordinator) AdminService() shardscrapev1.AdminServiceServer {
	return adminService{c: c}
}

// Register registers WorkerService and AdminService on s.
func (c *Coordinator) Register(s grpc.ServiceRegistrar) {
	shardscrapev1.RegisterWorkerServiceServer(s, c.WorkerService())
	shardscrapev1.RegisterAdminServiceServer(s, c.AdminService())
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func validWorkerID(field, id string) error {
	if id == "" {
		return invalid("%s: must not be empty", field)
	}
	if len(id) > maxWorkerIDLen {
		return invalid("%s: longer than %d bytes", field, maxWorkerIDLen)
	}
	return nil
}

// leased returns the worker holding a live lease of epoch, or the error for
// the RPC. The caller holds c.mu.
func (c *Coordinator) leased(id string, epoch uint64) (*worker, error) {
	if err := validWorkerID("worker_id", id); err != nil {
		return nil, err
	}
	w := c.workers[id]
	if w == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %q has no lease: join first", id)
	}
	if !w.alive() {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %q: lease expired: join again", id)
	}
	if w.epoch != epoch {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %q: lease_epoch %d is stale (current %d): join again", id, epoch, w.epoch)
	}
	return w, nil
}

func (c *Coordinator) heartbeatInterval() time.Duration { return c.opts.LeaseTTL / 3 }

func (s workerService) Join(_ context.Context, req *shardscrapev1.JoinRequest) (*shardscrapev1.JoinResponse, error) {
	if err := validWorkerID("worker_id", req.GetWorkerId()); err != nil {
		return nil, err
	}
	capacity := req.GetCapacity()
	if math.IsNaN(capacity) || capacity < 0 || capacity > 1000 {
		return nil, invalid("capacity: %v not in (0, 1000] (0 means 1)", capacity)
	}
	if capacity == 0 {
		capacity = 1
	}
	if len(req.GetAddress()) > 1024 || len(req.GetZone()) > 256 || len(req.GetVersion()) > 256 {
		return nil, invalid("address, zone or version: too long")
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	w := c.workers[req.GetWorkerId()]
	if w == nil {
		w = newWorker(req.GetWorkerId())
		c.workers[w.id] = w
	}
	if w.onRing() || w.state == shardscrapev1.WorkerState_WORKER_STATE_DRAINING {
		// A live worker joining again restarted in place: it keeps what
		// it owns; its stream starts over.
		w.endSession(errLeaseGone)
	}
	if w.capacity != capacity || w.zone != req.GetZone() {
		c.needReconcile = true
	}
	w.address, w.zone, w.capacity, w.version = req.GetAddress(), req.GetZone(), capacity, req.GetVersion()
	w.joinGen = req.GetGeneration()
	if w.joinGen > c.gen {
		// This coordinator's store is behind the workers (a fail-over onto
		// a replica with an empty or older bucket). Generations only
		// increase: go on above the newest one a worker holds.
		c.logger.Warn("Worker holds a newer generation than the stored state; continuing above it", "worker", w.id, "worker_generation", w.joinGen, "stored_generation", c.gen)
		c.gen = w.joinGen
		c.metrics.generation.Set(float64(c.gen))
	}
	c.epoch++
	w.epoch = c.epoch
	w.leaseExpiry = now.Add(c.opts.LeaseTTL)
	w.lastHeartbeat = now
	switch {
	case c.admin.Drained[w.id]:
		if w.state != shardscrapev1.WorkerState_WORKER_STATE_DRAINED {
			w.state = shardscrapev1.WorkerState_WORKER_STATE_DRAINING
		}
	case w.state == shardscrapev1.WorkerState_WORKER_STATE_DRAINING && w.leaving:
		// A Leave is in progress; it stays draining.
	default:
		if !w.onRing() {
			c.needReconcile = true
		}
		w.state = shardscrapev1.WorkerState_WORKER_STATE_ACTIVE
	}
	c.logger.Info("Worker joined", "worker", w.id, "epoch", w.epoch, "generation", w.joinGen, "capacity", capacity, "zone", w.zone)
	if c.grace {
		done := true
		for id := range c.prevIDs {
			if pw := c.workers[id]; pw == nil || !pw.onRing() {
				done = false
				break
			}
		}
		if done {
			c.endGrace()
		}
	}
	c.reconcile()
	c.commit()
	return &shardscrapev1.JoinResponse{
		LeaseEpoch:        w.epoch,
		LeaseTtl:          durationpb.New(c.opts.LeaseTTL),
		HeartbeatInterval: durationpb.New(c.heartbeatInterval()),
	}, nil
}

func (s workerService) Heartbeat(_ context.Context, req *shardscrapev1.HeartbeatRequest) (*shardscrapev1.HeartbeatResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	w, err := c.leased(req.GetWorkerId(), req.GetLeaseEpoch())
	if err != nil {
		return nil, err
	}
	if req.GetGeneration() > c.gen {
		return nil, invalid("generation: %d is beyond the newest generation %d", req.GetGeneration(), c.gen)
	}
	now := c.opts.Now()
	w.leaseExpiry = now.Add(c.opts.LeaseTTL)
	w.lastHeartbeat = now
	w.applied = req.GetGeneration()
	for _, l := range req.GetLoads() {
		if t := c.targets.get(l.GetTargetId()); t != nil && t.slotOf(w) >= 0 {
			t.series, t.up = l.GetSeries(), l.GetUp()
		}
	}
	for _, a := range req.GetAcks() {
		t := c.targets.get(a.GetTargetId())
		if t == nil {
			continue
		}
		i := t.slotOf(w)
		if i < 0 || t.slots[i].state != stateIncoming {
			continue
		}
		t.slots[i].state = stateActive
		t.up = a.GetUp()
		c.touch(w, t)
		c.metrics.handoffsCompleted.Inc()
		c.settle(t)
	}
	// Outgoing targets the worker has stopped are removed.
	for id := range w.outgoing {
		t := c.targets.get(id)
		if t == nil {
			delete(w.outgoing, id)
			continue
		}
		i := t.slotOf(w)
		if i >= 0 && t.slots[i].outGen != 0 && t.slots[i].outGen <= w.applied {
			c.dropSlot(t, i)
		}
	}
	c.reconcile()
	c.commit()
	return &shardscrapev1.HeartbeatResponse{
		LeaseTtl:   durationpb.New(c.opts.LeaseTTL),
		Generation: w.lastSent,
	}, nil
}

func (s workerService) Leave(ctx context.Context, req *shardscrapev1.LeaveRequest) (*shardscrapev1.LeaveResponse, error) {
	c := s.c
	c.mu.Lock()
	w, err := c.leased(req.GetWorkerId(), req.GetLeaseEpoch())
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	w.leaving = true
	w.state = shardscrapev1.WorkerState_WORKER_STATE_DRAINING
	c.needReconcile = true
	c.reconcile()
	c.commit()
	c.logger.Info("Worker leaving", "worker", w.id, "targets", w.holders())
	c.mu.Unlock()

	// Answer before the caller's deadline passes.
	if dl, ok := ctx.Deadline(); ok {
		margin := min(time.Until(dl)/5, 2*time.Second)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Wait while another worker can take the targets over: when none is on
	// the ring (the whole fleet is stopping), there is nothing to wait for.
	for w.holders() > 0 && c.workers[w.id] == w && w.alive() && c.anyOnRing() {
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		c.mu.Lock()
		if ctx.Err() != nil {
			break
		}
	}
	if c.workers[w.id] != w || w.epoch != req.GetLeaseEpoch() {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %q: lease expired or superseded during leave", w.id)
	}
	remaining := w.holders()
	c.logger.Info("Worker left", "worker", w.id, "drained", remaining == 0, "remaining", remaining)
	c.release(w, shardscrapev1.WorkerState_WORKER_STATE_UNSPECIFIED)
	c.reconcile()
	c.commit()
	return &shardscrapev1.LeaveResponse{Drained: remaining == 0, RemainingTargetCount: uint64(remaining)}, nil
}

func (s workerService) WatchAssignments(req *shardscrapev1.WatchAssignmentsRequest, stream grpc.ServerStreamingServer[shardscrapev1.WatchAssignmentsResponse]) error {
	c := s.c
	if len(req.GetKnownConfigHashes()) > 100000 {
		return invalid("known_config_hashes: more than 100000")
	}
	c.mu.Lock()
	w, err := c.leased(req.GetWorkerId(), req.GetLeaseEpoch())
	if err != nil {
		c.mu.Unlock()
		return err
	}
	w.endSession(status.Error(codes.Aborted, "superseded by a newer watch"))
	sess := &session{
		wakeCh: make(chan struct{}, 1),
		done:   make(chan struct{}),
		known:  make(map[string]struct{}, len(req.GetKnownConfigHashes())),
	}
	for _, h := range req.GetKnownConfigHashes() {
		sess.known[h] = struct{}{}
	}
	if rg := req.GetResumeGeneration(); rg == 0 || rg != w.lastSent {
		w.needSnapshot = true
		w.pending = nil
	}
	w.sess = sess
	w.wake()
	c.mu.Unlock()

	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sess.done:
			return sess.err
		case <-sess.wakeCh:
		}
		parts := c.buildUpdate(w, sess)
		for _, p := range parts {
			if err := stream.Send(p.msg); err != nil {
				return fmt.Errorf("send to %s: %w", w.id, err)
			}
			c.metrics.streamMessages.Inc()
			c.metrics.streamBytes.Add(float64(p.size))
		}
		if len(parts) > 0 {
			c.sent(w)
		}
	}
}

// sent records that w's stream sent everything built so far, for the
// assignment latency.
func (c *Coordinator) sent(w *worker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.updWaiting[w]; !ok {
		return
	}
	if len(w.pending) > 0 || w.needSnapshot {
		return
	}
	delete(c.updWaiting, w)
	if len(c.updWaiting) == 0 && !c.updStart.IsZero() {
		c.metrics.assignLatency.Observe(c.opts.Now().Sub(c.updStart).Seconds())
		c.updStart = time.Time{}
		if c.onAllSent != nil {
			c.onAllSent()
		}
	}
}
