package fleet

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, true},
		{&net.TCPAddr{IP: net.IPv4(127, 1, 0, 7), Port: 9100}, true},
		{&net.TCPAddr{IP: net.IPv4(127, 31, 255, 254), Port: 8080}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 1}, true},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9100}, false},
		{&net.TCPAddr{IP: net.IPv4(192, 168, 1, 2), Port: 9100}, false},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 9100}, false},
		{&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, false},
		{nil, false},
	} {
		require.Equal(t, tc.want, isLoopback(tc.addr), "%v", tc.addr)
	}
}

type fakeConn struct {
	net.Conn
	local  net.Addr
	closed bool
}

func (c *fakeConn) LocalAddr() net.Addr { return c.local }
func (c *fakeConn) Close() error        { c.closed = true; return nil }

type fakeListener struct {
	net.Listener
	conns []*fakeConn
}

func (l *fakeListener) Accept() (net.Conn, error) {
	if len(l.conns) == 0 {
		return nil, net.ErrClosed
	}
	c := l.conns[0]
	l.conns = l.conns[1:]
	return c, nil
}

func TestAcceptFilterClosesNonLoopback(t *testing.T) {
	outside := &fakeConn{local: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 9100}}
	outside2 := &fakeConn{local: &net.TCPAddr{IP: net.IPv4(172, 17, 0, 1), Port: 9100}}
	inside := &fakeConn{local: &net.TCPAddr{IP: net.IPv4(127, 1, 0, 1), Port: 9100}}
	l := &loopbackListener{Listener: &fakeListener{conns: []*fakeConn{outside, outside2, inside}}}
	c, err := l.Accept()
	require.NoError(t, err)
	require.Same(t, inside, c)
	require.False(t, inside.closed)
	require.True(t, outside.closed)
	require.True(t, outside2.closed)
	require.Equal(t, uint64(2), l.rejected.Load())
	_, err = l.Accept()
	require.True(t, errors.Is(err, net.ErrClosed))
}

// TestNonLoopbackAddressRefused connects to the listener at one of the
// host's own non-loopback addresses: the kernel routes it through lo, and
// the accept filter (or the device binding) must refuse it.
func TestNonLoopbackAddressRefused(t *testing.T) {
	var ip net.IP
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			ip = n.IP
			break
		}
	}
	if ip == nil {
		t.Skip("no non-loopback IPv4 address on this host")
	}
	ln, _, err := listen(0)
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.DialTimeout("tcp4", net.JoinHostPort(ip.String(), strconv.Itoa(port)), 5*time.Second)
	if err == nil {
		// Connected at the TCP level (plain wildcard): the filter closes it.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rerr := c.Read(make([]byte, 1))
		require.Error(t, rerr, "the connection must be closed, not served")
		var ne net.Error
		require.False(t, errors.As(rerr, &ne) && ne.Timeout(), "the connection must be closed, not left open: %v", rerr)
		_ = c.Close()
	}
	// A loopback connection is still accepted.
	lc, err := net.Dial("tcp4", net.JoinHostPort("127.1.2.3", strconv.Itoa(port)))
	require.NoError(t, err)
	defer lc.Close()
	select {
	case c := <-accepted:
		require.Equal(t, "127.1.2.3", c.LocalAddr().(*net.TCPAddr).IP.String())
		_ = c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("loopback connection not accepted")
	}
}
