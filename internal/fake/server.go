// Package fake holds HTTP fakes of the discovery APIs shardscrape talks to
// (a Consul catalog in fake/consul, a Kubernetes API server in
// fake/kubeapi), faithful enough that Prometheus's own service discovery
// runs against them unchanged. Tests and cmd/fleetsim use them; they are
// not meant for production.
package fake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Server serves one handler on a loopback port.
type Server struct {
	// Addr is host:port the server listens on, e.g. 127.0.0.1:40123.
	Addr string
	// URL is http://Addr.
	URL string

	srv  *http.Server
	done chan struct{}
	err  error
}

// Serve starts serving h on 127.0.0.1 at a free port and returns at once.
// Close stops it.
func Serve(h http.Handler) (*Server, error) {
	return ServeOn("127.0.0.1:0", h)
}

// ServeOn is Serve on a given listen address (host:port).
func ServeOn(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", addr, err)
	}
	s := &Server{
		Addr: ln.Addr().String(),
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	s.URL = "http://" + s.Addr
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Close stops the server and closes every connection, which ends the
// blocking queries and watches in flight.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return errors.Join(err, s.err)
}

// Shutdown stops the server gracefully within ctx, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-s.done
	return errors.Join(err, s.err)
}
