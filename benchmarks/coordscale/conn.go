package main

import (
	"context"
	"net"
	"sync/atomic"
)

// countingConn counts the bytes read from a connection: what the peer sent
// on the wire (HTTP/2 framing and TLS, if any, included).
type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// countingDialer returns a grpc.WithContextDialer function that dials TCP
// and counts every byte read on the connections it makes into read.
func countingDialer(read *atomic.Int64) func(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, read: read}, nil
	}
}
