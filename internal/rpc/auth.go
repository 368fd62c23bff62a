package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// Reasons counted by shardscrape_grpc_auth_failures_total.
const (
	// No authorization metadata.
	authReasonMissing = "missing"
	// Authorization metadata that is not "Bearer <token>".
	authReasonMalformed = "malformed"
	// A bearer token that matches no configured token.
	authReasonInvalid = "invalid"
	// The server's token file cannot be read and no earlier token is known.
	authReasonUnavailable = "token_unavailable"
	// A TLS handshake failed: no client certificate under mutual TLS, one
	// from an untrusted CA, or a client that does not trust the server.
	authReasonTLS = "tls_handshake"
)

// adminServiceName is the service whose methods need the admin token.
var adminServiceName = shardscrapev1.AdminService_ServiceDesc.ServiceName

// exemptServices are served without a token: health checks and reflection.
var exemptServices = map[string]bool{
	"grpc.health.v1.Health":                    true,
	"grpc.reflection.v1.ServerReflection":      true,
	"grpc.reflection.v1alpha.ServerReflection": true,
}

// tokenAuth checks bearer tokens against the worker and admin token files.
type tokenAuth struct {
	logger   *slog.Logger
	failures *prometheus.CounterVec
	worker   *watchedFile // nil: worker methods need no token
	admin    *watchedFile // nil: admin methods use the worker token
}

// class picks the token file a method needs; nil means none.
func (a *tokenAuth) class(service string) (f *watchedFile, name string) {
	if exemptServices[service] {
		return nil, ""
	}
	if service == adminServiceName && a.admin != nil {
		return a.admin, "admin"
	}
	return a.worker, "worker"
}

// needsAuth is the selector: true for calls that must carry a token.
func (a *tokenAuth) needsAuth(_ context.Context, c interceptors.CallMeta) bool {
	f, _ := a.class(c.Service)
	return f != nil
}

// check authenticates one call of service. It fails with Unauthenticated
// before the handler runs, so a rejected call changes nothing.
func (a *tokenAuth) check(ctx context.Context, service string) error {
	f, class := a.class(service)
	if f == nil {
		return nil
	}
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(vals) == 0 {
		return a.fail(authReasonMissing, "missing bearer token")
	}
	scheme, got, ok := strings.Cut(vals[0], " ")
	got = strings.TrimSpace(got)
	if !ok || !strings.EqualFold(scheme, "bearer") || got == "" {
		return a.fail(authReasonMalformed, `malformed authorization metadata: want "Bearer <token>"`)
	}
	want, changed, err := f.token()
	if err != nil {
		a.logger.Error("Cannot read auth token file, keeping the last good token", "class", class, "err", err)
		if len(want) == 0 {
			return a.fail(authReasonUnavailable, "server token unavailable")
		}
	} else if changed {
		a.logger.Info("Loaded auth token file", "class", class, "file", f.path)
	}
	// Compare digests, so that the time taken tells nothing, not even the
	// token's length.
	gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256(want)
	if subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
		return a.fail(authReasonInvalid, "invalid bearer token")
	}
	return nil
}

func (a *tokenAuth) fail(reason, msg string) error {
	a.failures.WithLabelValues(reason).Inc()
	return status.Error(codes.Unauthenticated, msg)
}

// load reads both token files now, failing on an unreadable or empty one.
func (a *tokenAuth) load() error {
	for _, f := range []*watchedFile{a.worker, a.admin} {
		if f == nil {
			continue
		}
		f.forget()
		if _, _, err := f.token(); err != nil {
			return err
		}
	}
	return nil
}
