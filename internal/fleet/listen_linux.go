package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// listenLoopbackDevice listens on addr with the socket bound to device lo.
func listenLoopbackDevice(addr string) (net.Listener, error) {
	var refused bool
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, "lo")
		}); err != nil {
			return err
		}
		if serr != nil {
			refused = true
			return fmt.Errorf("%w: %w", errDeviceBindRefused, serr)
		}
		return nil
	}}
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil && refused && !errors.Is(err, errDeviceBindRefused) {
		err = fmt.Errorf("%w: %w", errDeviceBindRefused, err)
	}
	return ln, err
}
