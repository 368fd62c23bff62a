package rpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// DefaultCoordinatorAddress is the clients' default target: a coordinator
// on this host (shardctl next to it, or a port-forward).
const DefaultCoordinatorAddress = "127.0.0.1:9094"

// ClientOptions configures Dial.
//
// Transport: TLS when TLS is set or any TLS file or the server name is
// given, plaintext otherwise. A bearer token is sent over plaintext only to
// a loopback target (127.0.0.0/8, ::1, localhost, a unix socket), where
// nothing crosses the network, or when InsecureToken says so explicitly;
// otherwise Dial refuses, rather than leak the token.
type ClientOptions struct {
	// Target for Dial's callers that take it from flags.
	Address string
	// File holding the bearer token sent with every call, re-read when it
	// changes. Empty: no token.
	AuthTokenFile string
	// Use TLS; the system roots verify the server unless TLSCAFile is set.
	TLS bool
	// CA bundle (PEM) to verify the server with.
	TLSCAFile string
	// Client certificate and key (PEM) for mutual TLS; both or neither.
	// Reloaded when the files change.
	TLSCertFile string
	TLSKeyFile  string
	// Name to verify the server's certificate against, when it differs
	// from the target's host.
	TLSServerName string
	// Send the token over plaintext to a non-loopback target (a service
	// mesh that encrypts underneath, say).
	InsecureToken  bool
	MaxRecvMsgSize int
	MaxSendMsgSize int
	// Ping an idle connection after KeepaliveTime (at least the server's
	// DefaultKeepaliveMinTime), expecting an answer within
	// KeepaliveTimeout.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// Extra dial options, appended last (tests: a bufconn dialer).
	DialOptions []grpc.DialOption
}

func (o *ClientOptions) applyDefaults() {
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = DefaultMaxMsgSize
	}
	if o.MaxSendMsgSize <= 0 {
		o.MaxSendMsgSize = DefaultMaxMsgSize
	}
	if o.KeepaliveTime <= 0 {
		o.KeepaliveTime = DefaultKeepaliveTime
	}
	if o.KeepaliveTime < DefaultKeepaliveMinTime {
		// The server would close the connection for pinging too often.
		o.KeepaliveTime = DefaultKeepaliveMinTime
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
}

func (o ClientOptions) useTLS() bool {
	return o.TLS || o.TLSCAFile != "" || o.TLSCertFile != "" || o.TLSKeyFile != "" || o.TLSServerName != ""
}

// Dial returns a client connection to target (grpc.NewClient: it connects
// lazily, on the first call). It fails on unreadable TLS or token files and
// on a token that would cross the network in plaintext.
func Dial(target string, opts ClientOptions) (*grpc.ClientConn, error) {
	opts.applyDefaults()
	dopts := []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(opts.MaxRecvMsgSize),
			grpc.MaxCallSendMsgSize(opts.MaxSendMsgSize),
		),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                opts.KeepaliveTime,
			Timeout:             opts.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
	}
	secure := opts.useTLS()
	if secure {
		cfg, err := clientTLSConfig(opts)
		if err != nil {
			return nil, fmt.Errorf("dial %q: %w", target, err)
		}
		dopts = append(dopts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		dopts = append(dopts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if opts.AuthTokenFile != "" {
		if !secure && !opts.InsecureToken && !IsLoopbackTarget(target) {
			return nil, fmt.Errorf("dial %q: refusing to send the bearer token from %q in plaintext to a non-loopback address: configure TLS, or allow it explicitly", target, opts.AuthTokenFile)
		}
		creds := &tokenCredentials{file: newWatchedFile(opts.AuthTokenFile), secure: secure}
		if _, _, err := creds.file.token(); err != nil {
			return nil, fmt.Errorf("dial %q: %w", target, err)
		}
		dopts = append(dopts, grpc.WithPerRPCCredentials(creds))
	}
	dopts = append(dopts, opts.DialOptions...)
	cc, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %w", target, err)
	}
	return cc, nil
}

func clientTLSConfig(o ClientOptions) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.TLSServerName}
	if o.TLSCAFile != "" {
		pool, err := loadCertPool(o.TLSCAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if o.TLSCertFile != "" || o.TLSKeyFile != "" {
		if o.TLSCertFile == "" || o.TLSKeyFile == "" {
			return nil, fmt.Errorf("client TLS needs both a certificate file and a key file (got cert %q, key %q)", o.TLSCertFile, o.TLSKeyFile)
		}
		kp, err := newKeyPair(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return kp.get()
		}
	}
	return cfg, nil
}

// tokenCredentials sends "authorization: Bearer <token>" with every call,
// the token read from a file and re-read when the file changes.
type tokenCredentials struct {
	file   *watchedFile
	secure bool
}

var _ credentials.PerRPCCredentials = (*tokenCredentials)(nil)

// GetRequestMetadata returns the authorization metadata. A token file that
// became unreadable keeps its last good token.
func (c *tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, _, err := c.file.token()
	if len(tok) == 0 {
		return nil, fmt.Errorf("bearer token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + string(tok)}, nil
}

// RequireTransportSecurity is true over TLS; Dial has already checked that
// a plaintext connection may carry the token.
func (c *tokenCredentials) RequireTransportSecurity() bool { return c.secure }

// IsLoopbackTarget reports whether a gRPC target stays on this host: a unix
// socket, localhost, or a loopback IP, with or without a dns:///,
// passthrough:/// or ipv4:/ipv6: scheme.
func IsLoopbackTarget(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	hostport := target
	if i := strings.Index(target, ":///"); i >= 0 {
		hostport = target[i+4:]
	} else if scheme, rest, ok := strings.Cut(target, "://"); ok && (scheme == "dns" || scheme == "passthrough") {
		// dns://authority/host:port
		_, hostport, _ = strings.Cut(rest, "/")
	} else if rest, ok := strings.CutPrefix(target, "ipv4:"); ok {
		hostport = rest
	} else if rest, ok := strings.CutPrefix(target, "ipv6:"); ok {
		hostport = rest
	}
	for _, addr := range strings.Split(hostport, ",") {
		host := addr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if strings.EqualFold(host, "localhost") {
			continue
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return false
		}
	}
	return hostport != ""
}

// ClientMetricsDialOptions registers gRPC client metrics on reg
// (shardscrape_grpc_client_started_total, _handled_total,
// _msg_received_total, _msg_sent_total, _handling_seconds) and returns the
// dial options that feed them; append them to ClientOptions.DialOptions.
// Call it once per registry.
func ClientMetricsDialOptions(reg prometheus.Registerer) ([]grpc.DialOption, error) {
	m := grpcprom.NewClientMetrics(
		grpcprom.WithClientCounterOptions(grpcprom.WithNamespace("shardscrape")),
		grpcprom.WithClientHandlingTimeHistogram(
			grpcprom.WithHistogramNamespace("shardscrape"),
			grpcprom.WithHistogramBuckets([]float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 60, 300}),
		),
	)
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, fmt.Errorf("register gRPC client metrics: %w", err)
		}
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(m.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(m.StreamClientInterceptor()),
	}, nil
}
