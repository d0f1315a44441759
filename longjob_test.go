package pgkit_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

func requireSQLState(t *testing.T, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, code, pgErr.Code)
}

func TestWithStatementTimeoutLiftsTheServerTimeoutForOneTransaction(t *testing.T) {
	t.Parallel()
	// One connection, so the statements after the job run where it ran.
	db := openTest(t, pgkit.Config{MaxConns: 1, StatementTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	sleep := func(q pgkit.Querier) error { _, err := q.Exec(ctx, `SELECT pg_sleep(0.5)`); return err }

	requireSQLState(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return sleep(tx) }), "57014")
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		var timeout string
		require.NoError(t, tx.QueryRow(ctx, `SHOW statement_timeout`).Scan(&timeout))
		require.Equal(t, "3s", timeout)
		return sleep(tx)
	}, pgkit.WithStatementTimeout(3*time.Second), pgkit.WithTenant("acme")))
	requireSQLState(t, sleep(db), "57014") // SET LOCAL ended with the transaction

	for _, d := range []time.Duration{0, -time.Second} {
		require.ErrorContains(t, pgkit.InTx(ctx, db, func(pgkit.Tx) error { return nil }, pgkit.WithStatementTimeout(d)), "must be positive")
	}
}

func TestWithStatementTimeoutLiftsClientTimeoutUntilRelease(t *testing.T) {
	t.Parallel()
	// No server timeout: ClientTimeout alone ends a statement.
	db := openTest(t, pgkit.Config{MaxConns: 1, StatementTimeout: pgkit.Disabled, ClientTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	sleep := func(q pgkit.Querier) error { _, err := q.Exec(ctx, `SELECT pg_sleep(0.6)`); return err }

	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return sleep(tx) }, pgkit.WithStatementTimeout(2*time.Second)))
	require.NoError(t, db.WithStatementTimeout(ctx, 2*time.Second, func(conn *pgxpool.Conn) error { return sleep(conn) }))

	err := sleep(db) // the same connection, back under ClientTimeout
	require.True(t, pgconn.Timeout(err), "%v", err)
}

func TestDBWithStatementTimeoutRestoresTheSession(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 1, StatementTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	show := func(q pgkit.Querier) (timeout string) {
		require.NoError(t, q.QueryRow(ctx, `SHOW statement_timeout`).Scan(&timeout))
		return timeout
	}

	var pid, pidAfter uint32
	require.NoError(t, db.WithStatementTimeout(ctx, 90*time.Second, func(conn *pgxpool.Conn) error {
		pid = conn.Conn().PgConn().PID()
		require.Equal(t, "90s", show(conn))
		if _, err := conn.Exec(ctx, `CREATE INDEX CONCURRENTLY tenants_name_idx ON tenants (name)`); err != nil {
			return err
		}
		_, err := conn.Exec(ctx, `SELECT pg_sleep(0.3)`) // past Config.StatementTimeout
		return err
	}))
	require.NoError(t, db.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pidAfter))
	require.Equal(t, pid, pidAfter, "the connection went back to the pool")
	require.Equal(t, "200ms", show(db), "with its own setting")

	// A panic in fn still restores the setting.
	require.Panics(t, func() {
		_ = db.WithStatementTimeout(ctx, time.Minute, func(*pgxpool.Conn) error { panic("boom") })
	})
	require.Equal(t, "200ms", show(db))

	// fn leaves its connection where RESET cannot run: the connection is
	// dropped, never handed out with fn's timeout.
	require.NoError(t, db.WithStatementTimeout(ctx, time.Minute, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, `BEGIN; SELECT 1`)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT 1/0`)
		}
		requireSQLState(t, err, "22012")
		return nil
	}))
	require.Equal(t, "200ms", show(db))
	require.NoError(t, db.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pidAfter))
	require.NotEqual(t, pid, pidAfter)

	require.ErrorContains(t, db.WithStatementTimeout(ctx, 0, func(*pgxpool.Conn) error { return nil }), "must be positive")
	require.ErrorContains(t, db.WithStatementTimeout(ctx, time.Second, nil), "fn is nil")
	bounced := openTest(t, pgkit.Config{URL: db.Config().URL, PgBouncer: true, MaxConns: 1})
	require.ErrorContains(t, bounced.WithStatementTimeout(ctx, time.Second, func(*pgxpool.Conn) error { return nil }), "under PgBouncer")
}
