package coordinator

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"github.com/thanos-io/objstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// env is a coordinator served over bufconn.
type env struct {
	t      testing.TB
	c      *Coordinator
	clock  *fakeClock
	reg    *prometheus.Registry
	bucket objstore.Bucket
	srv    *grpc.Server
	conn   *grpc.ClientConn
	wc     shardscrapev1.WorkerServiceClient
	ac     shardscrapev1.AdminServiceClient
	stop   func()
}

func newEnv(t testing.TB, bucket objstore.Bucket, clock *fakeClock, opts Options) *env {
	t.Helper()
	if clock == nil {
		clock = newClock()
	}
	opts.Bucket = bucket
	opts.Now = clock.Now
	reg := prometheus.NewRegistry()
	c, err := New(context.Background(), opts, nil, reg)
	require.NoError(t, err)
	e := &env{t: t, c: c, clock: clock, reg: reg, bucket: bucket}

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	c.Register(srv)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	e.conn = conn
	e.srv = srv
	e.wc = shardscrapev1.NewWorkerServiceClient(conn)
	e.ac = shardscrapev1.NewAdminServiceClient(conn)
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			_ = conn.Close()
			srv.Stop()
			wg.Wait()
		})
	}
	t.Cleanup(e.stop)
	return e
}

// fakeWorker is an in-process worker: it joins, applies its stream and
// heartbeats on demand.
type fakeWorker struct {
	e      *env
	id     string
	epoch  uint64
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	gen       uint64
	targets   map[uint64]*shardscrapev1.Target
	configs   map[string]*shardscrapev1.ScrapeConfig
	global    *shardscrapev1.GlobalConfig
	removed   map[uint64]int
	snapshots int
	parts     int
	partials  int
	lastMsgs  []*shardscrapev1.WatchAssignmentsResponse
	err       error
}

func (e *env) join(id string, gen uint64) *fakeWorker {
	e.t.Helper()
	return e.joinWith(&shardscrapev1.JoinRequest{WorkerId: id, Address: id + ":9090", Generation: gen})
}

func (e *env) joinWith(req *shardscrapev1.JoinRequest) *fakeWorker {
	e.t.Helper()
	resp, err := e.wc.Join(context.Background(), req)
	require.NoError(e.t, err)
	fw := &fakeWorker{e: e, id: req.GetWorkerId(), epoch: resp.GetLeaseEpoch(),
		targets: map[uint64]*shardscrapev1.Target{}, configs: map[string]*shardscrapev1.ScrapeConfig{}, removed: map[uint64]int{}}
	fw.watch(0, nil)
	return fw
}

// watch opens the assignment stream.
func (fw *fakeWorker) watch(resume uint64, known []string) {
	fw.with(func() { fw.err = nil })
	fw.e.c.mu.Lock()
	var old *session
	if w := fw.e.c.workers[fw.id]; w != nil {
		old = w.sess
	}
	fw.e.c.mu.Unlock()
	defer func() {
		// Return once the coordinator serves the new stream.
		require.Eventually(fw.e.t, func() bool {
			fw.e.c.mu.Lock()
			defer fw.e.c.mu.Unlock()
			w := fw.e.c.workers[fw.id]
			return w != nil && w.sess != nil && w.sess != old
		}, 10*time.Second, time.Millisecond)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	fw.cancel = cancel
	fw.done = make(chan struct{})
	stream, err := fw.e.wc.WatchAssignments(ctx, &shardscrapev1.WatchAssignmentsRequest{
		WorkerId: fw.id, LeaseEpoch: fw.epoch, ResumeGeneration: resume, KnownConfigHashes: known})
	require.NoError(fw.e.t, err)
	go func() {
		defer close(fw.done)
		var acc []*shardscrapev1.WatchAssignmentsResponse
		for {
			m, err := stream.Recv()
			if err != nil {
				fw.mu.Lock()
				fw.err = err
				fw.mu.Unlock()
				return
			}
			acc = append(acc, m)
			fw.mu.Lock()
			fw.parts++
			if m.GetPartial() {
				fw.partials++
				fw.mu.Unlock()
				continue
			}
			fw.apply(acc)
			fw.mu.Unlock()
			acc = nil
		}
	}()
	fw.e.t.Cleanup(fw.stop)
}

func (fw *fakeWorker) stop() {
	if fw.cancel != nil {
		fw.cancel()
		<-fw.done
	}
}

func (fw *fakeWorker) apply(msgs []*shardscrapev1.WatchAssignmentsResponse) {
	fw.lastMsgs = msgs
	first := msgs[0]
	if first.GetSnapshot() {
		fw.snapshots++
		fw.targets = map[uint64]*shardscrapev1.Target{}
		fw.configs = map[string]*shardscrapev1.ScrapeConfig{}
	} else if first.GetBaseGeneration() != fw.gen {
		fw.err = fmt.Errorf("delta on %d, holding %d", first.GetBaseGeneration(), fw.gen)
		return
	}
	for _, m := range msgs {
		if m.GetGeneration() != first.GetGeneration() {
			fw.err = fmt.Errorf("parts of generations %d and %d", first.GetGeneration(), m.GetGeneration())
		}
		if m.GetGlobal() != nil {
			fw.global = m.GetGlobal()
		}
		for _, c := range m.GetConfigs() {
			fw.configs[c.GetJobName()] = c
		}
		for _, j := range m.GetRemovedJobs() {
			delete(fw.configs, j)
		}
		for _, id := range m.GetRemovedTargetIds() {
			delete(fw.targets, id)
			fw.removed[id]++
		}
		for _, t := range m.GetUpserts() {
			fw.targets[t.GetId()] = t
		}
	}
	fw.gen = first.GetGeneration()
}

// with runs f holding fw's lock (released even when f fails the test).
func (fw *fakeWorker) with(f func()) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	f()
}

// owned returns the worker's targets that are not outgoing, by state.
func (fw *fakeWorker) owned() map[uint64]shardscrapev1.TargetState {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	m := map[uint64]shardscrapev1.TargetState{}
	for id, t := range fw.targets {
		if t.GetState() != stateOutgoing {
			m[id] = t.GetState()
		}
	}
	return m
}

func (fw *fakeWorker) state(id uint64) shardscrapev1.TargetState {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if t, ok := fw.targets[id]; ok {
		return t.GetState()
	}
	return stateNew
}

func (fw *fakeWorker) generation() uint64 {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.gen
}

func (fw *fakeWorker) heartbeat(acks ...uint64) (*shardscrapev1.HeartbeatResponse, error) {
	req := &shardscrapev1.HeartbeatRequest{WorkerId: fw.id, LeaseEpoch: fw.epoch, Generation: fw.generation()}
	for _, id := range acks {
		req.Acks = append(req.Acks, &shardscrapev1.HandoffAck{TargetId: id, Up: true})
	}
	return fw.e.wc.Heartbeat(context.Background(), req)
}

// ackAll acknowledges every incoming target.
func (fw *fakeWorker) ackAll() {
	fw.e.t.Helper()
	var acks []uint64
	for id, s := range fw.owned() {
		if s == stateIncoming {
			acks = append(acks, id)
		}
	}
	_, err := fw.heartbeat(acks...)
	require.NoError(fw.e.t, err)
}

// synced says whether fw holds everything the coordinator has for it.
func (e *env) synced(fws ...*fakeWorker) bool {
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	for _, fw := range fws {
		w := e.c.workers[fw.id]
		if w == nil || w.wanted || len(w.pending) > 0 || w.needSnapshot || w.lastSent == 0 {
			return false
		}
		if fw.generation() != w.lastSent {
			return false
		}
	}
	return true
}

func (e *env) waitSynced(fws ...*fakeWorker) {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return e.synced(fws...) }, 10*time.Second, time.Millisecond, "workers never synced")
	for _, fw := range fws {
		fw.mu.Lock()
		err := fw.err
		fw.mu.Unlock()
		require.NoError(e.t, err, fw.id)
	}
}

// checkOwned checks that each worker's owned list holds exactly the
// targets with its slot, each at its slot's pos. The caller holds e.c.mu.
func (e *env) checkOwned() {
	e.t.Helper()
	slots := map[*worker]int{}
	for _, t := range e.c.targets.all() {
		for _, s := range t.slots {
			slots[s.w]++
			require.Same(e.t, t, s.w.owned[s.pos], "worker %s target %x", s.w.id, t.ID)
		}
	}
	for _, w := range e.c.workers {
		require.Equal(e.t, slots[w], w.ownedCount(), w.id)
		free := 0
		for _, t := range w.owned {
			if t == nil {
				free++
			}
		}
		require.Equal(e.t, w.ownedFree, free, w.id)
	}
}

// settle acknowledges handoffs and reports generations until nothing is
// moving.
func (e *env) settle(fws ...*fakeWorker) {
	e.t.Helper()
	for range 20 {
		e.waitSynced(fws...)
		for _, fw := range fws {
			fw.ackAll()
		}
		e.waitSynced(fws...)
		for _, fw := range fws {
			_, err := fw.heartbeat()
			require.NoError(e.t, err)
		}
		e.waitSynced(fws...)
		e.c.mu.Lock()
		e.checkOwned()
		busy := len(e.c.handoffs) > 0
		for _, w := range e.c.workers {
			busy = busy || len(w.outgoing) > 0
		}
		e.c.mu.Unlock()
		if !busy {
			return
		}
	}
	e.t.Fatal("handoffs never settled")
}

// ownersOf collects, from the workers' streams, who holds each target.
func ownersOf(fws ...*fakeWorker) map[uint64][]string {
	m := map[uint64][]string{}
	for _, fw := range fws {
		for id := range fw.owned() {
			m[id] = append(m[id], fw.id)
		}
	}
	return m
}

func makeTargets(job string, n int) []relabel.Target {
	ts := make([]relabel.Target, n)
	for i := range ts {
		addr := fmt.Sprintf("10.0.%d.%d:9100", i/250, i%250)
		ts[i] = relabel.Target{
			ID:      xxhash.Sum64String(job + "/" + addr),
			Job:     job,
			Address: addr,
			Key:     xxhash.Sum64String(addr),
			Labels:  labels.FromStrings("__address__", addr, "__meta_test_index", fmt.Sprint(i)),
		}
	}
	return ts
}
