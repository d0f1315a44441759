//go:build !linux

package pgkit

import (
	"context"
	"syscall"
	"time"
)

// tcpUserTimeout returns nil: TCP_USER_TIMEOUT is Linux's, and
// Config.TCPUserTimeout has no effect elsewhere.
func tcpUserTimeout(time.Duration) func(context.Context, string, string, syscall.RawConn) error {
	return nil
}
