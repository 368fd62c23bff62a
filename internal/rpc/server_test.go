package rpc

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeWorkerService counts the calls that reached it: a rejected call must
// leave the counts unchanged.
type fakeWorkerService struct {
	shardscrapev1.UnimplementedWorkerServiceServer
	joins    atomic.Int64
	watching chan struct{} // a watch has started
	release  chan struct{} // closing it ends open watches
	peerCN   atomic.Value  // CommonName of the last caller's client certificate
	peer     atomic.Value  // remote address of the last Join's connection
}

func (f *fakeWorkerService) Join(ctx context.Context, req *shardscrapev1.JoinRequest) (*shardscrapev1.JoinResponse, error) {
	if req.GetWorkerId() == "panic" {
		panic("boom")
	}
	if p, ok := peer.FromContext(ctx); ok {
		f.peer.Store(p.Addr.String())
	}
	if req.GetWorkerId() == "not-serving" {
		return nil, NotServing("not the leader")
	}
	if c := PeerCertificate(ctx); c != nil {
		f.peerCN.Store(c.Subject.CommonName)
	}
	f.joins.Add(1)
	return &shardscrapev1.JoinResponse{LeaseEpoch: uint64(f.joins.Load())}, nil
}

// WatchAssignments panics for worker "panic"; otherwise it blocks, ignoring
// its context, until release is closed: a stream that will not end by itself.
func (f *fakeWorkerService) WatchAssignments(req *shardscrapev1.WatchAssignmentsRequest, stream grpc.ServerStreamingServer[shardscrapev1.WatchAssignmentsResponse]) error {
	if req.GetWorkerId() == "panic" {
		panic("stream boom")
	}
	if err := stream.Send(&shardscrapev1.WatchAssignmentsResponse{Generation: 1, Snapshot: true}); err != nil {
		return err
	}
	f.watching <- struct{}{}
	<-f.release
	return nil
}

type fakeAdminService struct {
	shardscrapev1.UnimplementedAdminServiceServer
	pauses atomic.Int64
}

func (f *fakeAdminService) PauseRebalancing(context.Context, *shardscrapev1.PauseRebalancingRequest) (*shardscrapev1.PauseRebalancingResponse, error) {
	f.pauses.Add(1)
	return &shardscrapev1.PauseRebalancingResponse{}, nil
}

type testServer struct {
	srv     *Server
	reg     *prometheus.Registry
	worker  *fakeWorkerService
	admin   *fakeAdminService
	address string
}

// startServer serves both fake services on 127.0.0.1 and stops the server
// when the test ends.
func startServer(t *testing.T, opts ServerOptions) *testServer {
	t.Helper()
	ts := &testServer{
		reg:    prometheus.NewRegistry(),
		worker: &fakeWorkerService{watching: make(chan struct{}, 10), release: make(chan struct{})},
		admin:  &fakeAdminService{},
	}
	var err error
	ts.srv, err = NewServer(opts, nil, ts.reg)
	require.NoError(t, err)
	shardscrapev1.RegisterWorkerServiceServer(ts.srv, ts.worker)
	shardscrapev1.RegisterAdminServiceServer(ts.srv, ts.admin)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ts.address = lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- ts.srv.Serve(lis) }()
	t.Cleanup(func() {
		select {
		case <-ts.worker.release:
		default:
			close(ts.worker.release)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ts.srv.Stop(ctx)
		require.NoError(t, <-served)
	})
	return ts
}

func dial(t *testing.T, target string, opts ClientOptions) *grpc.ClientConn {
	t.Helper()
	cc, err := Dial(target, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func writeToken(t *testing.T, dir, name, tok string) string {
	t.Helper()
	f := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(f, []byte(tok+"\n"), 0o600))
	return f
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func authFailures(ts *testServer, reason string) float64 {
	return testutil.ToFloat64(ts.srv.auth.failures.WithLabelValues(reason))
}

func TestAuthToken(t *testing.T) {
	dir := t.TempDir()
	good := writeToken(t, dir, "good", "s3cret-worker-token")
	bad := writeToken(t, dir, "bad", "not-the-token")
	ts := startServer(t, ServerOptions{AuthTokenFile: good})

	for _, tc := range []struct {
		name      string
		opts      ClientOptions
		md        []string // raw metadata instead of a token file
		code      codes.Code
		reason    string
		joinsMade int64
	}{
		{name: "no token", code: codes.Unauthenticated, reason: authReasonMissing},
		{name: "bad token", opts: ClientOptions{AuthTokenFile: bad}, code: codes.Unauthenticated, reason: authReasonInvalid},
		{name: "prefix of the token", md: []string{"authorization", "Bearer s3cret"}, code: codes.Unauthenticated, reason: authReasonInvalid},
		{name: "basic scheme", md: []string{"authorization", "Basic s3cret-worker-token"}, code: codes.Unauthenticated, reason: authReasonMalformed},
		{name: "no scheme", md: []string{"authorization", "s3cret-worker-token"}, code: codes.Unauthenticated, reason: authReasonMalformed},
		{name: "good token", opts: ClientOptions{AuthTokenFile: good}, code: codes.OK, joinsMade: 1},
		{name: "good token, lower-case scheme", md: []string{"authorization", "bearer s3cret-worker-token"}, code: codes.OK, joinsMade: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := dial(t, ts.address, tc.opts)
			ctx := callCtx(t)
			if tc.md != nil {
				ctx = metadataCtx(ctx, tc.md...)
			}
			before := ts.worker.joins.Load()
			var beforeFail float64
			if tc.reason != "" {
				beforeFail = authFailures(ts, tc.reason)
			}
			_, err := shardscrapev1.NewWorkerServiceClient(cc).Join(ctx, &shardscrapev1.JoinRequest{WorkerId: "scraper-0"})
			require.Equal(t, tc.code, status.Code(err), "err: %v", err)
			require.Equal(t, before+tc.joinsMade, ts.worker.joins.Load(), "the handler ran %d times", ts.worker.joins.Load()-before)
			if tc.reason != "" {
				require.Equal(t, beforeFail+1, authFailures(ts, tc.reason))
			}
		})
	}

	// Streams are checked too, before the handler runs.
	cc := dial(t, ts.address, ClientOptions{AuthTokenFile: bad})
	stream, err := shardscrapev1.NewWorkerServiceClient(cc).WatchAssignments(callCtx(t), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0"})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Empty(t, ts.worker.watching)

	// The handled-calls metric saw the rejected calls with their code.
	require.Equal(t, 5.0, metricValue(t, ts.reg, "shardscrape_grpc_server_handled_total",
		map[string]string{"grpc_method": "Join", "grpc_code": "Unauthenticated"}))
	require.Equal(t, 2.0, metricValue(t, ts.reg, "shardscrape_grpc_server_handled_total",
		map[string]string{"grpc_method": "Join", "grpc_code": "OK"}))
}

func metadataCtx(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// metricValue sums the samples of a counter or the counts of a histogram
// named name whose labels include want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			found = true
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	require.True(t, found, "no %s%v", name, want)
	return sum
}

func TestHealthWithoutToken(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, ServerOptions{
		AuthTokenFile:  writeToken(t, dir, "worker", "w"),
		AdminTokenFile: writeToken(t, dir, "admin", "a"),
	})
	cc := dial(t, ts.address, ClientOptions{})
	hc := healthpb.NewHealthClient(cc)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hc.Check(callCtx(t), &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err)
		return resp.GetStatus()
	}
	// A new server is not serving until its owner says so.
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(""))
	ts.srv.SetServing()
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, check(""))
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, check("shardscrape.v1.WorkerService"))
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, check("shardscrape.v1.AdminService"))
	ts.srv.SetNotServing()
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(""))
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check("shardscrape.v1.AdminService"))
	require.Zero(t, authFailures(ts, authReasonMissing))
}

func TestAdminTokenSeparate(t *testing.T) {
	dir := t.TempDir()
	workerTok := writeToken(t, dir, "worker", "worker-token")
	adminTok := writeToken(t, dir, "admin", "admin-token")
	ts := startServer(t, ServerOptions{AuthTokenFile: workerTok, AdminTokenFile: adminTok})

	pause := func(tokFile string) error {
		cc := dial(t, ts.address, ClientOptions{AuthTokenFile: tokFile})
		_, err := shardscrapev1.NewAdminServiceClient(cc).PauseRebalancing(callCtx(t), &shardscrapev1.PauseRebalancingRequest{})
		return err
	}
	join := func(tokFile string) error {
		cc := dial(t, ts.address, ClientOptions{AuthTokenFile: tokFile})
		_, err := shardscrapev1.NewWorkerServiceClient(cc).Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w"})
		return err
	}
	require.Equal(t, codes.Unauthenticated, status.Code(pause(workerTok)), "a worker token must not open AdminService")
	require.Zero(t, ts.admin.pauses.Load())
	require.NoError(t, pause(adminTok))
	require.Equal(t, int64(1), ts.admin.pauses.Load())
	require.Equal(t, codes.Unauthenticated, status.Code(join(adminTok)), "the admin token is not a worker token")
	require.NoError(t, join(workerTok))
	require.Equal(t, 2.0, authFailures(ts, authReasonInvalid))

	// Without an admin token file, AdminService takes the worker token.
	ts2 := startServer(t, ServerOptions{AuthTokenFile: workerTok})
	cc := dial(t, ts2.address, ClientOptions{AuthTokenFile: workerTok})
	_, err := shardscrapev1.NewAdminServiceClient(cc).PauseRebalancing(callCtx(t), &shardscrapev1.PauseRebalancingRequest{})
	require.NoError(t, err)
	cc = dial(t, ts2.address, ClientOptions{})
	_, err = shardscrapev1.NewAdminServiceClient(cc).PauseRebalancing(callCtx(t), &shardscrapev1.PauseRebalancingRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
}

func TestTokenRotation(t *testing.T) {
	dir := t.TempDir()
	serverTok := writeToken(t, dir, "server", "first-token")
	clientTok := writeToken(t, dir, "client", "first-token")
	ts := startServer(t, ServerOptions{AuthTokenFile: serverTok})
	cc := dial(t, ts.address, ClientOptions{AuthTokenFile: clientTok})
	wc := shardscrapev1.NewWorkerServiceClient(cc)
	join := func() error {
		_, err := wc.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w"})
		return err
	}
	require.NoError(t, join())

	// The server's file changes: the old token is refused on the next call.
	writeToken(t, dir, "server", "second-token-longer")
	require.Equal(t, codes.Unauthenticated, status.Code(join()))
	// The client's file changes: its next call carries the new token.
	writeToken(t, dir, "client", "second-token-longer")
	require.NoError(t, join())

	// An unreadable file keeps the last good token, on both sides.
	require.NoError(t, os.Remove(serverTok))
	require.NoError(t, os.Remove(clientTok))
	require.NoError(t, join())
	require.Error(t, ts.srv.Reload(), "Reload reports the missing file")
	require.NoError(t, join())

	// Reload picks up a rewritten file at once.
	writeToken(t, dir, "server", "third")
	require.NoError(t, ts.srv.Reload())
	require.Equal(t, codes.Unauthenticated, status.Code(join()))
	writeToken(t, dir, "client", "third")
	require.NoError(t, join())

	// An emptied file (truncated mid-rewrite, say) keeps the last good
	// token too, on both sides, through calls and Reload alike.
	writeToken(t, dir, "server", "")
	writeToken(t, dir, "client", "  \n")
	require.NoError(t, join())
	require.Error(t, ts.srv.Reload(), "Reload reports the empty file")
	require.NoError(t, join())
	writeToken(t, dir, "server", "fourth")
	require.Equal(t, codes.Unauthenticated, status.Code(join()), "a new token replaces the last good one")
}

func TestNewServerBadFiles(t *testing.T) {
	dir := t.TempDir()
	empty := writeToken(t, dir, "empty", "  ")
	ca := newTestCA(t, "ca")
	cert, key := ca.issue(t, "server")
	for name, opts := range map[string]ServerOptions{
		"missing token file":  {AuthTokenFile: filepath.Join(dir, "nope")},
		"empty token file":    {AuthTokenFile: empty},
		"missing admin token": {AdminTokenFile: filepath.Join(dir, "nope")},
		"cert without key":    {TLSCertFile: cert},
		"client CA, no cert":  {TLSClientCAFile: ca.file},
		"key is not a key":    {TLSCertFile: cert, TLSKeyFile: cert},
		"CA is not PEM":       {TLSCertFile: cert, TLSKeyFile: key, TLSClientCAFile: empty},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewServer(opts, nil, prometheus.NewRegistry())
			require.Error(t, err)
		})
	}
}

func TestTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	otherCA := newTestCA(t, "other-ca")
	serverCert, serverKey := ca.issue(t, "coordinator")
	clientCert, clientKey := ca.issue(t, "scraper-0")
	strangerCert, strangerKey := otherCA.issue(t, "scraper-0")

	t.Run("server TLS", func(t *testing.T) {
		ts := startServer(t, ServerOptions{TLSCertFile: serverCert, TLSKeyFile: serverKey})
		join := func(opts ClientOptions) error {
			cc := dial(t, ts.address, opts)
			_, err := shardscrapev1.NewWorkerServiceClient(cc).Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w"})
			return err
		}
		require.NoError(t, join(ClientOptions{TLSCAFile: ca.file}))
		require.Equal(t, int64(1), ts.worker.joins.Load())

		// The client trusts another CA: the handshake fails.
		err := join(ClientOptions{TLSCAFile: otherCA.file})
		require.Equal(t, codes.Unavailable, status.Code(err), "err: %v", err)
		require.Contains(t, err.Error(), "certificate")
		// A plaintext client cannot talk to a TLS server either.
		require.Equal(t, codes.Unavailable, status.Code(join(ClientOptions{})))
		require.Equal(t, int64(1), ts.worker.joins.Load(), "no rejected call reached the handler")
		require.Eventually(t, func() bool { return authFailures(ts, authReasonTLS) >= 2 }, 10*time.Second, 10*time.Millisecond)

		// A TCP probe that connects and closes is no auth failure; the
		// server still answers after it.
		before := authFailures(ts, authReasonTLS)
		conn, err := net.Dial("tcp", ts.address)
		require.NoError(t, err)
		require.NoError(t, conn.Close())
		require.NoError(t, join(ClientOptions{TLSCAFile: ca.file}))
		require.Equal(t, before, authFailures(ts, authReasonTLS))
	})

	t.Run("mutual TLS", func(t *testing.T) {
		ts := startServer(t, ServerOptions{TLSCertFile: serverCert, TLSKeyFile: serverKey, TLSClientCAFile: ca.file})
		join := func(opts ClientOptions) error {
			cc := dial(t, ts.address, opts)
			_, err := shardscrapev1.NewWorkerServiceClient(cc).Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w"})
			return err
		}
		require.NoError(t, join(ClientOptions{TLSCAFile: ca.file, TLSCertFile: clientCert, TLSKeyFile: clientKey}))
		require.Equal(t, "scraper-0", ts.worker.peerCN.Load(), "PeerCertificate names the client")
		require.Equal(t, int64(1), ts.worker.joins.Load())

		for name, opts := range map[string]ClientOptions{
			"no client certificate":            {TLSCAFile: ca.file},
			"client certificate of another CA": {TLSCAFile: ca.file, TLSCertFile: strangerCert, TLSKeyFile: strangerKey},
		} {
			t.Run(name, func(t *testing.T) {
				before := authFailures(ts, authReasonTLS)
				err := join(opts)
				require.Equal(t, codes.Unavailable, status.Code(err), "err: %v", err)
				require.Equal(t, int64(1), ts.worker.joins.Load(), "the handler never ran")
				require.Eventually(t, func() bool { return authFailures(ts, authReasonTLS) > before }, 10*time.Second, 10*time.Millisecond)
			})
		}
	})

	t.Run("certificate rotation", func(t *testing.T) {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		copyFile(t, serverCert, cert)
		copyFile(t, serverKey, key)
		ts := startServer(t, ServerOptions{TLSCertFile: cert, TLSKeyFile: key})
		join := func(opts ClientOptions) error {
			cc := dial(t, ts.address, opts)
			_, err := shardscrapev1.NewWorkerServiceClient(cc).Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w"})
			return err
		}
		require.NoError(t, join(ClientOptions{TLSCAFile: ca.file}))
		// The certificate is renewed by another CA: new connections get it.
		newCert, newKey := otherCA.issue(t, "coordinator")
		copyFile(t, newCert, cert)
		copyFile(t, newKey, key)
		require.NoError(t, join(ClientOptions{TLSCAFile: otherCA.file}))
		require.Equal(t, codes.Unavailable, status.Code(join(ClientOptions{TLSCAFile: ca.file})))
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

func TestPanicRecovered(t *testing.T) {
	ts := startServer(t, ServerOptions{})
	cc := dial(t, ts.address, ClientOptions{})
	wc := shardscrapev1.NewWorkerServiceClient(cc)

	_, err := wc.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "panic"})
	require.Equal(t, codes.Internal, status.Code(err))
	require.NotContains(t, err.Error(), "boom", "the panic value is not sent to clients")
	require.Equal(t, 1.0, testutil.ToFloat64(ts.srv.panics))
	require.Equal(t, 1.0, metricValue(t, ts.reg, "shardscrape_grpc_server_handled_total",
		map[string]string{"grpc_method": "Join", "grpc_code": "Internal"}), "the metrics interceptor saw the panic as Internal")

	stream, err := wc.WatchAssignments(callCtx(t), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "panic"})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Internal, status.Code(err))
	require.Equal(t, 2.0, testutil.ToFloat64(ts.srv.panics))

	// The server still serves.
	_, err = wc.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "scraper-0"})
	require.NoError(t, err)
	require.Equal(t, 2.0, metricValue(t, ts.reg, "shardscrape_grpc_server_handling_seconds",
		map[string]string{"grpc_method": "Join", "grpc_type": "unary"}), "the handling-time histogram counts both calls")
}

func TestOversizedMessage(t *testing.T) {
	ts := startServer(t, ServerOptions{MaxRecvMsgSize: 1 << 20})
	// The client would send it; the server refuses it.
	cc := dial(t, ts.address, ClientOptions{MaxSendMsgSize: 64 << 20})
	_, err := shardscrapev1.NewWorkerServiceClient(cc).Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w", Address: strings.Repeat("x", 2<<20)})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "err: %v", err)
	require.Zero(t, ts.worker.joins.Load())

	// With the defaults, a 4 MiB assignment part fits both ways.
	ts = startServer(t, ServerOptions{})
	cc = dial(t, ts.address, ClientOptions{})
	_, err = shardscrapev1.NewWorkerServiceClient(cc).Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w", Address: strings.Repeat("x", 4<<20)})
	require.NoError(t, err)
}

// A call answered with NotServing closes the caller's connection, so the
// client dials again (behind a Service, reaching a ready replica); the
// next call arrives on a new connection.
func TestNotServingClosesConnection(t *testing.T) {
	ts := startServer(t, ServerOptions{})
	cc := dial(t, ts.address, ClientOptions{})
	client := shardscrapev1.NewWorkerServiceClient(cc)

	_, err := client.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w-1"})
	require.NoError(t, err)
	first := ts.worker.peer.Load()
	_, err = client.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w-1"})
	require.NoError(t, err)
	require.Equal(t, first, ts.worker.peer.Load(), "calls that are served share one connection")

	_, err = client.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "not-serving"})
	require.Equal(t, codes.Unavailable, status.Code(err), "the client sees the answer, not a reset: %v", err)
	require.Contains(t, status.Convert(err).Message(), "not the leader")
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(ts.srv.notServing) == 1
	}, 10*time.Second, 10*time.Millisecond)

	require.Eventually(t, func() bool {
		_, err := client.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w-1"})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the client reconnects")
	require.NotEqual(t, first, ts.worker.peer.Load(), "the next call comes on a new connection")

	require.Equal(t, codes.Unavailable, status.Code(fmt.Errorf("wrapped: %w", NotServing("x"))))
	require.True(t, isNotServing(fmt.Errorf("wrapped: %w", NotServing("x"))))
	require.False(t, isNotServing(status.Error(codes.Unavailable, "plain")), "only NotServing closes connections")
}

func TestGracefulStop(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		ts := startServer(t, ServerOptions{})
		require.NoError(t, ts.srv.Stop(context.Background()))
	})
	t.Run("deadline with an open stream", func(t *testing.T) {
		ts := startServer(t, ServerOptions{})
		cc := dial(t, ts.address, ClientOptions{})
		stream, err := shardscrapev1.NewWorkerServiceClient(cc).WatchAssignments(callCtx(t), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "w"})
		require.NoError(t, err)
		_, err = stream.Recv()
		require.NoError(t, err)
		<-ts.worker.watching

		// The stream never ends by itself: Stop forces it at the deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err = ts.srv.Stop(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		_, err = stream.Recv()
		require.Equal(t, codes.Unavailable, status.Code(err), "err: %v", err)
	})
	t.Run("open stream finishing in time", func(t *testing.T) {
		ts := startServer(t, ServerOptions{GracefulStopTimeout: time.Minute})
		cc := dial(t, ts.address, ClientOptions{})
		stream, err := shardscrapev1.NewWorkerServiceClient(cc).WatchAssignments(callCtx(t), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "w"})
		require.NoError(t, err)
		<-ts.worker.watching
		stopped := make(chan error, 1)
		go func() { stopped <- ts.srv.Stop(context.Background()) }()
		// Stop waits for the stream...
		require.Never(t, func() bool { return len(stopped) > 0 }, 50*time.Millisecond, 5*time.Millisecond)
		// ...which ends normally.
		close(ts.worker.release)
		require.NoError(t, <-stopped)
		_, err = stream.Recv() // the snapshot
		require.NoError(t, err)
	})
}

func TestIsLoopbackAddr(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9094}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 9094}, true},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, true},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 9094}, false},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 9094}, false},
		{&net.TCPAddr{Port: 9094}, false},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9094}, false},
	} {
		require.Equal(t, tc.want, isLoopbackAddr(tc.addr), "%v", tc.addr)
	}
}
