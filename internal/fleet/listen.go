package fleet

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
)

// PortError is returned by Start when a target port cannot be bound.
type PortError struct {
	// Kind is "node" or "pod".
	Kind string
	// Port is the port asked for (0: any).
	Port int
	Err  error
}

func (e *PortError) Error() string {
	return fmt.Sprintf("%s port %d: %v", e.Kind, e.Port, e.Err)
}

func (e *PortError) Unwrap() error { return e.Err }

// listen binds port on the IPv4 wildcard address. It first binds the socket
// to the loopback device (SO_BINDTODEVICE), so that no other interface
// reaches it; when the kernel refuses that (no privilege, not Linux), it
// binds the plain wildcard. Either way the listener closes every connection
// whose local address is not a loopback address (which also covers a
// connection to one of the host's own addresses, routed through lo).
// bound tells whether the device binding took.
func listen(port int) (ln net.Listener, bound bool, err error) {
	addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(port))
	inner, err := listenLoopbackDevice(addr)
	if err == nil {
		return &loopbackListener{Listener: inner}, true, nil
	}
	if !errors.Is(err, errDeviceBindRefused) {
		return nil, false, err
	}
	inner, err = net.Listen("tcp4", addr)
	if err != nil {
		return nil, false, err
	}
	return &loopbackListener{Listener: inner}, false, nil
}

// errDeviceBindRefused marks a refused SO_BINDTODEVICE.
var errDeviceBindRefused = errors.New("binding to the loopback device refused")

// loopbackListener accepts only connections whose local address is a
// loopback address.
type loopbackListener struct {
	net.Listener
	rejected atomic.Uint64
}

func (l *loopbackListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if isLoopback(c.LocalAddr()) {
			return c, nil
		}
		l.rejected.Add(1)
		_ = c.Close()
	}
}

// isLoopback tells whether a is a TCP address in 127.0.0.0/8 (or ::1).
func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}
