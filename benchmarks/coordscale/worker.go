package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// Figures a simulated worker reports for the targets it scrapes: every
// target has this load.
const (
	simSeries         = 100
	simScrapeDuration = 10 * time.Millisecond
	// maxRecvMsgBytes: the coordinator splits updates at 4 MiB; leave room.
	maxRecvMsgBytes = 64 << 20
)

// simWorker is a scraper worker without scraping: it joins, heartbeats at
// the lease cadence with its applied generation, the loads of targets it
// newly scrapes and the handoff acks of its incoming targets (each
// "scraped" as soon as its update is applied, acked at the next ack poll,
// as scraper/session.go acks a first completed scrape), keeps an
// assignment stream open and applies it into its view, and leaves by the
// Leave RPC while still heartbeating and watching, as a SIGTERM'd worker
// does.
type simWorker struct {
	id      string
	ackPoll time.Duration
	// changed is signalled (never blocking) after every applied update.
	changed chan<- struct{}

	unaryConn, streamConn *grpc.ClientConn
	client                pb.WorkerServiceClient
	// streamWire counts the bytes read on the stream's own connection.
	streamWire atomic.Int64
	// payload counts the assignment messages' protobuf bytes.
	payload    atomic.Int64
	updates    atomic.Int64
	reconnects atomic.Int64
	rejoins    atomic.Int64

	mu        sync.Mutex
	v         *view
	lastApply time.Time
	// lastOwning: the last update that changed what the worker holds
	// ACTIVE or INCOMING.
	lastOwning time.Time
	acks       []*pb.HandoffAck
	loads      []uint64

	epoch atomic.Uint64
	// leaving: Leave was called; a lost lease is not joined again (the
	// coordinator releases the worker when Leave returns).
	leaving atomic.Bool
	joined  chan struct{} // closed after the first Join
	first   chan struct{} // closed after the first applied update
	err     error         // why run ended, other than its context
	cancel  context.CancelFunc
	done    chan struct{}
}

// newSimWorker dials the coordinator twice: one connection for unary
// calls, one (counted) for the assignment stream.
func newSimWorker(addr, id string, ackPoll time.Duration, changed chan<- struct{}) (*simWorker, error) {
	w := &simWorker{id: id, ackPoll: ackPoll, changed: changed, v: newView(),
		joined: make(chan struct{}), first: make(chan struct{}), done: make(chan struct{})}
	var err error
	w.unaryConn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial coordinator %s: %w", addr, err)
	}
	w.streamConn, err = grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(countingDialer(&w.streamWire)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgBytes)))
	if err != nil {
		_ = w.unaryConn.Close()
		return nil, fmt.Errorf("dial coordinator %s: %w", addr, err)
	}
	w.client = pb.NewWorkerServiceClient(w.unaryConn)
	return w, nil
}

// start runs the worker until stop.
func (w *simWorker) start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		w.err = w.run(ctx)
	}()
}

// stop ends the worker (without Leave: as a killed worker) and closes its
// connections.
func (w *simWorker) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
	_ = w.unaryConn.Close()
	_ = w.streamConn.Close()
}

func leaseLost(err error) bool { return status.Code(err) == codes.FailedPrecondition }

// run joins and then heartbeats and watches until ctx ends, joining again
// when the lease is lost.
func (w *simWorker) run(ctx context.Context) error {
	joinedOnce := false
	for ctx.Err() == nil {
		resp, err := w.client.Join(ctx, &pb.JoinRequest{WorkerId: w.id, Address: w.id + ":0", Version: "coordscale", Generation: w.generation()})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("worker %s: join: %w", w.id, err)
		}
		w.epoch.Store(resp.GetLeaseEpoch())
		if !joinedOnce {
			joinedOnce = true
			close(w.joined)
		} else {
			w.rejoins.Add(1)
		}
		interval := resp.GetHeartbeatInterval().AsDuration()
		if interval <= 0 {
			interval = 5 * time.Second
		}
		lctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 2)
		go func() { errc <- w.heartbeats(lctx, resp.GetLeaseEpoch(), interval) }()
		go func() { errc <- w.watch(lctx, resp.GetLeaseEpoch()) }()
		err = <-errc
		cancel()
		<-errc
		if ctx.Err() != nil || w.leaving.Load() {
			return nil
		}
		if !leaseLost(err) {
			return fmt.Errorf("worker %s: %w", w.id, err)
		}
	}
	return nil
}

func (w *simWorker) generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v.gen
}

// heartbeats renews the lease every interval, and early when acks are
// due (checked every ackPoll).
func (w *simWorker) heartbeats(ctx context.Context, epoch uint64, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	poll := time.NewTicker(w.ackPoll)
	defer poll.Stop()
	beat := func() error {
		w.mu.Lock()
		acks, ids, gen := w.acks, w.loads, w.v.gen
		w.acks, w.loads = nil, nil
		w.mu.Unlock()
		loads := make([]*pb.TargetLoad, len(ids))
		for i, id := range ids {
			loads[i] = &pb.TargetLoad{TargetId: id, Series: simSeries, ScrapeDuration: durationpb.New(simScrapeDuration), Up: true}
		}
		_, err := w.client.Heartbeat(ctx, &pb.HeartbeatRequest{WorkerId: w.id, LeaseEpoch: epoch, Generation: gen, Loads: loads, Acks: acks})
		if err != nil {
			w.mu.Lock()
			w.acks = append(w.acks, acks...)
			w.loads = append(w.loads, ids...)
			w.mu.Unlock()
			if ctx.Err() != nil || leaseLost(err) {
				return err
			}
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
			w.mu.Lock()
			n := len(w.acks)
			w.mu.Unlock()
			if n == 0 {
				continue
			}
			tick.Reset(interval)
		}
		if err := beat(); err != nil {
			return err
		}
	}
}

// watch keeps the assignment stream open; a delta on another base reopens
// it with the generation held (the coordinator answers with a snapshot).
func (w *simWorker) watch(ctx context.Context, epoch uint64) error {
	for ctx.Err() == nil {
		err := w.stream(ctx, epoch)
		if ctx.Err() != nil || leaseLost(err) {
			return err
		}
		if !errors.Is(err, errBaseMismatch) {
			return err
		}
		w.reconnects.Add(1)
	}
	return ctx.Err()
}

func (w *simWorker) stream(ctx context.Context, epoch uint64) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := w.streamConn.NewStream(sctx, &pb.WorkerService_ServiceDesc.Streams[0],
		pb.WorkerService_WatchAssignments_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return fmt.Errorf("watch assignments: %w", err)
	}
	if err := cs.SendMsg(&pb.WatchAssignmentsRequest{WorkerId: w.id, LeaseEpoch: epoch, ResumeGeneration: w.generation()}); err != nil {
		return fmt.Errorf("watch assignments: %w", err)
	}
	if err := cs.CloseSend(); err != nil {
		return fmt.Errorf("watch assignments: %w", err)
	}
	var acc *update
	for {
		var part update
		if err := cs.RecvMsg(&part); err != nil {
			if err == io.EOF {
				return errors.New("assignment stream closed by the coordinator")
			}
			return fmt.Errorf("receive assignment: %w", err)
		}
		w.payload.Add(int64(part.bytes))
		if acc == nil {
			acc = &part
		} else {
			if part.gen != acc.gen || part.snapshot != acc.snapshot {
				return fmt.Errorf("part of generation %d interleaved with generation %d", part.gen, acc.gen)
			}
			acc.merge(&part)
		}
		if part.partial {
			continue
		}
		u := acc
		acc = nil
		if err := w.apply(u); err != nil {
			return err
		}
	}
}

// apply applies a whole update, queues acks and loads, and signals the
// benchmark.
func (w *simWorker) apply(u *update) error {
	now := time.Now()
	w.mu.Lock()
	res, err := w.v.apply(u)
	if err == nil {
		w.lastApply = now
		if res.owning {
			w.lastOwning = now
		}
		for _, id := range res.newIncoming {
			w.acks = append(w.acks, &pb.HandoffAck{TargetId: id, ScrapeTime: timestamppb.New(now), Up: true})
		}
		w.loads = append(w.loads, res.newScraped...)
	}
	w.mu.Unlock()
	if err != nil {
		return err
	}
	w.updates.Add(1)
	select {
	case <-w.first:
	default:
		close(w.first)
	}
	select {
	case w.changed <- struct{}{}:
	default:
	}
	return nil
}

// leave calls Leave while the worker keeps heartbeating and watching.
func (w *simWorker) leave(ctx context.Context) (*pb.LeaveResponse, error) {
	w.leaving.Store(true)
	resp, err := w.client.Leave(ctx, &pb.LeaveRequest{WorkerId: w.id, LeaseEpoch: w.epoch.Load()})
	if err != nil {
		return nil, fmt.Errorf("worker %s: leave: %w", w.id, err)
	}
	return resp, nil
}

// counts returns the view's target counts by state and its last apply.
func (w *simWorker) counts() (active, incoming, outgoing int, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v.active, w.v.incoming, w.v.outgoing, w.lastApply
}
