package pgkit_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/benchab"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// benchPools opens, on one fresh database, a raw pgxpool and a pgkit DB of the
// same size, with pgkit's instrumentation on (metrics registered, slow log
// armed at its default; leak detection as cfg says).
func benchPools(b *testing.B, size int32, cfg pgkit.Config) (*pgxpool.Pool, *pgkit.DB) {
	b.Helper()
	return benchPoolsOn(b, pgtest.NewDatabase(b), size, cfg)
}

// benchPoolsOn is benchPools on the database at url: both pools hold size
// connections from the start, and close when the benchmark ends.
func benchPoolsOn(b *testing.B, url string, size int32, cfg pgkit.Config) (*pgxpool.Pool, *pgkit.DB) {
	b.Helper()
	raw, err := pgxpool.New(context.Background(), fmt.Sprintf("%s&pool_max_conns=%d&pool_min_conns=%d", url, size, size))
	require.NoError(b, err)
	b.Cleanup(raw.Close)
	return raw, benchDBOn(b, url, size, cfg)
}

func benchDBOn(b *testing.B, url string, size int32, cfg pgkit.Config) *pgkit.DB {
	b.Helper()
	cfg.URL, cfg.MaxConns, cfg.MinConns = url, size, size
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	db, err := pgkit.Open(context.Background(), cfg)
	require.NoError(b, err)
	b.Cleanup(db.Close)
	return db
}

// benchAB is benchab.AB (alternating rounds; the metrics
// internal/benchreport reads): every benchmark that compares two sides goes
// through it (or benchab.Scaled).
func benchAB(b *testing.B, goroutines int, nameA string, opA func(context.Context) error, nameB string, opB func(context.Context) error) (perOpA, perOpB time.Duration) {
	return benchab.AB(b, goroutines, nameA, opA, nameB, opB)
}

// reportRows adds rows/s for both sides of a benchAB whose operations each
// write rows rows.
func reportRows(b *testing.B, rows int, nameA string, perOpA time.Duration, nameB string, perOpB time.Duration) {
	b.ReportMetric(float64(rows)/perOpA.Seconds(), nameA+"-rows/s")
	b.ReportMetric(float64(rows)/perOpB.Seconds(), nameB+"-rows/s")
}

// benchGoroutines are the concurrency levels of the query benchmarks.
var benchGoroutines = []int{1, 16, 64}

// BenchmarkSelect1 is the instrumented query path against raw pgxpool:
// SELECT 1 on pools of 8 connections, from 1, 16 and 64 goroutines.
//
//	go test -run '^$' -bench BenchmarkSelect1 -benchtime 20000x
func BenchmarkSelect1(b *testing.B) {
	raw, db := benchPools(b, 8, pgkit.Config{})
	benchQueryAB(b, raw, db, "SELECT 1", 1)
}

// BenchmarkSelect1Calibration is what BenchmarkSelect1's ratio is measured
// against, and made of, at 64 goroutines. raw-vs-raw runs two raw pools of 8
// connections against each other: any ratio but 1.0 is the spread of the
// machine and the method, not of a library. session-settings runs a raw pool
// against one whose connections carry the session settings pgkit gives its
// own (statement_timeout, idle_in_transaction_session_timeout, jit,
// application_name): what the server's keeping of those timeouts costs a
// statement, whichever client sets them. client-side runs that pool against
// pgkit: what pgkit costs on the client alone. acquire-timeout runs pgkit
// without AcquireTimeout against pgkit with it (the default): what bounding
// every wait for a connection costs when every checkout waits.
func BenchmarkSelect1Calibration(b *testing.B) {
	url := pgtest.NewDatabase(b)
	open := func(params map[string]string) *pgxpool.Pool {
		cfg, err := pgxpool.ParseConfig(fmt.Sprintf("%s&pool_max_conns=8&pool_min_conns=8", url))
		require.NoError(b, err)
		maps.Copy(cfg.ConnConfig.RuntimeParams, params)
		p, err := pgxpool.NewWithConfig(context.Background(), cfg)
		require.NoError(b, err)
		b.Cleanup(p.Close)
		return p
	}
	pgkitParams := benchDBOn(b, url, 1, pgkit.Config{}).Pool().Config().ConnConfig.RuntimeParams
	require.NotEmpty(b, pgkitParams["statement_timeout"], "pgkit's sessions carry a statement_timeout by default")
	raw, again, withSettings := open(nil), open(nil), open(pgkitParams)
	query := func(p interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) func(context.Context) error {
		return func(ctx context.Context) error {
			var n int
			return p.QueryRow(ctx, "SELECT 1").Scan(&n)
		}
	}
	b.Run("raw-vs-raw", func(b *testing.B) {
		benchAB(b, 64, "raw", query(raw), "raw-again", query(again))
	})
	b.Run("session-settings", func(b *testing.B) {
		benchAB(b, 64, "raw", query(raw), "raw-with-settings", query(withSettings))
	})
	db, unbounded := benchDBOn(b, url, 8, pgkit.Config{}), benchDBOn(b, url, 8, pgkit.Config{AcquireTimeout: pgkit.Disabled})
	b.Run("client-side", func(b *testing.B) {
		benchAB(b, 64, "raw-with-settings", query(withSettings), "pgkit", query(db))
	})
	b.Run("acquire-timeout", func(b *testing.B) {
		benchAB(b, 64, "pgkit-unbounded", query(unbounded), "pgkit", query(db))
	})
}

// BenchmarkCountUsers is a typical dashboard query, SELECT COUNT(*) FROM users over
// 10,000 users, through pgkit and raw pgxpool on pools of 8 connections, from
// 1, 16 and 64 goroutines.
func BenchmarkCountUsers(b *testing.B) {
	url := pgtest.NewDatabase(b)
	fillUsersTable(b, url)
	raw, db := benchPoolsOn(b, url, 8, pgkit.Config{})
	benchQueryAB(b, raw, db, "SELECT COUNT(*) FROM users", loadUsers)
}

// benchQueryAB runs sql, which returns want, through raw and db at each of
// benchGoroutines, as sub-benchmarks "goroutines=N".
func benchQueryAB(b *testing.B, raw *pgxpool.Pool, db *pgkit.DB, sql string, want int) {
	query := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) func(context.Context) error {
		return func(ctx context.Context) error {
			var n int
			if err := q.QueryRow(ctx, sql).Scan(&n); err != nil {
				return err
			}
			if n != want {
				return fmt.Errorf("%s returned %d, want %d", sql, n, want)
			}
			return nil
		}
	}
	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			benchAB(b, g, "raw", query(raw), "pgkit", query(db))
		})
	}
}

// BenchmarkLeakDetection is the price of Config.LeakThreshold: SELECT 1 from
// 64 goroutines through two pgkit DBs, without and with leak detection.
func BenchmarkLeakDetection(b *testing.B) {
	_, off := benchPools(b, 8, pgkit.Config{})
	_, on := benchPools(b, 8, pgkit.Config{LeakThreshold: time.Minute})
	benchAB(b, 64,
		"leak-off", func(ctx context.Context) error { var n int; return off.QueryRow(ctx, "SELECT 1").Scan(&n) },
		"leak-on", func(ctx context.Context) error { var n int; return on.QueryRow(ctx, "SELECT 1").Scan(&n) })
}

// BenchmarkInTx is a short non-conflicting transaction (BEGIN, SELECT,
// COMMIT) through InTx with WithRetry against pgx.BeginFunc on the same
// pool, from 16 goroutines.
func BenchmarkInTx(b *testing.B) {
	_, db := benchPools(b, 8, pgkit.Config{})
	retry := pgkit.WithRetry(pgkit.RetryPolicy{})
	body := func(ctx context.Context, tx pgx.Tx) error { var n int; return tx.QueryRow(ctx, "SELECT 1").Scan(&n) }
	benchAB(b, 16,
		"BeginFunc", func(ctx context.Context) error {
			return pgx.BeginFunc(ctx, db.Pool(), func(tx pgx.Tx) error { return body(ctx, tx) })
		},
		"InTx", func(ctx context.Context) error {
			return pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return body(ctx, tx) }, retry)
		})
}
