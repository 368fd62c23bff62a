// Package rpc is shardscrape's gRPC plumbing, shared by the coordinator
// (server), the scraper workers and shardctl (clients): the interceptor
// chain, bearer-token auth, TLS and mutual TLS, health, message size and
// keepalive limits, graceful stop, and kingpin flags for all of it.
//
// Server chain, outermost first, for unary and stream calls alike:
// recovery (counts panics, answers Internal) → Prometheus metrics → slog
// logging → bearer-token auth (grpc.health.v1 and reflection exempt) →
// recovery again, so that a handler's panic is seen by the metrics and the
// log as an Internal error, while the outer recovery guards the
// interceptors themselves.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Defaults for ServerOptions and ClientOptions. Message limits leave room
// for 4 MiB assignment parts with their framing; the client's keepalive
// pings are never more frequent than the server's enforcement allows.
const (
	DefaultListenAddress       = ":9094"
	DefaultMaxMsgSize          = 16 << 20
	DefaultGracefulStopTimeout = 10 * time.Second
	// The server closes connections pinging more often than this.
	DefaultKeepaliveMinTime = 10 * time.Second
	// Both sides ping an idle connection after this, and close it when the
	// ping is not answered within DefaultKeepaliveTimeout.
	DefaultKeepaliveTime    = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
)

// ServerOptions configures a Server. Zero fields take the defaults above.
type ServerOptions struct {
	// Address Serve's caller listens on (ListenAndServe uses it).
	ListenAddress string
	// File holding the bearer token every call but health and reflection
	// must carry. Empty: no token needed (tests, local runs).
	AuthTokenFile string
	// File holding the token for AdminService calls. Empty: AdminService
	// takes the AuthTokenFile token. When set, the worker token does not
	// open AdminService, so workers hold no admin rights.
	AdminTokenFile string
	// Server certificate and key (PEM); both or neither. Reloaded when
	// the files change.
	TLSCertFile string
	TLSKeyFile  string
	// CA bundle (PEM) for client certificates: when set, clients must
	// present a certificate it signed (mutual TLS). Needs TLSCertFile.
	TLSClientCAFile string
	MaxRecvMsgSize  int
	MaxSendMsgSize  int
	// Stop's bound when its context has no deadline.
	GracefulStopTimeout time.Duration
	// Keepalive enforcement: clients pinging more often than
	// KeepaliveMinTime are disconnected; pings without an open stream are
	// permitted (workers between streams).
	KeepaliveMinTime time.Duration
	// Server pings: after KeepaliveTime idle, expecting an answer within
	// KeepaliveTimeout.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// Extra grpc.ServerOptions, appended last (tests, stats handlers).
	ExtraOptions []grpc.ServerOption
}

// DefaultServerOptions returns ServerOptions with every default filled in.
func DefaultServerOptions() ServerOptions {
	o := ServerOptions{}
	o.applyDefaults()
	return o
}

func (o *ServerOptions) applyDefaults() {
	if o.ListenAddress == "" {
		o.ListenAddress = DefaultListenAddress
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = DefaultMaxMsgSize
	}
	if o.MaxSendMsgSize <= 0 {
		o.MaxSendMsgSize = DefaultMaxMsgSize
	}
	if o.GracefulStopTimeout <= 0 {
		o.GracefulStopTimeout = DefaultGracefulStopTimeout
	}
	if o.KeepaliveMinTime <= 0 {
		o.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	if o.KeepaliveTime <= 0 {
		o.KeepaliveTime = DefaultKeepaliveTime
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
}

// Server is a grpc.Server with shardscrape's interceptor chain, auth,
// health and limits. Register services on it (it is a
// grpc.ServiceRegistrar) before Serve.
type Server struct {
	opts    ServerOptions
	logger  *slog.Logger
	grpc    *grpc.Server
	health  *health.Server
	auth    *tokenAuth
	metrics *grpcprom.ServerMetrics
	panics  prometheus.Counter
	conns   *connTracker
	// notServing counts connections closed after a NotServing answer.
	notServing prometheus.Counter

	initOnce sync.Once
	mu       sync.Mutex
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

type serverMetrics struct {
	panics       prometheus.Counter
	notServing   prometheus.Counter
	authFailures *prometheus.CounterVec
	grpc         *grpcprom.ServerMetrics
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_grpc_panics_recovered_total",
			Help: "gRPC handler and interceptor panics recovered and answered with Internal.",
		}),
		notServing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_grpc_not_serving_connections_closed_total",
			Help: "Client connections closed after a call this replica could not serve (not the leader), so the client reconnects to one that can.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardscrape_grpc_auth_failures_total",
			Help: "gRPC calls and connections rejected for bad or missing credentials, by reason.",
		}, []string{"reason"}),
		grpc: grpcprom.NewServerMetrics(
			grpcprom.WithServerCounterOptions(grpcprom.WithNamespace("shardscrape")),
			grpcprom.WithServerHandlingTimeHistogram(
				grpcprom.WithHistogramNamespace("shardscrape"),
				grpcprom.WithHistogramBuckets([]float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 60, 300}),
			),
		),
	}
	for _, r := range []string{authReasonMissing, authReasonMalformed, authReasonInvalid, authReasonUnavailable, authReasonTLS} {
		m.authFailures.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.panics, m.notServing, m.authFailures, m.grpc} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register gRPC server metrics: %w", err)
			}
		}
	}
	return m, nil
}

// NewServer builds a Server from opts; it reads the token files and TLS
// files now and fails naming a bad one. It starts no goroutine and listens
// on nothing until Serve. A nil logger discards; a nil reg registers
// nothing.
func NewServer(opts ServerOptions, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	opts.applyDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newServerMetrics(reg)
	if err != nil {
		return nil, err
	}
	ta := &tokenAuth{logger: logger, failures: m.authFailures}
	if opts.AuthTokenFile != "" {
		ta.worker = newWatchedFile(opts.AuthTokenFile)
	}
	if opts.AdminTokenFile != "" {
		ta.admin = newWatchedFile(opts.AdminTokenFile)
	}
	if err := ta.load(); err != nil {
		return nil, fmt.Errorf("gRPC auth: %w", err)
	}
	tlsCfg, err := serverTLSConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("gRPC TLS: %w", err)
	}

	recoveryOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		m.panics.Inc()
		method, _ := grpc.Method(ctx)
		logger.Error("Recovered from panic in gRPC call", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	authFunc := func(ctx context.Context) (context.Context, error) {
		method, _ := grpc.Method(ctx)
		return ctx, ta.check(ctx, serviceOf(method))
	}
	rpcLogger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		logger.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(codeToLevel),
	}
	needsAuth := selector.MatchFunc(ta.needsAuth)
	conns := newConnTracker(m.notServing.Inc)

	sopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			conns.unaryInterceptor,
			recovery.UnaryServerInterceptor(recoveryOpt),
			m.grpc.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(rpcLogger, logOpts...),
			selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(authFunc), needsAuth),
			recovery.UnaryServerInterceptor(recoveryOpt),
		),
		grpc.ChainStreamInterceptor(
			conns.streamInterceptor,
			recovery.StreamServerInterceptor(recoveryOpt),
			m.grpc.StreamServerInterceptor(),
			logging.StreamServerInterceptor(rpcLogger, logOpts...),
			selector.StreamServerInterceptor(auth.StreamServerInterceptor(authFunc), needsAuth),
			recovery.StreamServerInterceptor(recoveryOpt),
		),
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(opts.MaxSendMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             opts.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    opts.KeepaliveTime,
			Timeout: opts.KeepaliveTimeout,
		}),
	}
	if tlsCfg != nil {
		sopts = append(sopts, grpc.Creds(countingCreds{
			TransportCredentials: credentials.NewTLS(tlsCfg),
			failures:             m.authFailures.WithLabelValues(authReasonTLS),
		}))
	}
	sopts = append(sopts, opts.ExtraOptions...)

	s := &Server{
		opts:    opts,
		logger:  logger,
		grpc:    grpc.NewServer(sopts...),
		health:  health.NewServer(),
		auth:    ta,
		metrics: m.grpc,
		panics:  m.panics,
		conns:   conns,

		notServing: m.notServing,
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	// Not serving until the owner says so (SetServing): a coordinator
	// that is not the leader, or not loaded yet, answers NOT_SERVING.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// serviceOf returns the service of a full method name "/pkg.Service/Method".
func serviceOf(fullMethod string) string {
	svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return svc
}

// codeToLevel logs successful calls at debug (heartbeats are frequent),
// the caller's mistakes at info or warn, and the server's failures at error.
func codeToLevel(c codes.Code) logging.Level {
	switch c {
	case codes.OK, codes.Canceled, codes.NotFound, codes.AlreadyExists:
		return logging.LevelDebug
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.Aborted, codes.Unavailable, codes.DeadlineExceeded:
		return logging.LevelInfo
	case codes.Unauthenticated, codes.PermissionDenied, codes.ResourceExhausted:
		return logging.LevelWarn
	default:
		return logging.LevelError
	}
}

// RegisterService registers a service implementation; see
// grpc.ServiceRegistrar. Call it before Serve.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
}

// GRPC returns the underlying grpc.Server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Options returns the options in force, defaults filled in.
func (s *Server) Options() ServerOptions { return s.opts }

// SetServing reports SERVING on grpc.health.v1 for the server ("") and
// every registered service.
func (s *Server) SetServing() { s.setStatus(healthpb.HealthCheckResponse_SERVING) }

// SetNotServing reports NOT_SERVING for the server and every registered
// service, e.g. on a coordinator that is not the leader. It is the state of
// a new Server.
func (s *Server) SetNotServing() { s.setStatus(healthpb.HealthCheckResponse_NOT_SERVING) }

func (s *Server) setStatus(st healthpb.HealthCheckResponse_ServingStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.health.SetServingStatus("", st)
	for name := range s.grpc.GetServiceInfo() {
		if name == healthpb.Health_ServiceDesc.ServiceName {
			continue
		}
		s.health.SetServingStatus(name, st)
	}
}

// Reload re-reads the token files now, failing if one is unreadable or
// empty (the last good token then stays in force). Without Reload, a
// changed file is picked up by the next call that needs it.
func (s *Server) Reload() error {
	if err := s.auth.load(); err != nil {
		return fmt.Errorf("reload gRPC auth: %w", err)
	}
	return nil
}

// Serve accepts connections on lis until Stop; it returns nil after Stop.
func (s *Server) Serve(lis net.Listener) error {
	s.initOnce.Do(func() { s.metrics.InitializeMetrics(s.grpc) })
	s.logger.Info("Serving gRPC", "address", lis.Addr().String(), "tls", s.opts.TLSCertFile != "", "mtls", s.opts.TLSClientCAFile != "", "auth", s.opts.AuthTokenFile != "", "admin_auth", s.opts.AdminTokenFile != "")
	if s.opts.TLSCertFile == "" && !isLoopbackAddr(lis.Addr()) {
		// The assignment streams carry the scrape configs' credentials
		// (and bearer tokens travel with every call): the contract wants
		// TLS outside tests.
		s.logger.Warn("Serving gRPC without TLS on a non-loopback address: scrape credentials and tokens cross the network in plaintext; set --grpc.tls-cert-file and --grpc.tls-key-file", "address", lis.Addr().String())
	}
	if err := s.grpc.Serve(s.conns.listener(lis)); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
	}
	return nil
}

// isLoopbackAddr reports whether a listener's address is on a loopback IP
// only (a unix socket counts as loopback; 0.0.0.0 and :: do not).
func isLoopbackAddr(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// ListenAndServe listens on Options().ListenAddress and serves until Stop.
func (s *Server) ListenAndServe() error {
	lis, err := net.Listen("tcp", s.opts.ListenAddress)
	if err != nil {
		return fmt.Errorf("listen on gRPC address %q: %w", s.opts.ListenAddress, err)
	}
	return s.Serve(lis)
}

// Stop reports NOT_SERVING, then stops gracefully: no new calls, and open
// ones (streams included) may finish until ctx's deadline, or
// GracefulStopTimeout when ctx has none; then it closes every connection.
// It returns ctx's error when it had to force the stop. Handlers must
// return when their context ends.
func (s *Server) Stop(ctx context.Context) error {
	s.health.Shutdown()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.GracefulStopTimeout)
		defer cancel()
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.logger.Warn("gRPC graceful stop timed out, closing connections", "err", ctx.Err())
		// Stop closes every connection and cancels every call's context.
		// It does not wait for handlers, and neither does this: a handler
		// that ignores its context would hold the stop forever.
		s.grpc.Stop()
		return fmt.Errorf("graceful stop: %w", ctx.Err())
	}
}

func peerTLSInfo(ctx context.Context) (credentials.TLSInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return credentials.TLSInfo{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return info, ok
}
