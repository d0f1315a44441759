package pgkit_test

import (
	"context"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/stretchr/testify/require"
)

// TestNilArguments: nil where a DB or a function belongs is an error, not
// a panic.
func TestNilArguments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 1})
	require.ErrorContains(t, pgkit.InTx(ctx, db, nil), "fn is nil")
	require.ErrorContains(t, pgkit.InTx(ctx, nil, func(pgkit.Tx) error { return nil }), "nil")
	var nilDB *pgkit.DB
	require.ErrorContains(t, pgkit.InTx(ctx, nilDB, func(pgkit.Tx) error { return nil }), "nil TxStarter (*pgkit.DB)")
	_, err := pgkit.NewWriter(nilDB, pgkit.WriterConfig[event]{Table: "events"})
	require.ErrorContains(t, err, "nil *DB")
}

// TestCommitInsideInTx: fn calling Commit or Rollback itself gets
// ErrTxManaged at once (nothing is sent), and InTx rolls back and returns
// an error matching it, whether fn then returns nil or not: the outcome is
// known (not committed), never reported ambiguous.
func TestCommitInsideInTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 2})
	_, err := db.Exec(ctx, `CREATE TABLE misuse (n int)`)
	require.NoError(t, err)
	for _, end := range []string{"Commit", "Rollback"} {
		var callErr error
		err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO misuse VALUES (1)`); err != nil {
				return err
			}
			if end == "Commit" {
				callErr = tx.Commit(ctx)
			} else {
				callErr = tx.Rollback(ctx)
			}
			// Still usable: nothing was sent.
			_, err := tx.Exec(ctx, `INSERT INTO misuse VALUES (2)`)
			return err
		}, pgkit.WithRetry(pgkit.RetryPolicy{}))
		require.ErrorIs(t, callErr, pgkit.ErrTxManaged, end)
		require.ErrorIs(t, err, pgkit.ErrTxManaged, end)
		var ambiguous *pgkit.AmbiguousCommitError
		require.NotErrorAs(t, err, &ambiguous, end)
	}
	// In a savepoint too; the outer transaction goes on.
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		inner := pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error {
			_, _ = sp.Exec(ctx, `INSERT INTO misuse VALUES (3)`)
			return sp.Commit(ctx)
		})
		require.ErrorIs(t, inner, pgkit.ErrTxManaged)
		_, err := tx.Exec(ctx, `INSERT INTO misuse VALUES (4)`)
		return err
	})
	require.NoError(t, err)
	var got []int
	rows, err := db.Query(ctx, `SELECT n FROM misuse ORDER BY n`)
	require.NoError(t, err)
	for rows.Next() {
		var n int
		require.NoError(t, rows.Scan(&n))
		got = append(got, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int{4}, got, "nothing of the misused transactions committed")
}

// TestNewWriterChecksTable: a table that does not exist, or lacks a column
// of T, is refused at NewWriter when the pool can ask the server, not
// discovered at Close.
func TestNewWriterChecksTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 2})
	_, err := pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "no_such_table"})
	require.ErrorContains(t, err, "does not exist")
	_, err = db.Exec(ctx, `CREATE TABLE half_events (n int)`)
	require.NoError(t, err)
	_, err = pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "half_events"})
	require.ErrorContains(t, err, "has no column")
	_, err = db.Exec(ctx, `CREATE TABLE events (n int, body text)`)
	require.NoError(t, err)
	_, err = pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "events", DedupeKey: "client_id"})
	require.ErrorContains(t, err, `DedupeKey: pgkit_test.event has no field tagged db:"client_id"`)
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "events"})
	require.NoError(t, err)
	require.NoError(t, w.Close(ctx))
}

// TestWarningsWithoutLogger: with no Config.Logger, what warns of refused
// or lost work still reaches slog.Default(): the MaxConns warning and the
// Writer's default dead letter. Not parallel: it swaps the process's
// default logger while no parallel test runs.
func TestWarningsWithoutLogger(t *testing.T) {
	var buf testkit.LockedBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 100000, LazyConnect: false})
	require.Contains(t, buf.String(), "MaxConns exceeds the connections the server can give")

	_, err := db.Exec(ctx, `CREATE TABLE events (n int CHECK (n >= 0), body text)`)
	require.NoError(t, err)

	// The default logger is looked up when a warning is logged, not at
	// Open: a program that sets it later, at Warn, still gets the dead
	// letter, at Error.
	var later testkit.LockedBuffer
	slog.SetDefault(slog.New(slog.NewTextHandler(&later, &slog.HandlerOptions{Level: slog.LevelWarn})))
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "events", FlushInterval: time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, w.Write(ctx, ev(-1)))
	require.Error(t, w.Close(ctx))
	require.Contains(t, later.String(), `level=ERROR msg="pgkit: writer could not write items"`)
	require.NotContains(t, later.String(), "query failed", "routine logs stay off without a Logger")
}

// TestConfigStructsRefuseFieldsAlike: every configuration struct refuses a
// bad field the same way, with a *ConfigError naming the struct and the
// field, before anything runs.
func TestConfigStructsRefuseFieldsAlike(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MaxConns: 2})
	_, err := db.Exec(ctx, `CREATE TABLE events (n int, body text)`)
	require.NoError(t, err)
	calls := 0
	fn := func(pgkit.Tx) error { calls++; return nil }
	store, err := cache.NewMemoryStore(cache.MemoryStoreConfig{})
	require.NoError(t, err)
	defer store.Close()
	for _, c := range []struct {
		err          error
		struc, field string
		message      string
	}{
		{func() error {
			_, err := pgkit.Open(ctx, pgkit.Config{URL: "host=127.0.0.1 pool_max_conns=many"})
			return err
		}(), "Config", "URL", "pgkit: invalid Config.URL: cannot parse: cannot parse `host=127.0.0.1 pool_max_conns=many`: cannot parse pool_max_conns (strconv.ParseInt: parsing \"many\": invalid syntax)"},
		{func() error { _, err := pgkit.NewWriter(db, pgkit.WriterConfig[event]{}); return err }(), "WriterConfig", "Table", "pgkit: invalid WriterConfig.Table: required"},
		{func() error {
			_, err := pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "events", BatchSize: -1})
			return err
		}(), "WriterConfig", "BatchSize", "pgkit: invalid WriterConfig.BatchSize: must not be negative (got -1)"},
		{func() error {
			_, err := pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "events", Overflow: 7})
			return err
		}(), "WriterConfig", "Overflow", "pgkit: invalid WriterConfig.Overflow: unknown value 7: use OverflowBlock or OverflowFail"},
		{pgkit.InTx(ctx, db, fn, pgkit.WithRetry(pgkit.RetryPolicy{MaxDelay: -time.Second})),
			"RetryPolicy", "MaxDelay", "pgkit: invalid RetryPolicy.MaxDelay: must not be negative (got -1000000000)"},
		{func() error {
			_, err := cache.New[int](store, cache.Config{Name: "c", StoreTimeout: -time.Second})
			return err
		}(), "cache.Config", "StoreTimeout", "pgkit: invalid cache.Config.StoreTimeout: must not be negative (got -1s); use pgkit.Disabled to turn it off"},
		{func() error {
			_, err := pgkit.Open(ctx, pgkit.Config{URL: "postgres://u@127.0.0.1:1/db", HealthTimeout: pgkit.Disabled})
			return err
		}(), "Config", "HealthTimeout", "pgkit: invalid Config.HealthTimeout: cannot be turned off (pgkit.Disabled); set a positive duration, or leave it zero for the default"},
		{func() error {
			_, err := cache.New[int](store, cache.Config{Name: "c", TTL: pgkit.Disabled})
			return err
		}(),
			"cache.Config", "TTL", "pgkit: invalid cache.Config.TTL: cannot be turned off (pgkit.Disabled); set a positive duration, or leave it zero for the default"},
		{func() error { _, err := cache.NewMemoryStore(cache.MemoryStoreConfig{MaxEntries: -1}); return err }(),
			"cache.MemoryStoreConfig", "MaxEntries", "pgkit: invalid cache.MemoryStoreConfig.MaxEntries: must not be negative (got -1)"},
	} {
		var ce *pgkit.ConfigError
		require.ErrorAs(t, c.err, &ce, c.message)
		require.Equal(t, c.struc, ce.Struct)
		require.Equal(t, c.field, ce.Field)
		require.EqualError(t, c.err, c.message)
	}
	require.Zero(t, calls, "InTx ran nothing with a refused RetryPolicy")
}
