package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shardscrape/shardscrape/internal/rpc"
	v1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testNow = time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)

func jobAddr(job, addr string) *v1.TargetRef {
	return &v1.TargetRef{Ref: &v1.TargetRef_JobAddress{JobAddress: &v1.JobAddress{Job: job, Address: addr}}}
}

func idRef(id uint64) *v1.TargetRef { return &v1.TargetRef{Ref: &v1.TargetRef_Id{Id: id}} }

func assigned(id uint64, job, addr string, owners ...*v1.Owner) *v1.AssignedTarget {
	return &v1.AssignedTarget{
		Target: &v1.Target{Id: id, Job: job, Labels: []*v1.Label{
			{Name: "__address__", Value: addr}, {Name: "__meta_pod_name", Value: "pod-" + strconv.FormatUint(id, 10)},
		}},
		Owners: owners, SeriesCount: 100 + id, Up: true,
	}
}

// fakeAdmin records every request and answers with canned responses, or
// with err when set.
type fakeAdmin struct {
	v1.UnimplementedAdminServiceServer

	mu    sync.Mutex
	reqs  []proto.Message
	err   error
	block bool // calls wait for their context to end

	workers  *v1.ListWorkersResponse
	targets  []*v1.AssignedTarget
	page     int // targets per page when the request names none
	locate   *v1.LocateTargetResponse
	ring     *v1.RingStatusResponse
	preview  *v1.PreviewRebalanceResponse
	assigned *v1.AssignedTarget
}

func newFakeAdmin() *fakeAdmin {
	return &fakeAdmin{
		page: 2,
		workers: &v1.ListWorkersResponse{Workers: []*v1.Worker{{
			Id: "scraper-0", Address: "10.0.0.10:9095", Zone: "a", Capacity: 1, State: v1.WorkerState_WORKER_STATE_ACTIVE,
			Version: "0.1.0", LeaseExpireTime: timestamppb.New(testNow.Add(12 * time.Second)),
			LastHeartbeatTime: timestamppb.New(testNow.Add(-3 * time.Second)), GenerationSent: 42, GenerationApplied: 41,
			TargetCount: 500, IncomingTargetCount: 2, OutgoingTargetCount: 1, SeriesCount: 123456,
		}, {
			Id: "scraper-1", State: v1.WorkerState_WORKER_STATE_DRAINED, Capacity: 2,
		}}},
		targets: []*v1.AssignedTarget{
			assigned(0x1, "node", "10.0.0.1:9100", &v1.Owner{WorkerId: "scraper-0", State: v1.TargetState_TARGET_STATE_ACTIVE}),
			assigned(0x2, "node", "10.0.0.2:9100",
				&v1.Owner{WorkerId: "scraper-0", State: v1.TargetState_TARGET_STATE_OUTGOING},
				&v1.Owner{WorkerId: "scraper-2", State: v1.TargetState_TARGET_STATE_INCOMING}),
			assigned(0xdeadbeef00000003, "kube/pods", "10.1.0.3:8080"),
			assigned(0x4, "node", "10.0.0.4:9100", &v1.Owner{WorkerId: "scraper-1", State: v1.TargetState_TARGET_STATE_ACTIVE}),
			assigned(0x5, "node", "10.0.0.5:9100", &v1.Owner{WorkerId: "scraper-1", State: v1.TargetState_TARGET_STATE_ACTIVE}),
		},
		locate: &v1.LocateTargetResponse{
			Target:    assigned(0x2a, "node", "10.0.0.42:9100", &v1.Owner{WorkerId: "scraper-7", State: v1.TargetState_TARGET_STATE_ACTIVE}),
			Reason:    v1.LocateReason_LOCATE_REASON_SPILLED,
			RingOwner: "scraper-3",
			Detail:    "scraper-3 at bound 5100, spilled to scraper-7",
		},
		ring: &v1.RingStatusResponse{
			Members: []*v1.RingMember{
				{Id: "scraper-0", Zone: "a", Weight: 1, VirtualNodes: 128, OwnedFraction: 0.4912, TargetCount: 510, Bound: 625, LoadOverMean: 1.02},
				{Id: "scraper-1", Zone: "b", Weight: 1, VirtualNodes: 128, OwnedFraction: 0.5088, TargetCount: 490, Bound: 625, LoadOverMean: 0.98},
			},
			LoadFactor: 1.25, VirtualNodesPerWeight: 128, ReplicationFactor: 1, Imbalance: 1.02,
			RebalancingPaused: true, PauseReason: "incident 42", TargetCount: 1000,
		},
		preview: &v1.PreviewRebalanceResponse{
			TargetCount: 1000, MovedTargetCount: 334, MovedOverIdeal: 1.002,
			Counts: []*v1.MoveCount{{FromWorkerId: "scraper-0", ToWorkerId: "scraper-2", TargetCount: 170}, {FromWorkerId: "scraper-1", ToWorkerId: "scraper-2", TargetCount: 164}},
			Moves:  []*v1.TargetMove{{TargetId: 0x1, Job: "node", Address: "10.0.0.1:9100", FromWorkerId: "scraper-0", ToWorkerId: "scraper-2"}},
		},
		assigned: func() *v1.AssignedTarget {
			a := assigned(0x2a, "node", "10.0.0.42:9100", &v1.Owner{WorkerId: "scraper-1", State: v1.TargetState_TARGET_STATE_INCOMING})
			a.PinnedWorkerId = "scraper-1"
			return a
		}(),
	}
}

func (f *fakeAdmin) record(ctx context.Context, req proto.Message) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	err, block := f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (f *fakeAdmin) requests() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.reqs...)
}

func (f *fakeAdmin) ListWorkers(ctx context.Context, req *v1.ListWorkersRequest) (*v1.ListWorkersResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.workers, nil
}

// ListTargets pages through f.targets; a page token is the next index.
func (f *fakeAdmin) ListTargets(ctx context.Context, req *v1.ListTargetsRequest) (*v1.ListTargetsResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	start := 0
	if req.GetPageToken() != "" {
		var err error
		if start, err = strconv.Atoi(req.GetPageToken()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "bad page token %q", req.GetPageToken())
		}
	}
	n := int(req.GetPageSize())
	if n == 0 {
		n = f.page
	}
	end := min(start+n, len(f.targets))
	resp := &v1.ListTargetsResponse{Targets: f.targets[start:end], Total: uint64(len(f.targets))}
	if end < len(f.targets) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (f *fakeAdmin) LocateTarget(ctx context.Context, req *v1.LocateTargetRequest) (*v1.LocateTargetResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.locate, nil
}

func (f *fakeAdmin) RingStatus(ctx context.Context, req *v1.RingStatusRequest) (*v1.RingStatusResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.ring, nil
}

func (f *fakeAdmin) DrainWorker(ctx context.Context, req *v1.DrainWorkerRequest) (*v1.DrainWorkerResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.DrainWorkerResponse{Worker: &v1.Worker{Id: req.GetWorkerId(), State: v1.WorkerState_WORKER_STATE_DRAINING}, MovingTargetCount: 510}, nil
}

func (f *fakeAdmin) UndrainWorker(ctx context.Context, req *v1.UndrainWorkerRequest) (*v1.UndrainWorkerResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.UndrainWorkerResponse{Worker: &v1.Worker{Id: req.GetWorkerId(), State: v1.WorkerState_WORKER_STATE_ACTIVE}}, nil
}

func (f *fakeAdmin) PinTarget(ctx context.Context, req *v1.PinTargetRequest) (*v1.PinTargetResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.PinTargetResponse{Target: f.assigned}, nil
}

func (f *fakeAdmin) UnpinTarget(ctx context.Context, req *v1.UnpinTargetRequest) (*v1.UnpinTargetResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.UnpinTargetResponse{Target: f.assigned}, nil
}

func (f *fakeAdmin) ExcludeTarget(ctx context.Context, req *v1.ExcludeTargetRequest) (*v1.ExcludeTargetResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.ExcludeTargetResponse{}, nil
}

func (f *fakeAdmin) IncludeTarget(ctx context.Context, req *v1.IncludeTargetRequest) (*v1.IncludeTargetResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.IncludeTargetResponse{}, nil
}

func (f *fakeAdmin) PauseRebalancing(ctx context.Context, req *v1.PauseRebalancingRequest) (*v1.PauseRebalancingResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.PauseRebalancingResponse{}, nil
}

func (f *fakeAdmin) ResumeRebalancing(ctx context.Context, req *v1.ResumeRebalancingRequest) (*v1.ResumeRebalancingResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &v1.ResumeRebalancingResponse{MovedTargetCount: 17}, nil
}

func (f *fakeAdmin) PreviewRebalance(ctx context.Context, req *v1.PreviewRebalanceRequest) (*v1.PreviewRebalanceResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.preview, nil
}

type env struct {
	fake      *fakeAdmin
	address   string
	adminTok  string // file with the admin token
	workerTok string // file with the worker token
}

// startCoordinator serves the fake over internal/rpc on 127.0.0.1 with a
// worker token and a separate admin token, as the coordinator does.
func startCoordinator(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{fake: newFakeAdmin(), adminTok: filepath.Join(dir, "admin"), workerTok: filepath.Join(dir, "worker")}
	require.NoError(t, os.WriteFile(e.adminTok, []byte("admin-secret\n"), 0o600))
	require.NoError(t, os.WriteFile(e.workerTok, []byte("worker-secret\n"), 0o600))
	srv, err := rpc.NewServer(rpc.ServerOptions{AuthTokenFile: e.workerTok, AdminTokenFile: e.adminTok}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	v1.RegisterAdminServiceServer(srv, e.fake)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.address = lis.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		require.NoError(t, <-done)
	})
	return e
}

type result struct {
	code           int
	stdout, stderr string
}

// shardctl runs the CLI against e with the admin token and extra args.
func (e *env) shardctl(t *testing.T, args ...string) result {
	t.Helper()
	return e.shardctlWith(t, e.adminTok, args...)
}

func (e *env) shardctlWith(t *testing.T, tokenFile string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &cli{stdout: &stdout, stderr: &stderr, now: func() time.Time { return testNow }}
	full := append([]string{"--coordinator.address=" + e.address}, args...)
	if !strings.Contains(strings.Join(args, " "), "--timeout") {
		full = append(full, "--timeout=10s")
	}
	if tokenFile != "" {
		full = append([]string{"--coordinator.auth-token-file=" + tokenFile}, full...)
	}
	code := c.run(full)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func requireProtoEqual(t *testing.T, want, got proto.Message) {
	t.Helper()
	require.True(t, proto.Equal(want, got), "want %v\n got %v", want, got)
}

func TestRequests(t *testing.T) {
	e := startCoordinator(t)
	for _, tc := range []struct {
		args []string
		want []proto.Message
	}{
		{[]string{"workers"}, []proto.Message{&v1.ListWorkersRequest{}}},
		{[]string{"ring"}, []proto.Message{&v1.RingStatusRequest{}}},
		{[]string{"locate", "000000000000002a"}, []proto.Message{&v1.LocateTargetRequest{Target: idRef(0x2a)}}},
		{[]string{"locate", "0xDEADBEEF00000003"}, []proto.Message{&v1.LocateTargetRequest{Target: idRef(0xdeadbeef00000003)}}},
		{[]string{"locate", "node/10.0.0.42:9100"}, []proto.Message{&v1.LocateTargetRequest{Target: jobAddr("node", "10.0.0.42:9100")}}},
		{[]string{"locate", "kube/pods/[fd00::1]:8080"}, []proto.Message{&v1.LocateTargetRequest{Target: jobAddr("kube/pods", "[fd00::1]:8080")}}},
		{[]string{"drain", "scraper-3"}, []proto.Message{&v1.DrainWorkerRequest{WorkerId: "scraper-3"}}},
		{[]string{"undrain", "scraper-3"}, []proto.Message{&v1.UndrainWorkerRequest{WorkerId: "scraper-3"}}},
		{[]string{"pin", "node/10.0.0.42:9100", "scraper-1"}, []proto.Message{&v1.PinTargetRequest{Target: jobAddr("node", "10.0.0.42:9100"), WorkerId: "scraper-1"}}},
		{[]string{"unpin", "0x000000000000002a"}, []proto.Message{&v1.UnpinTargetRequest{Target: idRef(0x2a)}}},
		{[]string{"exclude", "node/10.0.0.42:9100", "--reason", "flapping exporter"}, []proto.Message{&v1.ExcludeTargetRequest{Target: jobAddr("node", "10.0.0.42:9100"), Reason: "flapping exporter"}}},
		{[]string{"include", "node/10.0.0.42:9100"}, []proto.Message{&v1.IncludeTargetRequest{Target: jobAddr("node", "10.0.0.42:9100")}}},
		{[]string{"pause", "--reason=incident 42"}, []proto.Message{&v1.PauseRebalancingRequest{Reason: "incident 42"}}},
		{[]string{"resume"}, []proto.Message{&v1.ResumeRebalancingRequest{}}},
		{[]string{"preview"}, []proto.Message{&v1.PreviewRebalanceRequest{}}},
		{[]string{"preview", "--add", "scraper-5", "--add", "scraper-6:b", "--add=scraper-7:c:2.5", "--remove", "scraper-0", "--remove", "scraper-1", "--limit", "7"},
			[]proto.Message{&v1.PreviewRebalanceRequest{
				AddWorkers:      []*v1.WorkerSpec{{Id: "scraper-5"}, {Id: "scraper-6", Zone: "b"}, {Id: "scraper-7", Zone: "c", Capacity: 2.5}},
				RemoveWorkerIds: []string{"scraper-0", "scraper-1"}, Limit: 7,
			}}},
		{[]string{"preview", "--add", "scraper-5::3"}, []proto.Message{&v1.PreviewRebalanceRequest{AddWorkers: []*v1.WorkerSpec{{Id: "scraper-5", Capacity: 3}}}}},
		// All pages, at the server's page size.
		{[]string{"targets"}, []proto.Message{
			&v1.ListTargetsRequest{}, &v1.ListTargetsRequest{PageToken: "2"}, &v1.ListTargetsRequest{PageToken: "4"},
		}},
		{[]string{"targets", "--job=node", "--worker=scraper-0", "--state=incoming", `--selector={__address__=~"10\\..*"}`, "--unassigned", "--pinned", "--excluded", "--page-size=4"},
			[]proto.Message{
				&v1.ListTargetsRequest{Job: "node", WorkerId: "scraper-0", State: v1.TargetState_TARGET_STATE_INCOMING, Selector: `{__address__=~"10\\..*"}`,
					IncludeUnassigned: true, PinnedOnly: true, ExcludedOnly: true, PageSize: 4},
				&v1.ListTargetsRequest{Job: "node", WorkerId: "scraper-0", State: v1.TargetState_TARGET_STATE_INCOMING, Selector: `{__address__=~"10\\..*"}`,
					IncludeUnassigned: true, PinnedOnly: true, ExcludedOnly: true, PageSize: 4, PageToken: "4"},
			}},
		// --limit asks for no more than it needs, and stops there.
		{[]string{"targets", "--limit=3"}, []proto.Message{&v1.ListTargetsRequest{PageSize: 3}}},
		{[]string{"targets", "--limit=3", "--page-size=2"}, []proto.Message{&v1.ListTargetsRequest{PageSize: 2}, &v1.ListTargetsRequest{PageSize: 2, PageToken: "2"}}},
		{[]string{"targets", "--state=active"}, []proto.Message{
			&v1.ListTargetsRequest{State: v1.TargetState_TARGET_STATE_ACTIVE}, &v1.ListTargetsRequest{State: v1.TargetState_TARGET_STATE_ACTIVE, PageToken: "2"},
			&v1.ListTargetsRequest{State: v1.TargetState_TARGET_STATE_ACTIVE, PageToken: "4"},
		}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			before := len(e.fake.requests())
			r := e.shardctl(t, tc.args...)
			require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
			got := e.fake.requests()[before:]
			require.Len(t, got, len(tc.want))
			for i := range got {
				requireProtoEqual(t, tc.want[i], got[i])
			}
		})
	}
}

func TestTableOutput(t *testing.T) {
	e := startCoordinator(t)
	for _, tc := range []struct {
		args  []string
		lines []string // each must appear as a line, white space collapsed
		not   []string
	}{
		{args: []string{"workers"}, lines: []string{
			"ID STATE ZONE CAPACITY TARGETS IN OUT SERIES GEN SENT GEN APPLIED HEARTBEAT",
			"scraper-0 active a 1 500 2 1 123456 42 41 3s ago",
			"scraper-1 drained - 2 0 0 0 0 0 0 -",
		}, not: []string{"10.0.0.10:9095"}},
		{args: []string{"workers", "-o", "wide"}, lines: []string{
			"ID STATE ZONE CAPACITY TARGETS IN OUT SERIES GEN SENT GEN APPLIED HEARTBEAT LEASE EXPIRES ADDRESS VERSION",
			"scraper-0 active a 1 500 2 1 123456 42 41 3s ago in 12s 10.0.0.10:9095 0.1.0",
		}},
		{args: []string{"targets"}, lines: []string{
			"ID JOB ADDRESS OWNERS SERIES UP PINNED EXCLUDED",
			"0000000000000001 node 10.0.0.1:9100 scraper-0 101 yes - -",
			"0000000000000002 node 10.0.0.2:9100 scraper-0 (outgoing), scraper-2 (incoming) 102 yes - -",
			"deadbeef00000003 kube/pods 10.1.0.3:8080 - 16045690981097406567 yes - -",
			"0000000000000005 node 10.0.0.5:9100 scraper-1 105 yes - -",
		}, not: []string{"__meta_pod_name"}},
		{args: []string{"targets", "-o", "wide", "--limit=1"}, lines: []string{
			`0000000000000001 node 10.0.0.1:9100 scraper-0 101 yes - - {__address__="10.0.0.1:9100", __meta_pod_name="pod-1"}`,
		}, not: []string{"0000000000000002"}},
		{args: []string{"locate", "node/10.0.0.42:9100"}, lines: []string{
			"TARGET 000000000000002a",
			"OWNERS scraper-7",
			"REASON spilled",
			"RING OWNER scraper-3",
			"DETAIL scraper-3 at bound 5100, spilled to scraper-7",
			"EXCLUDED no",
		}},
		{args: []string{"ring"}, lines: []string{
			"members 2, targets 1000, load factor 1.25, virtual nodes per weight 128, replication factor 1, imbalance 1.020, rebalancing paused (incident 42)",
			"ID ZONE WEIGHT VNODES OWNED TARGETS BOUND LOAD/MEAN",
			"scraper-0 a 1 128 49.12% 510 625 1.020",
		}},
		{args: []string{"drain", "scraper-0"}, lines: []string{`worker "scraper-0" draining: 510 targets moving off it`}},
		{args: []string{"undrain", "scraper-0"}, lines: []string{`worker "scraper-0" active`}},
		{args: []string{"pin", "node/10.0.0.42:9100", "scraper-1"}, lines: []string{
			`pinned node/10.0.0.42:9100 to worker "scraper-1"`,
			"000000000000002a node 10.0.0.42:9100 scraper-1 (incoming) 142 yes scraper-1 -",
		}},
		{args: []string{"exclude", "000000000000002a"}, lines: []string{"excluded 000000000000002a"}},
		{args: []string{"include", "000000000000002a"}, lines: []string{"included 000000000000002a"}},
		{args: []string{"pause"}, lines: []string{"rebalancing paused"}},
		{args: []string{"resume"}, lines: []string{"rebalancing resumed: 17 targets moved"}},
		{args: []string{"preview", "--add", "scraper-2"}, lines: []string{
			"targets 1000, moving 334, moved over ideal 1.002",
			"FROM TO TARGETS",
			"scraper-0 scraper-2 170",
			"ID JOB ADDRESS FROM TO",
			"0000000000000001 node 10.0.0.1:9100 scraper-0 scraper-2",
		}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := e.shardctl(t, tc.args...)
			require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
			var got []string
			for _, l := range strings.Split(r.stdout, "\n") {
				got = append(got, strings.Join(strings.Fields(l), " "))
			}
			for _, want := range tc.lines {
				require.Contains(t, got, want, "stdout:\n%s", r.stdout)
			}
			for _, not := range tc.not {
				require.NotContains(t, r.stdout, not)
			}
		})
	}

	// A listing cut short by --limit says so on stderr, keeping stdout a table.
	r := e.shardctl(t, "targets", "--limit=2")
	require.Equal(t, exitOK, r.code)
	require.Equal(t, "showing 2 of 5 targets\n", r.stderr)
	require.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 3)
}

func TestJSONOutput(t *testing.T) {
	e := startCoordinator(t)
	decode := func(t *testing.T, out string, into proto.Message) {
		t.Helper()
		require.NoError(t, protojson.Unmarshal([]byte(out), into), "stdout:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		into proto.Message
		want proto.Message
	}{
		{[]string{"workers"}, &v1.ListWorkersResponse{}, e.fake.workers},
		{[]string{"ring"}, &v1.RingStatusResponse{}, e.fake.ring},
		{[]string{"locate", "node/x:1"}, &v1.LocateTargetResponse{}, e.fake.locate},
		{[]string{"preview"}, &v1.PreviewRebalanceResponse{}, e.fake.preview},
		{[]string{"drain", "scraper-0"}, &v1.DrainWorkerResponse{}, &v1.DrainWorkerResponse{Worker: &v1.Worker{Id: "scraper-0", State: v1.WorkerState_WORKER_STATE_DRAINING}, MovingTargetCount: 510}},
		{[]string{"pin", "node/x:1", "scraper-1"}, &v1.PinTargetResponse{}, &v1.PinTargetResponse{Target: e.fake.assigned}},
		{[]string{"exclude", "node/x:1"}, &v1.ExcludeTargetResponse{}, &v1.ExcludeTargetResponse{}},
		{[]string{"resume"}, &v1.ResumeRebalancingResponse{}, &v1.ResumeRebalancingResponse{MovedTargetCount: 17}},
		// All pages in one document.
		{[]string{"targets"}, &v1.ListTargetsResponse{}, &v1.ListTargetsResponse{Targets: e.fake.targets, Total: 5}},
		{[]string{"targets", "--limit=3"}, &v1.ListTargetsResponse{}, &v1.ListTargetsResponse{Targets: e.fake.targets[:3], Total: 5}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := e.shardctl(t, append([]string{"-o", "json"}, tc.args...)...)
			require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
			decode(t, r.stdout, tc.into)
			require.Empty(t, cmpDiff(tc.want, tc.into))
		})
	}
	// The id is printed as protojson prints a fixed64: a decimal string.
	r := e.shardctl(t, "-o", "json", "targets", "--limit=1")
	require.Contains(t, r.stdout, `"id": "1"`)
}

func cmpDiff(want, got proto.Message) string {
	if proto.Equal(want, got) {
		return ""
	}
	return fmt.Sprintf("want %v\n got %v (%v)", want, got, protocmp.Transform())
}

func TestErrors(t *testing.T) {
	e := startCoordinator(t)
	for _, tc := range []struct {
		name     string
		err      error
		block    bool
		token    string // token file; "" uses the admin token
		args     []string
		code     int
		stderr   []string
		noCall   bool
		extraArg []string
	}{
		{name: "worker not found", err: status.Error(codes.NotFound, `no worker "scraper-9"`), args: []string{"drain", "scraper-9"},
			code: exitServer, stderr: []string{`shardctl drain: worker "scraper-9" not found (coordinator: no worker "scraper-9")`}},
		{name: "undrain not found", err: status.Error(codes.NotFound, "unknown worker"), args: []string{"undrain", "scraper-9"},
			code: exitServer, stderr: []string{`worker "scraper-9" not found`}},
		{name: "target not found", err: status.Error(codes.NotFound, "no such target"), args: []string{"locate", "node/10.9.9.9:9100"},
			code: exitServer, stderr: []string{`shardctl locate: target "node/10.9.9.9:9100" not found`}},
		{name: "pin not found", err: status.Error(codes.NotFound, `unknown worker "scraper-9"`), args: []string{"pin", "node/a:1", "scraper-9"},
			code: exitServer, stderr: []string{`target "node/a:1" or worker "scraper-9" not found (coordinator: unknown worker "scraper-9")`}},
		{name: "targets of an unknown worker", err: status.Error(codes.NotFound, "unknown worker"), args: []string{"targets", "--worker=scraper-9"},
			code: exitServer, stderr: []string{`worker "scraper-9" not found`}},
		{name: "ambiguous job/address", err: status.Error(codes.FailedPrecondition, "node/a:1 matches 2 targets: 0000000000000001, 0000000000000002"),
			args: []string{"locate", "node/a:1"}, code: exitServer, stderr: []string{`shardctl locate: target "node/a:1": node/a:1 matches 2 targets`}},
		{name: "bad selector", err: status.Error(codes.InvalidArgument, "parse selector: unexpected }"), args: []string{"targets", "--selector", "{"},
			code: exitServer, stderr: []string{"shardctl targets: parse selector: unexpected }"}},
		{name: "internal", err: status.Error(codes.Internal, "internal error"), args: []string{"ring"},
			code: exitServer, stderr: []string{"shardctl ring: Internal: internal error"}},
		{name: "not the leader", err: status.Error(codes.Unavailable, "not the leader"), args: []string{"workers"},
			code: exitConnAuth, stderr: []string{"unavailable", "not the leader"}},
		{name: "timeout", block: true, args: []string{"--timeout=200ms", "workers"},
			code: exitConnAuth, stderr: []string{"within --timeout=200ms"}},
		{name: "worker token on AdminService", token: "worker", args: []string{"workers"},
			code: exitConnAuth, stderr: []string{"authentication failed", "invalid bearer token", "--coordinator.auth-token-file"}},
		{name: "no token", token: "none", args: []string{"pause"},
			code: exitConnAuth, stderr: []string{"authentication failed", "missing bearer token"}},
		{name: "unreadable token file", token: "missing", args: []string{"workers"},
			code: exitConnAuth, stderr: []string{"missing-token"}, noCall: true},
		{name: "bad target", args: []string{"locate", "nonsense"}, code: exitUsage, stderr: []string{`shardctl locate: target "nonsense": want a target id`}, noCall: true},
		{name: "bad target, 15 digits", args: []string{"pin", "00000000000002a", "scraper-1"}, code: exitUsage, stderr: []string{`target "00000000000002a"`}, noCall: true},
		{name: "bad target, no address", args: []string{"exclude", "node/"}, code: exitUsage, noCall: true},
		{name: "bad worker spec", args: []string{"preview", "--add", "scraper-5:a:lots"}, code: exitUsage, stderr: []string{`--add: worker "scraper-5:a:lots": capacity "lots"`}, noCall: true},
		{name: "missing argument", args: []string{"drain"}, code: exitUsage, stderr: []string{"required argument 'worker' not provided", "shardctl --help"}, noCall: true},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitUsage, noCall: true},
		{name: "unknown flag", args: []string{"workers", "--frob"}, code: exitUsage, stderr: []string{"unknown long flag '--frob'"}, noCall: true},
		{name: "bad state", args: []string{"targets", "--state=gone"}, code: exitUsage, noCall: true},
		{name: "bad output", args: []string{"-o", "yaml", "workers"}, code: exitUsage, noCall: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.fake.mu.Lock()
			e.fake.err, e.fake.block = tc.err, tc.block
			e.fake.mu.Unlock()
			tok := e.adminTok
			switch tc.token {
			case "worker":
				tok = e.workerTok
			case "none":
				tok = ""
			case "missing":
				tok = filepath.Join(t.TempDir(), "missing-token")
			}
			before := len(e.fake.requests())
			r := e.shardctlWith(t, tok, tc.args...)
			require.Equal(t, tc.code, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
			require.Empty(t, r.stdout, "errors go to stderr")
			for _, s := range tc.stderr {
				require.Contains(t, r.stderr, s)
			}
			if tc.noCall || tc.code == exitConnAuth && tc.token != "" {
				require.Len(t, e.fake.requests(), before, "no call reached the coordinator")
			}
		})
	}

	t.Run("no coordinator", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := lis.Addr().String()
		require.NoError(t, lis.Close())
		var stdout, stderr bytes.Buffer
		code := run([]string{"--coordinator.address=" + addr, "--timeout=10s", "workers"}, &stdout, &stderr)
		require.Equal(t, exitConnAuth, code)
		require.Contains(t, stderr.String(), "coordinator at "+addr+" unavailable")
	})
	t.Run("token in plaintext off loopback", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := run([]string{"--coordinator.address=coordinator.example:9094", "--coordinator.auth-token-file=" + e.adminTok, "workers"}, &stdout, &stderr)
		require.Equal(t, exitConnAuth, code)
		require.Contains(t, stderr.String(), "plaintext")
	})
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"targets", "--help"}} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, exitOK, run(args, &stdout, &stderr), strings.Join(args, " "))
		require.Contains(t, stdout.String(), "usage: shardctl")
	}
	var stdout, stderr bytes.Buffer
	run([]string{"--help"}, &stdout, &stderr)
	for _, s := range []string{"Exit codes: 0 success", "job/address", "--coordinator.address=\"127.0.0.1:9094\"", "--coordinator.tls-ca-file", "preview"} {
		require.Contains(t, stdout.String(), s)
	}
}

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]*v1.TargetRef{
		"000000000000002a":       idRef(0x2a),
		"0x000000000000002A":     idRef(0x2a),
		"ffffffffffffffff":       idRef(^uint64(0)),
		"node/10.0.0.1:9100":     jobAddr("node", "10.0.0.1:9100"),
		"a/b/c:1":                jobAddr("a/b", "c:1"),
		"0000000000000001/x:1":   jobAddr("0000000000000001", "x:1"),
		"node/[::1]:9100":        jobAddr("node", "[::1]:9100"),
		"job with space/host:80": jobAddr("job with space", "host:80"),
	} {
		got, err := parseTarget(in)
		require.NoError(t, err, in)
		requireProtoEqual(t, want, got)
	}
	for _, bad := range []string{"", "2a", "000000000000002g", "0x2a", "/x:1", "node/", "node", "00000000000000002a"} {
		_, err := parseTarget(bad)
		require.Error(t, err, bad)
	}
}

func TestParseWorkerSpec(t *testing.T) {
	for in, want := range map[string]*v1.WorkerSpec{
		"scraper-5":       {Id: "scraper-5"},
		"scraper-5:b":     {Id: "scraper-5", Zone: "b"},
		"scraper-5::2.5":  {Id: "scraper-5", Capacity: 2.5},
		"scraper-5:b:0":   {Id: "scraper-5", Zone: "b"},
		"scraper-5:b:1e3": {Id: "scraper-5", Zone: "b", Capacity: 1000},
	} {
		got, err := parseWorkerSpec(in)
		require.NoError(t, err, in)
		requireProtoEqual(t, want, got)
	}
	for _, bad := range []string{"", ":b", "a:b:c:d", "a::-1", "a::1001", "a::NaN", "a::nan", "a::Inf", "a::-Inf", "a::x"} {
		_, err := parseWorkerSpec(bad)
		require.Error(t, err, bad)
	}
}
