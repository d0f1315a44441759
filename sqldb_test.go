package pgkit_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestSQLDBRunsOnThePool(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, MaxConns: 2, AcquireTimeout: 300 * time.Millisecond, StatementTimeout: 250 * time.Millisecond})
	sqlDB := db.SQLDB()
	require.Same(t, sqlDB, db.SQLDB(), "one *sql.DB per DB")
	ctx := context.Background()

	var timeout string
	require.NoError(t, sqlDB.QueryRowContext(pgkit.WithQueryName(ctx, "sql_show"), `SHOW statement_timeout`).Scan(&timeout))
	require.Equal(t, "250ms", timeout, "the pool's settings")
	_, err := sqlDB.ExecContext(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $1)`, "from-database-sql")
	require.NoError(t, err)
	require.Equal(t, 1, tenantCount(t, db, "from-database-sql"))

	g := testkit.Gather(t, reg)
	require.Equal(t, 1.0, g.Value(t, "pgkit_query_duration_seconds", map[string]string{"name": "sql_show", "op": "query"}), "traced and named")
	require.Zero(t, db.PoolStats().Acquired, "no connection held idle by database/sql")

	// MaxConns bounds both, and AcquireTimeout bounds the wait.
	held1, err := db.Acquire(ctx)
	require.NoError(t, err)
	held2, err := db.Acquire(ctx)
	require.NoError(t, err)
	err = sqlDB.PingContext(ctx)
	require.ErrorIs(t, err, pgkit.ErrAcquireTimeout)
	held1.Release()
	held2.Release()

	require.NoError(t, sqlDB.Close())
	require.NoError(t, db.Ping(ctx), "closing the *sql.DB leaves the DB open")
}

func TestSQLDBAfterClose(t *testing.T) {
	t.Parallel()
	db, err := pgkit.Open(context.Background(), pgkit.Config{URL: pgtest.NewDatabase(t)})
	require.NoError(t, err)
	before := db.SQLDB()
	require.NoError(t, before.Ping())
	db.Close()
	require.ErrorContains(t, before.Ping(), "database is closed")
	require.ErrorContains(t, db.SQLDB().Ping(), "database is closed", "made after Close, closed at once")
}

// TestSQLDBLeakAndSlowLog: a database/sql transaction left open is a leak
// like any other, reported with the line that began it, and a slow
// statement through database/sql is in the slow log.
func TestSQLDBLeakAndSlowLog(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), LeakThreshold: 100 * time.Millisecond, SlowQueryThreshold: 50 * time.Millisecond})
	ctx := context.Background()

	_, err := db.SQLDB().ExecContext(pgkit.WithQueryName(ctx, "sql_slow"), `SELECT pg_sleep(0.08)`)
	require.NoError(t, err)
	_, ok := logs.Find("slow query", "name", "sql_slow")
	require.True(t, ok, logs.Text())

	tx, err := db.SQLDB().BeginTx(ctx, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := logs.Find("possible leak"); return ok }, 5*time.Second, 10*time.Millisecond)
	attrs, _ := logs.Find("possible leak")
	require.Contains(t, attrs["acquired_at"].String(), "TestSQLDBLeakAndSlowLog")
	require.NoError(t, tx.Rollback())
}
