package pgkit_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestMetricsFollowRealWork(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, Name: "main", MaxConns: 2, MinConns: 2, AcquireTimeout: 100 * time.Millisecond})
	ctx := context.Background()

	named := pgkit.WithQueryName(ctx, "tenant_count")
	for range 3 {
		var n int
		require.NoError(t, db.QueryRow(named, `SELECT COUNT(*) FROM tenants`).Scan(&n))
	}
	_, err := db.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('a', 'A'), ('b', 'B')`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('a', 'again')`)
	require.Error(t, err, "a unique violation")

	b := &pgx.Batch{}
	b.Queue(`UPDATE tenants SET name = name WHERE id = 'a'`)
	b.Queue(`UPDATE tenants SET name = name`)
	require.NoError(t, db.SendBatch(pgkit.WithQueryName(ctx, "touch_tenants"), b).Close())

	n, err := db.CopyFrom(ctx, pgx.Identifier{"tenants"}, []string{"id", "name"},
		pgx.CopyFromSlice(5, func(i int) ([]any, error) { return []any{fmt.Sprint("c", i), "C"}, nil }))
	require.NoError(t, err)
	require.Equal(t, int64(5), n)

	canceled, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = db.Exec(canceled, `SELECT pg_sleep(5)`)
	cancel()
	require.Error(t, err)

	// The canceled statement cost its connection: the second Acquire may
	// have to open one, which a busy machine can make take longer than the
	// 100ms AcquireTimeout, so it tries until it gets one. What is held is
	// released even if the test fails, or Close would wait for it.
	held := make([]*pgxpool.Conn, 2)
	t.Cleanup(func() {
		for _, c := range held {
			if c != nil {
				c.Release()
			}
		}
	})
	extraTimeouts := 0
	for i := range held {
		require.Eventually(t, func() bool {
			held[i], err = db.Acquire(ctx)
			if errors.Is(err, pgkit.ErrAcquireTimeout) {
				extraTimeouts++
			}
			return err == nil
		}, 30*time.Second, 10*time.Millisecond)
	}
	_, err = db.Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, pgkit.ErrAcquireTimeout)
	for i, c := range held {
		c.Release()
		held[i] = nil
	}

	// A scrape runs a health check, which acquires a connection too: counts
	// read at scrape time lie between these two.
	before := db.Stat()
	g := testkit.Gather(t, reg)
	after := db.Stat()
	between := func(name string, lo, hi int64, labels map[string]string) {
		t.Helper()
		v := g.Value(t, name, labels)
		require.True(t, float64(lo) <= v && v <= float64(hi), "%s = %v, want %d..%d", name, v, lo, hi)
	}
	dur := "pgkit_query_duration_seconds"
	require.Equal(t, 3.0, g.Value(t, dur, map[string]string{"pool": "main", "name": "tenant_count", "op": "query", "outcome": "ok"}))
	require.Equal(t, 1.0, g.Value(t, dur, map[string]string{"name": "insert", "op": "query", "outcome": "ok"}))
	require.Equal(t, 1.0, g.Value(t, dur, map[string]string{"name": "insert", "op": "query", "outcome": "error"}))
	require.Equal(t, 1.0, g.Value(t, dur, map[string]string{"name": "touch_tenants", "op": "batch", "outcome": "ok"}))
	require.Equal(t, 1.0, g.Value(t, dur, map[string]string{"name": "tenants", "op": "copy", "outcome": "ok"}))
	require.Equal(t, 1.0, g.Value(t, dur, map[string]string{"name": "select", "op": "query", "outcome": "canceled"}))
	require.Equal(t, 1.0, g.Value(t, "pgkit_query_errors_total", map[string]string{"name": "insert", "sqlstate_class": "23"}))
	require.Equal(t, 2.0, g.Value(t, "pgkit_query_rows_total", map[string]string{"name": "insert", "op": "query"}))
	require.Equal(t, 3.0, g.Value(t, "pgkit_query_rows_total", map[string]string{"name": "touch_tenants", "op": "batch"}),
		"one row, then both (the copy came after)")
	require.Equal(t, 5.0, g.Value(t, "pgkit_query_rows_total", map[string]string{"name": "tenants", "op": "copy"}))
	require.Nil(t, g.Find("pgkit_slow_queries_total", nil), "nothing was slow")

	require.Equal(t, float64(1+extraTimeouts), g.Value(t, "pgkit_pool_acquire_timeouts_total", nil))
	require.Equal(t, 2.0, g.Value(t, "pgkit_pool_max_connections", map[string]string{"pool": "main"}))
	// The scrape's own health check may hold (or wait for) one connection
	// while the pool's gauges are read: collectors run concurrently.
	between("pgkit_pool_acquired_connections", 0, 1, nil)
	require.LessOrEqual(t, g.Value(t, "pgkit_pool_utilization_ratio", nil), 0.5)
	between("pgkit_pool_waiting", 0, 1, nil)
	require.Equal(t, 0.0, g.Value(t, "pgkit_pool_leaked_connections", nil))
	between("pgkit_pool_acquires_total", before.AcquireCount(), after.AcquireCount(), nil)
	between("pgkit_pool_new_connections_total", before.NewConnsCount(), after.NewConnsCount(), nil)
	between("pgkit_pool_connect_duration_seconds", before.NewConnsCount(), after.NewConnsCount(), map[string]string{"outcome": "ok"})
	require.Equal(t, float64(after.CanceledAcquireCount()), g.Value(t, "pgkit_pool_canceled_acquires_total", nil))
	// Every acquire is measured, the timed-out one included; every checkout is released.
	between("pgkit_pool_acquire_duration_seconds", before.AcquireCount()+1+int64(extraTimeouts), after.AcquireCount()+1+int64(extraTimeouts), nil)
	between("pgkit_pool_connection_hold_seconds", before.AcquireCount(), after.AcquireCount(), nil)
	require.Contains(t, g, "pgkit_pool_closed_connections_total")
	require.Equal(t, 1.0, g.Value(t, "pgkit_database_up", map[string]string{"pool": "main"}))

	// A second pool on the same registry needs its own name.
	_, err = pgkit.Open(ctx, pgkit.Config{URL: db.Config().URL, Registerer: reg, Name: "main", LazyConnect: true})
	var cerr *pgkit.ConfigError
	require.ErrorAs(t, err, &cerr)
	require.Equal(t, "Name", cerr.Field)
	other := openTest(t, pgkit.Config{Registerer: reg, Name: "other"})
	_, err = other.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"main", "other"}, testkit.Gather(t, reg).LabelValues("pgkit_pool_max_connections", "pool"))

	// Close unregisters, so the name can be used again.
	db.Close()
	reopened := openTest(t, pgkit.Config{URL: db.Config().URL, Registerer: reg, Name: "main", MaxConns: 2})
	require.Equal(t, 2.0, testkit.Gather(t, reg).Value(t, "pgkit_pool_max_connections", map[string]string{"pool": "main"}))
	reopened.Close()
}

func TestQueryNames(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Registerer: reg, MaxQueryNames: 4, Logger: slog.New(logs)})
	ctx := context.Background()

	run := func(ctx context.Context, sql string) {
		t.Helper()
		_, err := db.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	run(ctx, "-- name: GetTenant :one\nSELECT * FROM tenants WHERE id = 'x'")
	run(ctx, "  /* leading */ -- a plain comment\n  select 1")
	run(pgkit.WithQueryName(ctx, "from_context"), "-- name: Ignored :one\nSELECT 1")
	run(ctx, "WITH x AS (SELECT 1) SELECT * FROM x")
	// The cap (4) is reached: these are counted as "other".
	run(ctx, "UPDATE tenants SET name = 'n' WHERE id = 'none'")
	run(pgkit.WithQueryName(ctx, "late_name"), "SELECT 1")

	g := testkit.Gather(t, reg)
	// The scrape's own health check is named pgkit_health, outside the cap.
	names := slices.DeleteFunc(g.LabelValues("pgkit_query_duration_seconds", "name"), func(n string) bool { return n == "pgkit_health" })
	require.ElementsMatch(t, []string{"GetTenant", "select", "from_context", "with", "other"}, names)
	// "other" holds both later names.
	require.Equal(t, 2.0, g.Value(t, "pgkit_query_duration_seconds", map[string]string{"name": "other", "op": "query"}))
	attrs, ok := logs.Find("MaxQueryNames")
	require.True(t, ok, logs.Text())
	require.Equal(t, "update", attrs["first_over"].String())
	require.Equal(t, 1, strings.Count(logs.Text(), "MaxQueryNames"), "warned once")
}

func TestSlowQueryLog(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-arg-value"
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{
		Logger: slog.New(logs), SlowQueryThreshold: 100 * time.Millisecond, MaxLoggedSQL: 60, SlowQueryBuffer: 2,
	})
	ctx := context.Background()

	// Fast: not logged.
	_, err := db.Exec(ctx, `SELECT $1::text`, secret)
	require.NoError(t, err)
	_, logged := logs.Find("slow query", "op", "query")
	require.False(t, logged, logs.Text())

	slowSQL := "SELECT pg_sleep(0.15),\n\t\t$1::text   AS secret_column,\n  'padding padding padding padding padding padding' AS p, 'literal' AS secret_literal_column"
	_, err = db.Exec(pgkit.WithQueryName(ctx, "slow_one"), slowSQL, secret)
	require.NoError(t, err)

	// op=query: on a busy machine the statement's prepare can be slow too.
	attrs, ok := logs.Find("slow query", "op", "query")
	require.True(t, ok, logs.Text())
	require.Equal(t, "slow_one", attrs["name"].String())
	require.Equal(t, "query", attrs["op"].String())
	require.GreaterOrEqual(t, attrs["duration"].Duration(), 150*time.Millisecond)
	require.Equal(t, 100*time.Millisecond, attrs["threshold"].Duration())
	require.Equal(t, int64(1), attrs["rows"].Int64())
	sql := attrs["sql"].String()
	require.Equal(t, "SELECT pg_sleep(?), $1::text AS secret_column, ? AS p, ? AS…", sql, "literals masked, folded and cut at 60 bytes")
	require.NotContains(t, attrs, "args")
	require.NotContains(t, logs.Text(), secret)

	// The ring keeps the last two, newest first.
	for _, name := range []string{"slow_two", "slow_three"} {
		_, err = db.Exec(pgkit.WithQueryName(ctx, name), `SELECT pg_sleep(0.12)`)
		require.NoError(t, err)
	}
	slow := db.SlowQueries()
	require.Len(t, slow, 2)
	require.Equal(t, "slow_three", slow[0].Name)
	require.Equal(t, "slow_two", slow[1].Name)
	require.GreaterOrEqual(t, slow[0].Duration, 120*time.Millisecond)
	require.Equal(t, "SELECT pg_sleep(?)", slow[0].SQL)

	// A failure is logged at Error with its SQLSTATE, and without the value
	// the server quoted back.
	_, err = db.Exec(pgkit.WithQueryName(ctx, "bad_cast"), `SELECT $1::int`, secret)
	require.Error(t, err)
	require.Contains(t, err.Error(), secret, "the caller's own error keeps the server's message")
	attrs, ok = logs.Find("query failed")
	require.True(t, ok, logs.Text())
	require.Equal(t, "22P02", attrs["sqlstate"].String())
	require.Equal(t, `invalid input syntax for type integer: "?"`, attrs["error"].String())
	require.NotContains(t, logs.Text(), secret)
}

func TestSlowQueryLogArgsRedacted(t *testing.T) {
	t.Parallel()
	const secret = "card-4111111111111111"
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), SlowQueryThreshold: 50 * time.Millisecond, LogArgs: true})
	_, err := db.Exec(context.Background(), `SELECT pg_sleep(0.06), $1::text, $2::int`, secret, 42)
	require.NoError(t, err)
	attrs, ok := logs.Find("slow query", "op", "query")
	require.True(t, ok)
	require.Equal(t, []string{"string(len=21)", "int"}, attrs["args"].Any())
	require.NotContains(t, logs.Text(), secret)

	custom := &testkit.LogRecorder{}
	db2 := openTest(t, pgkit.Config{Logger: slog.New(custom), SlowQueryThreshold: 50 * time.Millisecond, LogArgs: true,
		RedactArg: func(v any) string {
			if s, ok := v.(string); ok {
				return s[:4] + "…"
			}
			return fmt.Sprint(v)
		}})
	_, err = db2.Exec(context.Background(), `SELECT pg_sleep(0.06), $1::text, $2::int`, secret, 42)
	require.NoError(t, err)
	attrs, ok = custom.Find("slow query", "op", "query")
	require.True(t, ok)
	require.Equal(t, []string{"card…", "42"}, attrs["args"].Any())
}

func TestSlowQueryLogDisabled(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogRecorder{}
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), Registerer: reg, SlowQueryThreshold: -1})
	_, err := db.Exec(context.Background(), `SELECT pg_sleep(0.55)`)
	require.NoError(t, err)
	require.Empty(t, logs.Text())
	require.Empty(t, db.SlowQueries())
	require.Nil(t, testkit.Gather(t, reg).Find("pgkit_slow_queries_total", nil))
}

func TestSlowQueriesCountedByDefaultThreshold(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg})
	_, err := db.Exec(context.Background(), `SELECT pg_sleep(0.4)`)
	require.NoError(t, err)
	require.Empty(t, db.SlowQueries(), "0.4s is under the 500ms default")
	_, err = db.Exec(context.Background(), `SELECT pg_sleep(0.55)`)
	require.NoError(t, err)
	require.Len(t, db.SlowQueries(), 1)
	require.Equal(t, 1.0, testkit.Gather(t, reg).Value(t, "pgkit_slow_queries_total", map[string]string{"name": "select", "op": "query"}))
}

func TestRequestStatsConcurrent(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{SlowQueryThreshold: 80 * time.Millisecond})
	ctx := pgkit.WithStats(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				_, err := db.Exec(ctx, `SELECT 1`)
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	_, err := db.Exec(ctx, `SELECT pg_sleep(0.1)`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `SELECT 1/0`)
	require.Error(t, err)

	s, ok := pgkit.StatsFrom(ctx)
	require.True(t, ok)
	require.Equal(t, int64(42), s.Queries)
	require.Equal(t, int64(1), s.Slow)
	require.Equal(t, int64(1), s.Errors)
	require.GreaterOrEqual(t, s.Duration, 100*time.Millisecond)

	_, ok = pgkit.StatsFrom(context.Background())
	require.False(t, ok)
}

func TestMiddlewareServerTiming(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	srv := httptest.NewServer(pgkit.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 3 {
			if _, err := db.Exec(r.Context(), `SELECT pg_sleep(0.01)`); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
		}
		_, _ = w.Write([]byte("ok"))
	})))
	defer srv.Close()

	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	h := resp.Header.Get("Server-Timing")
	m := regexp.MustCompile(`^db;dur=(\d+\.\d{3});desc="3 queries"$`).FindStringSubmatch(h)
	require.NotNil(t, m, h)
	var ms float64
	_, err = fmt.Sscan(m[1], &ms)
	require.NoError(t, err)
	require.GreaterOrEqual(t, ms, 30.0)
}

func TestLeakDetection(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogRecorder{}
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), Registerer: reg, LeakThreshold: 100 * time.Millisecond})
	ctx := context.Background()

	leakedGauge := func() float64 { return testkit.Gather(t, reg).Value(t, "pgkit_pool_leaked_connections", nil) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		require.Eventually(t, cond, 5*time.Second, 10*time.Millisecond, "waiting for %s", what)
	}

	// A connection released in time is no leak.
	c, err := db.Acquire(ctx)
	require.NoError(t, err)
	c.Release()

	conn := acquireAndForget(t, db)
	waitFor("the leak warning", func() bool { _, ok := logs.Find("possible leak"); return ok })
	attrs, _ := logs.Find("possible leak")
	require.Contains(t, attrs["acquired_at"].String(), "acquireAndForget")
	require.Contains(t, attrs["acquired_at"].String(), "TestLeakDetection")
	require.GreaterOrEqual(t, attrs["held"].Duration(), 100*time.Millisecond)
	require.Equal(t, 1.0, leakedGauge())
	require.Equal(t, 1.0, testkit.Gather(t, reg).Value(t, "pgkit_pool_leaks_total", nil))

	// A transaction never ended is a leak too.
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	waitFor("the second leak", func() bool { return leakedGauge() == 2 })

	conn.Release()
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, 0.0, leakedGauge())
	_, ok := logs.Find("leaked connection returned")
	require.True(t, ok)
	require.Equal(t, 2.0, testkit.Gather(t, reg).Value(t, "pgkit_pool_leaks_total", nil))
}

// acquireAndForget is the leaky code the leak detector must point at.
func acquireAndForget(t *testing.T, db *pgkit.DB) *pgxpool.Conn {
	c, err := db.Acquire(context.Background())
	require.NoError(t, err)
	return c
}

// countingTracer is a user's own tracer, composed through Config.Tracer. It
// counts acquires whose context still carries what its start put there.
type countingTracer struct{ queries, acquires atomic.Int64 }

type countingKey struct{}

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}
func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *countingTracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	return context.WithValue(ctx, countingKey{}, "mine")
}
func (c *countingTracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireEndData) {
	if ctx.Value(countingKey{}) == "mine" {
		c.acquires.Add(1)
	}
}

func TestUserTracerSeesEveryQuery(t *testing.T) {
	t.Parallel()
	user := &countingTracer{}
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Tracer: user, Registerer: reg, MaxConns: 1, MinConns: 1, AcquireTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	before := user.queries.Load()
	for range 10 {
		_, err := db.Exec(ctx, `SELECT 1`)
		require.NoError(t, err)
	}
	require.Equal(t, before+10, user.queries.Load())
	require.Equal(t, 10.0, testkit.Gather(t, reg).Value(t, "pgkit_query_duration_seconds", map[string]string{"name": "select", "op": "query"}),
		"Open's check of the server uses a connection of its own, the scrape's health check a name of its own")
	require.GreaterOrEqual(t, user.acquires.Load(), int64(10))

	// pgkit's AcquireTimeout still applies with a user tracer in the chain.
	c, err := db.Acquire(ctx)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, pgkit.ErrAcquireTimeout)
	c.Release()
}

func TestWaitingGaugeCountsCallersWaiting(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, MaxConns: 1, AcquireTimeout: pgkit.Disabled})
	ctx := context.Background()
	// Rows never closed hold their connection.
	rows, err := db.Query(ctx, `SELECT generate_series(1, 3)`)
	require.NoError(t, err)
	t.Cleanup(rows.Close) // before db.Close, which waits for it, even if the test fails

	done := make(chan error, 3)
	for range 3 {
		go func() { _, err := db.Exec(ctx, `SELECT 1`); done <- err }()
	}
	require.Eventually(t, func() bool { return db.PoolStats().Waiting == 3 }, 5*time.Second, 5*time.Millisecond)
	g := testkit.Gather(t, reg)
	// The scrape's own health check may be waiting too.
	require.Contains(t, []float64{3, 4}, g.Value(t, "pgkit_pool_waiting", nil))
	require.Equal(t, 1.0, g.Value(t, "pgkit_pool_utilization_ratio", nil))
	require.Equal(t, 1.0, g.Value(t, "pgkit_database_up", nil), "a saturated pool is degraded, not down")

	rows.Close()
	for range 3 {
		require.NoError(t, <-done)
	}
	require.Equal(t, int64(0), db.PoolStats().Waiting)
	// The registry reads the gauge while the scrape's health check may be
	// checking out the one connection.
	require.Contains(t, []float64{0, 1}, testkit.Gather(t, reg).Value(t, "pgkit_pool_waiting", nil))
}
