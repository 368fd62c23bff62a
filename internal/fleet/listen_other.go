//go:build !linux

package fleet

import "net"

// listenLoopbackDevice is Linux only; elsewhere the accept filter alone
// keeps other interfaces out.
func listenLoopbackDevice(string) (net.Listener, error) {
	return nil, errDeviceBindRefused
}
