package scraper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// errRejoin ends a session: the lease is gone (FAILED_PRECONDITION).
var errRejoin = errors.New("lease lost: join again")

func timestampPB(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func durationPB(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// backoff is a jittered exponential backoff.
type backoff struct {
	min, max time.Duration
	n        int
}

// next returns the wait before the next attempt: min·2^n capped at max,
// jittered to [d/2, d).
func (b *backoff) next() time.Duration {
	d := b.min << min(b.n, 30)
	if d > b.max || d <= 0 {
		d = b.max
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// session is the worker's side of the coordinator protocol: join, then
// heartbeat and watch until the lease is lost, then join again; all the
// while the scrape manager keeps running what the worker holds.
type session struct {
	w *Worker

	// Of the current lease; read by leave.
	epoch chan uint64 // holds the current epoch (buffer 1), empty without a lease
	// leaving: Leave was called; a lost lease is not joined again.
	leaving atomic.Bool
}

func newSession(w *Worker) *session {
	return &session{w: w, epoch: make(chan uint64, 1)}
}

func (s *session) setEpoch(e uint64, ok bool) {
	select {
	case <-s.epoch:
	default:
	}
	if ok {
		s.epoch <- e
	}
}

func (s *session) currentEpoch() (uint64, bool) {
	select {
	case e := <-s.epoch:
		s.epoch <- e
		return e, true
	default:
		return 0, false
	}
}

func (s *session) run(ctx context.Context) {
	w := s.w
	bo := backoff{min: w.opts.BackoffMin, max: w.opts.BackoffMax}
	for ctx.Err() == nil && !s.leaving.Load() {
		resp, err := w.opts.Client.Join(ctx, &pb.JoinRequest{
			WorkerId:   w.opts.WorkerID,
			Address:    w.opts.Address,
			Zone:       w.opts.Zone,
			Capacity:   w.opts.Capacity,
			Version:    w.opts.Version,
			Generation: w.Generation(),
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.metrics.connected.Set(0)
			d := bo.next()
			w.logger.Warn("join failed; scraping the last assignment meanwhile", "err", err, "retry_in", d)
			sleep(ctx, d)
			continue
		}
		bo.reset()
		w.metrics.joins.Inc()
		s.setEpoch(resp.LeaseEpoch, true)
		interval := resp.HeartbeatInterval.AsDuration()
		if interval <= 0 {
			interval = DefaultHeartbeat
		}
		w.logger.Info("joined coordinator", "lease_epoch", resp.LeaseEpoch, "heartbeat_interval", interval, "lease_ttl", resp.LeaseTtl.AsDuration())

		lctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 2)
		go func() { errc <- s.heartbeats(lctx, resp.LeaseEpoch, interval) }()
		go func() { errc <- s.watch(lctx, resp.LeaseEpoch) }()
		err = <-errc
		cancel()
		<-errc
		s.setEpoch(0, false)
		w.metrics.connected.Set(0)
		if ctx.Err() != nil {
			return
		}
		if s.leaving.Load() {
			// Leave released the lease; scraping goes on until shutdown.
			<-ctx.Done()
			return
		}
		w.logger.Warn("lease lost; joining again, scraping the last assignment meanwhile", "err", err)
	}
}

func isLeaseLost(err error) bool {
	return status.Code(err) == codes.FailedPrecondition
}

// heartbeats renews the lease every interval, and early when handoff acks
// are due. It returns errRejoin when the lease is lost.
func (s *session) heartbeats(ctx context.Context, epoch uint64, interval time.Duration) error {
	w := s.w
	tick := time.NewTicker(interval)
	defer tick.Stop()
	poll := time.NewTicker(w.opts.AckPoll)
	defer poll.Stop()
	sent := map[uint64]*pb.TargetLoad{} // last loads the coordinator has; empty: send all
	beat := func() error {
		w.collectAcks()
		acks := w.takeAcks()
		loads := w.targetLoads()
		var changed []*pb.TargetLoad
		for id, l := range loads {
			if old, ok := sent[id]; !ok || old.Series != l.Series || old.Up != l.Up ||
				old.ScrapeDuration.AsDuration() != l.ScrapeDuration.AsDuration() {
				changed = append(changed, l)
			}
		}
		resp, err := w.opts.Client.Heartbeat(ctx, &pb.HeartbeatRequest{
			WorkerId:   w.opts.WorkerID,
			LeaseEpoch: epoch,
			Generation: w.Generation(),
			Loads:      changed,
			Acks:       acks,
		})
		if err != nil {
			w.returnAcks(acks)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.metrics.heartbeatFailures.Inc()
			if isLeaseLost(err) {
				return fmt.Errorf("%w: heartbeat: %w", errRejoin, err)
			}
			w.logger.Warn("heartbeat failed", "err", err)
			return nil
		}
		w.metrics.handoffAcks.Add(float64(len(acks)))
		sent = loads
		if resp.Generation > w.Generation() {
			w.logger.Debug("coordinator is ahead", "coordinator_generation", resp.Generation, "applied", w.Generation())
		}
		return nil
	}
	if err := beat(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-poll.C:
			if w.collectAcks() == 0 {
				continue
			}
			tick.Reset(interval)
		}
		if err := beat(); err != nil {
			return err
		}
	}
}

// watch keeps an assignment stream open and applies its updates. A delta
// on another base, or a config it cannot resolve, reopens the stream with
// the generation held; errors reopen it with backoff. It returns
// errRejoin when the lease is lost.
func (s *session) watch(ctx context.Context, epoch uint64) error {
	w := s.w
	bo := backoff{min: w.opts.BackoffMin, max: w.opts.BackoffMax}
	first := true
	for ctx.Err() == nil {
		if !first {
			w.metrics.reconnects.Inc()
		}
		first = false
		err := s.stream(ctx, epoch, &bo)
		w.metrics.connected.Set(0)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if isLeaseLost(err) {
			return fmt.Errorf("%w: watch: %w", errRejoin, err)
		}
		d := bo.next()
		w.logger.Warn("assignment stream ended; reconnecting", "err", err, "retry_in", d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
	return ctx.Err()
}

func (s *session) stream(ctx context.Context, epoch uint64, bo *backoff) error {
	w := s.w
	w.applyMtx.Lock()
	known := make([]string, 0, len(w.bodies))
	for h := range w.bodies {
		known = append(known, h)
	}
	w.applyMtx.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := w.opts.Client.WatchAssignments(sctx, &pb.WatchAssignmentsRequest{
		WorkerId:          w.opts.WorkerID,
		LeaseEpoch:        epoch,
		KnownConfigHashes: known,
		ResumeGeneration:  w.Generation(),
	})
	if err != nil {
		return fmt.Errorf("watch assignments: %w", err)
	}
	var acc *pb.WatchAssignmentsResponse
	for {
		msg, err := st.Recv()
		if err == io.EOF {
			return errors.New("assignment stream closed by the coordinator")
		}
		if err != nil {
			return fmt.Errorf("receive assignment: %w", err)
		}
		w.metrics.connected.Set(1)
		if acc != nil && (msg.Generation != acc.Generation || msg.Snapshot != acc.Snapshot) {
			return fmt.Errorf("part of generation %d interleaved with generation %d", msg.Generation, acc.Generation)
		}
		acc = mergeParts(acc, msg)
		if msg.Partial {
			continue
		}
		u := acc
		acc = nil
		if err := w.applyUpdate(u); err != nil {
			return fmt.Errorf("apply generation %d: %w", u.Generation, err)
		}
		bo.reset()
	}
}

// leave drains the worker (Leave, bounded by timeout) while the session
// keeps heartbeating and watching. It reports whether every target was
// handed over.
func (s *session) leave(timeout time.Duration) bool {
	w := s.w
	s.leaving.Store(true)
	epoch, ok := s.currentEpoch()
	if !ok {
		w.logger.Warn("no lease to leave; stopping targets as Prometheus does")
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := w.opts.Client.Leave(ctx, &pb.LeaveRequest{WorkerId: w.opts.WorkerID, LeaseEpoch: epoch})
	if err != nil {
		w.logger.Warn("leave failed; stopping targets as Prometheus does", "err", err)
		return false
	}
	w.logger.Info("left coordinator", "drained", resp.Drained, "remaining_targets", resp.RemainingTargetCount)
	return resp.Drained
}
