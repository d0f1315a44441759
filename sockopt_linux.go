//go:build linux

package pgkit

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// tcpUserTimeoutOpt is TCP_USER_TIMEOUT from <linux/tcp.h>, the same on
// every Linux architecture; Go's syscall package defines it on only some.
const tcpUserTimeoutOpt = 0x12

// tcpUserTimeout returns a net.Dialer ControlContext that sets
// TCP_USER_TIMEOUT to d on TCP sockets, or nil when d is not positive (the
// system's default then applies).
func tcpUserTimeout(d time.Duration) func(context.Context, string, string, syscall.RawConn) error {
	if d <= 0 {
		return nil
	}
	ms := int(max(d.Milliseconds(), 1))
	return func(_ context.Context, network, _ string, c syscall.RawConn) error {
		if !strings.HasPrefix(network, "tcp") {
			return nil // a Unix socket has no TCP options
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeoutOpt, ms)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("pgkit: setting TCP_USER_TIMEOUT: %w", serr)
		}
		return nil
	}
}
