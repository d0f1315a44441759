//go:build unix

package pgkit_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

// TestNoDeadlineThroughStoppedBackend: the backend serving the connection
// is stopped with SIGSTOP (a frozen process whose kernel still acknowledges
// what is sent to it, so no network timeout fires). A call with no deadline
// still returns by ClientTimeout, and the pool serves again once the
// backend is continued.
func TestNoDeadlineThroughStoppedBackend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 1, ClientTimeout: frozenBound})
	resume := stopBackend(t, db)

	start := time.Now()
	_, err := db.Exec(ctx, `SELECT 1`)
	took := time.Since(start)
	resume()
	require.True(t, pgconn.Timeout(err), "want a timeout, got %v", err)
	require.Less(t, took, frozenBound+frozenSlack, "a call with no deadline waited for a stopped backend")
	require.Eventually(t, func() bool {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := db.Exec(qctx, `SELECT 1`)
		return err == nil
	}, 15*time.Second, 20*time.Millisecond, "the pool serves again")
}

// TestPingWithoutDeadlineThroughStoppedBackend: Ping with no deadline, on
// a connection whose backend is stopped, returns by PingTimeout (pgx sends
// a ping past the tracer that applies ClientTimeout), and so does not keep
// Close waiting for its connection.
func TestPingWithoutDeadlineThroughStoppedBackend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 1, PingTimeout: frozenBound})
	resume := stopBackend(t, db)

	start := time.Now()
	err := db.Ping(ctx)
	took := time.Since(start)
	resume()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, took, frozenBound+frozenSlack, "a ping with no deadline waited for a stopped backend")
	require.Eventually(t, func() bool { return db.Ping(ctx) == nil }, 15*time.Second, 20*time.Millisecond, "the pool serves again")
}

// stopBackend stops, with SIGSTOP, the backend of db's one connection and
// returns the function that continues it (run at cleanup too).
func stopBackend(t *testing.T, db *pgkit.DB) (resume func()) {
	t.Helper()
	var pid int
	require.NoError(t, db.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid))
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	continued := false
	resume = func() {
		if !continued {
			continued = true
			require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
		}
	}
	t.Cleanup(resume)
	return resume
}
