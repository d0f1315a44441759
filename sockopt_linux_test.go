//go:build linux

package pgkit_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestTCPUserTimeout reads TCP_USER_TIMEOUT back from a pool connection's
// socket: by default it is the time keepalives take to find a dead peer
// (KeepaliveIdle + KeepaliveInterval × KeepaliveCount), a set value is
// used as it is, and Disabled leaves the system's default (0). Negative
// values and values past the option's range are refused, naming the field.
func TestTCPUserTimeout(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t) // one database for every case
	cases := []struct {
		name string
		cfg  pgkit.Config
		want time.Duration
	}{
		{"default", pgkit.Config{}, pgkit.DefaultKeepaliveIdle + pgkit.DefaultKeepaliveInterval*pgkit.DefaultKeepaliveCount},
		{"from keepalives", pgkit.Config{KeepaliveIdle: 5 * time.Second, KeepaliveInterval: 2 * time.Second, KeepaliveCount: 4}, 13 * time.Second},
		{"set", pgkit.Config{TCPUserTimeout: 7500 * time.Millisecond}, 7500 * time.Millisecond},
		{"disabled", pgkit.Config{TCPUserTimeout: pgkit.Disabled}, 0},
	}
	for _, c := range cases {
		c.cfg.URL, c.cfg.MaxConns = url, 1
		db := openTest(t, c.cfg)
		if c.want > 0 {
			require.Equal(t, c.want, db.Config().TCPUserTimeout, c.name)
		}
		conn, err := db.Acquire(context.Background())
		require.NoError(t, err)
		tcp, ok := conn.Conn().PgConn().Conn().(syscall.Conn)
		require.True(t, ok, "%s: a socket, got %T", c.name, conn.Conn().PgConn().Conn())
		raw, err := tcp.SyscallConn()
		require.NoError(t, err)
		var ms int
		var serr error
		require.NoError(t, raw.Control(func(fd uintptr) {
			ms, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x12) // TCP_USER_TIMEOUT
		}))
		conn.Release()
		require.NoError(t, serr)
		require.Equal(t, c.want.Milliseconds(), int64(ms), c.name)
	}

	for _, bad := range []time.Duration{-2 * time.Second, 1000 * time.Hour} {
		db, err := pgkit.Open(context.Background(), pgkit.Config{URL: url, TCPUserTimeout: bad})
		require.Nil(t, db)
		var cerr *pgkit.ConfigError
		require.ErrorAs(t, err, &cerr)
		require.Equal(t, "TCPUserTimeout", cerr.Field)
		require.True(t, strings.HasPrefix(err.Error(), "pgkit: invalid Config.TCPUserTimeout: "), err.Error())
	}
}
