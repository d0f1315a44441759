package pgkit_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// frozenBound is ClientTimeout in the frozen-server tests, and frozenSlack
// what a busy 2-core machine may add to it.
const (
	frozenBound = 400 * time.Millisecond
	frozenSlack = 1500 * time.Millisecond
)

// TestNoDeadlineThroughFrozenServer: a caller who gives no deadline at all
// (context.Background) still gets an answer when the server stops
// answering, because ClientTimeout bounds every kind of call on the client.
// The server's StatementTimeout cannot: it never sees the statement. Each
// call starts on a connection that was live a moment before the freeze, so
// what is bounded is the statement, not the acquire.
func TestNoDeadlineThroughFrozenServer(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 1, ClientTimeout: frozenBound,
		AcquireTimeout: 3 * time.Second, ConnectTimeout: 3 * time.Second, HealthTimeout: frozenBound})
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TABLE frozen (n int)`)
	require.NoError(t, err)

	calls := []struct {
		name string
		call func() error
	}{
		{"Exec", func() error { _, err := db.Exec(ctx, `SELECT 1`); return err }},
		{"Query", func() error {
			rows, err := db.Query(ctx, `SELECT 1`)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}},
		{"QueryRow", func() error { var n int; return db.QueryRow(ctx, `SELECT 1`).Scan(&n) }},
		{"SendBatch", func() error {
			b := &pgx.Batch{}
			b.Queue(`SELECT 1`)
			b.Queue(`SELECT 2`)
			return db.SendBatch(ctx, b).Close()
		}},
		{"CopyFrom", func() error {
			_, err := db.CopyFrom(ctx, pgx.Identifier{"frozen"}, []string{"n"}, pgx.CopyFromRows([][]any{{1}, {2}}))
			return err
		}},
		{"InTx", func() error {
			return pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO frozen VALUES (1)`)
				return err
			})
		}},
		{"Health", func() error {
			if r := db.Health(ctx); r.Status != pgkit.StatusUp {
				return errors.New(r.Reason)
			}
			return nil
		}},
	}
	for _, c := range calls {
		// A live connection, used a moment ago (no ping on checkout).
		require.Eventually(t, func() bool {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := db.Exec(qctx, `SELECT 1`)
			return err == nil
		}, 15*time.Second, 20*time.Millisecond, "%s: the pool serves again before the freeze", c.name)

		proxy.Pause()
		start := time.Now()
		err := c.call()
		took := time.Since(start)
		proxy.Resume()
		require.Error(t, err, c.name)
		require.Less(t, took, frozenBound+frozenSlack, "%s with no deadline hung past ClientTimeout: %v", c.name, err)
		if c.name != "Health" { // Health has its own bound, HealthTimeout
			require.True(t, pgconn.Timeout(err), "%s: want a timeout, got %v", c.name, err)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded, c.name)
		}
		t.Logf("%s returned in %v: %v", c.name, took.Round(time.Millisecond), err)
	}
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM frozen`).Scan(&n))
	require.Zero(t, n, "nothing frozen mid-statement was committed")
}

// TestCloseThroughFrozenServer: Close with a statement in flight on a
// frozen server returns once ClientTimeout ends that statement.
func TestCloseThroughFrozenServer(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	db, err := pgkit.Open(context.Background(), pgkit.Config{URL: url, MaxConns: 2, ClientTimeout: frozenBound})
	require.NoError(t, err)
	t.Cleanup(proxy.Resume)
	_, err = db.Exec(context.Background(), `SELECT 1`)
	require.NoError(t, err)

	proxy.Pause()
	inFlight := make(chan error, 1)
	go func() { _, err := db.Exec(context.Background(), `SELECT 1`); inFlight <- err }()
	require.Eventually(t, func() bool { return db.Stat().AcquiredConns() == 1 }, 5*time.Second, time.Millisecond)
	start := time.Now()
	db.Close()
	require.Less(t, time.Since(start), frozenBound+frozenSlack, "Close waited for the frozen server")
	require.Error(t, <-inFlight)
}

// TestClientTimeoutSparesDeadlines: the bound is only for statements whose
// context has no deadline, and it does not outlive its statement: a later
// statement with a deadline of its own, longer than ClientTimeout, runs to
// the end on the same connection. With ClientTimeout Disabled, a slow
// statement with no deadline runs to its end.
func TestClientTimeoutSparesDeadlines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 1, StatementTimeout: pgkit.Disabled, ClientTimeout: 200 * time.Millisecond})
	_, err := db.Exec(ctx, `SELECT 1`) // sets and clears the bound
	require.NoError(t, err)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = db.Exec(dctx, `SELECT pg_sleep(0.5)`)
	require.NoError(t, err, "a statement with its own deadline is not bound by ClientTimeout, nor by an earlier statement's bound")

	_, err = db.Exec(ctx, `SELECT pg_sleep(0.5)`)
	require.True(t, pgconn.Timeout(err), "a slow statement with no deadline ends at ClientTimeout: %v", err)

	require.Equal(t, pgkit.Disabled, openTest(t, pgkit.Config{MaxConns: 1, StatementTimeout: pgkit.Disabled}).Config().ClientTimeout,
		"no server timeout: no client bound by default")
	require.Equal(t, 7*time.Second+pgkit.DefaultClientTimeoutMargin,
		openTest(t, pgkit.Config{MaxConns: 1, StatementTimeout: 7 * time.Second}).Config().ClientTimeout)

	off := openTest(t, pgkit.Config{MaxConns: 1, StatementTimeout: pgkit.Disabled, ClientTimeout: pgkit.Disabled})
	_, err = off.Exec(ctx, `SELECT pg_sleep(0.5)`)
	require.NoError(t, err)
}

// TestShutdownUnclosedRows: Close would wait forever for Rows that are never
// closed; Shutdown returns when its context ends, names the holder with the
// stack that acquired it, and ends its session on the server.
func TestShutdownUnclosedRows(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: url, MaxConns: 2, ApplicationName: "pgkit-shutdown-rows", LeakThreshold: time.Hour})
	require.NoError(t, err)
	rows, err := db.Query(ctx, `SELECT generate_series(1, 10)`)
	require.NoError(t, err)
	defer rows.Close() // the caller's late Close lets pgxpool's Close finish

	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = db.Shutdown(sctx)
	require.Less(t, time.Since(start), 300*time.Millisecond+frozenSlack)
	var se *pgkit.ShutdownError
	require.ErrorAs(t, err, &se)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, se.Held, 1)
	require.GreaterOrEqual(t, se.Held[0].For, 300*time.Millisecond)
	require.Contains(t, se.Held[0].AcquiredAt, "TestShutdownUnclosedRows", "the stack that acquired it")
	require.Contains(t, err.Error(), "frozen_test.go")
	_, err = db.Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, pgkit.ErrClosed, "calls after Shutdown returned")

	admin := openTest(t, pgkit.Config{URL: url, MaxConns: 1})
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgkit-shutdown-rows'`).Scan(&n))
		return n == 0
	}, 5*time.Second, 10*time.Millisecond, "the held session ended on the server")
}

// TestShutdownFrozenServer: with ClientTimeout off, a statement with no
// deadline on a frozen server holds its connection; Shutdown still returns
// at its context's end, and the statement fails then instead of waiting.
func TestShutdownFrozenServer(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	t.Cleanup(proxy.Resume)
	db, err := pgkit.Open(context.Background(), pgkit.Config{URL: url, MaxConns: 2, ClientTimeout: pgkit.Disabled})
	require.NoError(t, err)
	_, err = db.Exec(context.Background(), `SELECT 1`)
	require.NoError(t, err)
	proxy.Pause()
	inFlight := make(chan error, 1)
	go func() { _, err := db.Exec(context.Background(), `SELECT 1`); inFlight <- err }()
	require.Eventually(t, func() bool { return db.Stat().AcquiredConns() == 1 }, 5*time.Second, time.Millisecond)

	sctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = db.Shutdown(sctx)
	var se *pgkit.ShutdownError
	require.ErrorAs(t, err, &se)
	require.Len(t, se.Held, 1)
	require.Contains(t, err.Error(), "set Config.LeakThreshold", "says how to see where")
	select {
	case err := <-inFlight:
		require.Error(t, err)
	case <-time.After(frozenSlack):
		t.Fatal("the statement in flight did not end when Shutdown closed its socket")
	}
	require.Less(t, time.Since(start), 300*time.Millisecond+frozenSlack)
}

// TestShutdownIdle: with nothing checked out, Shutdown is Close.
func TestShutdownIdle(t *testing.T) {
	t.Parallel()
	db, err := pgkit.Open(context.Background(), pgkit.Config{URL: pgtest.NewDatabase(t), MaxConns: 2})
	require.NoError(t, err)
	_, err = db.Exec(context.Background(), `SELECT 1`)
	require.NoError(t, err)
	require.NoError(t, db.Shutdown(context.Background()))
	db.Close() // a second close is harmless
}

// TestWithStatementTimeoutThroughFrozenServer: a transaction whose
// statement_timeout was lifted is still bounded on the client, by its own
// timeout plus DefaultClientTimeoutMargin instead of ClientTimeout.
func TestWithStatementTimeoutThroughFrozenServer(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 1, ClientTimeout: frozenBound})
	ctx := context.Background()
	lifted := 100 * time.Millisecond
	var took time.Duration
	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		proxy.Pause()
		defer proxy.Resume()
		start := time.Now()
		_, err := tx.Exec(ctx, `SELECT 1`)
		took = time.Since(start)
		return err
	}, pgkit.WithStatementTimeout(lifted))
	require.True(t, pgconn.Timeout(err), "%v", err)
	require.Greater(t, took, lifted+pgkit.DefaultClientTimeoutMargin-frozenBound, "lifted past ClientTimeout")
	require.Less(t, took, lifted+pgkit.DefaultClientTimeoutMargin+frozenSlack, "and still bounded")
}
