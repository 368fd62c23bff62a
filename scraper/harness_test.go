package scraper

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shardscrape/shardscrape/internal/targetid"
	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// recorder is a storage.AppendableV2 between the scrape manager and the
// real storage that notes every committed float sample.
type recorder struct {
	inner storage.AppendableV2

	mtx     sync.Mutex
	last    map[string]float64 // series → last value
	samples map[string]int     // instance → samples
	series  map[string]int     // series → samples
	stale   map[string]int     // instance → staleness markers
}

func newRecorder() *recorder {
	return &recorder{last: map[string]float64{}, samples: map[string]int{}, stale: map[string]int{}, series: map[string]int{}}
}

func (r *recorder) wrap(inner storage.AppendableV2) storage.AppendableV2 {
	r.inner = inner
	return r
}

func (r *recorder) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return &recApp{AppenderV2: r.inner.AppenderV2(ctx), r: r}
}

type recSample struct {
	ls labels.Labels
	v  float64
}

type recApp struct {
	storage.AppenderV2
	r   *recorder
	buf []recSample
}

func (a *recApp) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	if h == nil && fh == nil {
		a.buf = append(a.buf, recSample{ls: ls.Copy(), v: v})
	}
	return a.AppenderV2.Append(ref, ls, st, t, v, h, fh, opts)
}

func (a *recApp) Commit() error {
	a.r.mtx.Lock()
	for _, s := range a.buf {
		inst := s.ls.Get("instance")
		if value.IsStaleNaN(s.v) {
			a.r.stale[inst]++
			continue
		}
		a.r.samples[inst]++
		a.r.series[s.ls.String()]++
		a.r.last[s.ls.String()] = s.v
	}
	a.r.mtx.Unlock()
	return a.AppenderV2.Commit()
}

func (r *recorder) value(ls labels.Labels) (float64, bool) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	v, ok := r.last[ls.String()]
	return v, ok
}

// seriesCounts returns the samples appended per series (labels.String).
func (r *recorder) seriesCounts() map[string]int {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	out := make(map[string]int, len(r.series))
	for k, v := range r.series {
		out[k] = v
	}
	return out
}

func (r *recorder) staleCount(instance string) int {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return r.stale[instance]
}

func (r *recorder) sampleCount(instance string) int {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return r.samples[instance]
}

// up returns the last up value of job's target at instance.
func (r *recorder) up(job, instance string) (float64, bool) {
	return r.value(labels.FromStrings("__name__", "up", "instance", instance, "job", job))
}

const exposition = "# TYPE demo_gauge gauge\ndemo_gauge 42\n# TYPE demo_total counter\ndemo_total 7\n"

// target starts an HTTP target serving body; it returns its host:port.
func target(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(exposition)) }
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	u, err := url.Parse(s.URL)
	require.NoError(t, err)
	return u.Host
}

// fakeCoordinator is a scripted WorkerService.
type fakeCoordinator struct {
	pb.UnimplementedWorkerServiceServer

	mtx        sync.Mutex
	epoch      uint64
	joins      []*pb.JoinRequest
	heartbeats []*pb.HeartbeatRequest
	watches    []*pb.WatchAssignmentsRequest
	hbErr      error
	leaves     []*pb.LeaveRequest
	leaveResp  *pb.LeaveResponse
	cur        chan *pb.WatchAssignmentsResponse // the open stream's queue
	kill       chan error
}

func (f *fakeCoordinator) Join(_ context.Context, r *pb.JoinRequest) (*pb.JoinResponse, error) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	f.epoch++
	f.joins = append(f.joins, r)
	return &pb.JoinResponse{
		LeaseEpoch:        f.epoch,
		LeaseTtl:          durationpb.New(time.Minute),
		HeartbeatInterval: durationpb.New(200 * time.Millisecond),
	}, nil
}

func (f *fakeCoordinator) Heartbeat(_ context.Context, r *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if f.hbErr != nil {
		err := f.hbErr
		f.hbErr = nil
		return nil, err
	}
	if r.LeaseEpoch != f.epoch {
		return nil, status.Error(codes.FailedPrecondition, "unknown lease")
	}
	f.heartbeats = append(f.heartbeats, r)
	return &pb.HeartbeatResponse{LeaseTtl: durationpb.New(time.Minute)}, nil
}

func (f *fakeCoordinator) Leave(_ context.Context, r *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	f.leaves = append(f.leaves, r)
	if f.leaveResp == nil {
		return &pb.LeaveResponse{}, nil
	}
	return f.leaveResp, nil
}

func (f *fakeCoordinator) WatchAssignments(r *pb.WatchAssignmentsRequest, st grpc.ServerStreamingServer[pb.WatchAssignmentsResponse]) error {
	ch := make(chan *pb.WatchAssignmentsResponse, 100)
	kill := make(chan error, 1)
	f.mtx.Lock()
	f.watches = append(f.watches, r)
	f.cur, f.kill = ch, kill
	f.mtx.Unlock()
	for {
		select {
		case <-st.Context().Done():
			return nil
		case err := <-kill:
			return err
		case m := <-ch:
			if err := st.Send(m); err != nil {
				return err
			}
		}
	}
}

// send queues messages on the stream opened as the n-th watch (from 1).
func (f *fakeCoordinator) send(t *testing.T, n int, msgs ...*pb.WatchAssignmentsResponse) {
	t.Helper()
	var ch chan *pb.WatchAssignmentsResponse
	require.Eventually(t, func() bool {
		f.mtx.Lock()
		defer f.mtx.Unlock()
		ch = f.cur
		return len(f.watches) >= n && ch != nil
	}, 10*time.Second, 10*time.Millisecond, "watch %d", n)
	for _, m := range msgs {
		ch <- m
	}
}

func (f *fakeCoordinator) watchReqs() []*pb.WatchAssignmentsRequest {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return append([]*pb.WatchAssignmentsRequest(nil), f.watches...)
}

func (f *fakeCoordinator) joinReqs() []*pb.JoinRequest {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	return append([]*pb.JoinRequest(nil), f.joins...)
}

func (f *fakeCoordinator) acked(id uint64) bool {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	for _, h := range f.heartbeats {
		for _, a := range h.Acks {
			if a.TargetId == id {
				return true
			}
		}
	}
	return false
}

func (f *fakeCoordinator) load(id uint64) *pb.TargetLoad {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	var l *pb.TargetLoad
	for _, h := range f.heartbeats {
		for _, x := range h.Loads {
			if x.TargetId == id {
				l = x
			}
		}
	}
	return l
}

// serve starts f on 127.0.0.1 and returns a client to it and the server.
func serve(t *testing.T, f *fakeCoordinator) (pb.WorkerServiceClient, *grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := grpc.NewServer()
	pb.RegisterWorkerServiceServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return dial(t, lis.Addr().String()), s, lis.Addr().String()
}

func dial(t *testing.T, addr string) pb.WorkerServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return pb.NewWorkerServiceClient(cc)
}

// jobYAML is a scrape config element scraping fast.
func jobYAML(job string) []byte {
	return fmt.Appendf(nil, "job_name: %s\nscrape_interval: 200ms\nscrape_timeout: 150ms\n", job)
}

func scrapeConfig(job string) *pb.ScrapeConfig {
	y := jobYAML(job)
	return &pb.ScrapeConfig{Hash: "h-" + job, JobName: job, Yaml: y}
}

func pbTarget(job, addr string, state pb.TargetState) *pb.Target {
	return &pb.Target{
		Id:    idOf(job, addr),
		Job:   job,
		State: state,
		Labels: []*pb.Label{
			{Name: "__address__", Value: addr},
			{Name: "__meta_test", Value: "x"},
		},
	}
}

// idOf is the target id the coordinator would compute for a target with
// only __address__ under a job without relabeling.
func idOf(job, addr string) uint64 {
	cfg, err := promconfig.Load("scrape_configs:\n- "+strings.ReplaceAll(string(jobYAML(job)), "\n", "\n  "), nil)
	if err != nil {
		panic(err)
	}
	ts, errs := scrape.TargetsFromGroup(&targetgroup.Group{
		Targets: []model.LabelSet{{"__address__": model.LabelValue(addr), "__meta_test": "x"}},
	}, cfg.ScrapeConfigs[0], nil, labels.NewBuilder(labels.EmptyLabels()))
	if len(errs) > 0 || len(ts) != 1 {
		panic(fmt.Sprint(errs))
	}
	return targetid.Of(job, ts[0])
}

// workerOpts are options for a fast worker in dir.
func workerOpts(dir string, c pb.WorkerServiceClient) Options {
	return Options{
		Client:          c,
		WorkerID:        "worker-0",
		Address:         "127.0.0.1:1",
		StoragePath:     dir,
		LeaveOnShutdown: true,
		HandoffTimeout:  5 * time.Second,
		FlushDeadline:   time.Second,
		BackoffMin:      20 * time.Millisecond,
		BackoffMax:      200 * time.Millisecond,
		AckPoll:         50 * time.Millisecond,
		Scrape:          &scrape.Options{DiscoveryReloadInterval: model.Duration(50 * time.Millisecond)},
	}
}

type running struct {
	w      *Worker
	rec    *recorder
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, opts Options) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := New(opts, nil, reg)
	require.NoError(t, err)
	rec := newRecorder()
	w.wrap = rec.wrap
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, rec: rec, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		require.NoError(t, err)
		r.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop")
	}
}

// deadAddr returns a 127.0.0.1 address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}
