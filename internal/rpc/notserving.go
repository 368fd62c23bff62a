package rpc

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// notServingCloseDelay is how long the server waits, after answering a call
// with NotServing, before closing the caller's connection: long enough for
// the answer to be written, so the client sees UNAVAILABLE and not a reset.
const notServingCloseDelay = 250 * time.Millisecond

// NotServing returns an UNAVAILABLE error for a call this replica cannot
// serve, such as a coordinator that is not the leader. The server closes
// the caller's connection shortly after sending it. Behind a Kubernetes
// Service a gRPC client keeps its connection, and with it the backend it
// reached, until the connection breaks; a closed one makes the client dial
// again, and the Service routes the new connection to a ready replica.
func NotServing(msg string) error {
	return &notServingError{st: status.New(codes.Unavailable, msg)}
}

type notServingError struct{ st *status.Status }

func (e *notServingError) Error() string              { return e.st.Err().Error() }
func (e *notServingError) GRPCStatus() *status.Status { return e.st }

func isNotServing(err error) bool {
	var ns *notServingError
	return errors.As(err, &ns)
}

// connTracker keeps the server's open connections by remote address, the
// key gRPC's peer carries, so a call's connection can be closed.
type connTracker struct {
	mu     sync.Mutex
	conns  map[string]*trackedConn
	closed func() // counts a connection closed for NotServing
}

func newConnTracker(closed func()) *connTracker {
	return &connTracker{conns: map[string]*trackedConn{}, closed: closed}
}

func (t *connTracker) listener(l net.Listener) net.Listener { return &trackedListener{l, t} }

// closeLater closes the connection of the call in ctx after
// notServingCloseDelay.
func (t *connTracker) closeLater(ctx context.Context) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return
	}
	t.mu.Lock()
	c := t.conns[p.Addr.String()]
	t.mu.Unlock()
	if c == nil {
		return
	}
	c.closeOnce.Do(func() {
		time.AfterFunc(notServingCloseDelay, func() {
			t.closed()
			_ = c.Close()
		})
	})
}

func (t *connTracker) unaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil && isNotServing(err) {
		t.closeLater(ctx)
	}
	return resp, err
}

func (t *connTracker) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if err != nil && isNotServing(err) {
		t.closeLater(ss.Context())
	}
	return err
}

type trackedListener struct {
	net.Listener
	t *connTracker
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: l.t, key: c.RemoteAddr().String()}
	l.t.mu.Lock()
	l.t.conns[tc.key] = tc
	l.t.mu.Unlock()
	return tc, nil
}

type trackedConn struct {
	net.Conn
	t         *connTracker
	key       string
	closeOnce sync.Once // one scheduled close per connection
	forget    sync.Once
}

func (c *trackedConn) Close() error {
	c.forget.Do(func() {
		c.t.mu.Lock()
		if c.t.conns[c.key] == c {
			delete(c.t.conns, c.key)
		}
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
