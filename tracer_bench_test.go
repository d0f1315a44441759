package pgkit

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// benchTracer builds the tracer Open would (its observer is what Prometheus
// reads at scrape time, off the statement path), and a real connection for it to keep its state in; the benchmarks
// call the tracer directly, without a round trip.
func benchTracer(b *testing.B, leak time.Duration) (*tracer, *pgx.Conn) {
	b.Helper()
	cfg := Config{URL: "postgres://x@127.0.0.1/x", Registerer: prometheus.NewRegistry(), LeakThreshold: leak}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	require.NoError(b, err)
	cfg.applyDefaults(connParams(cfg.URL), pcfg)
	t := newTracer(cfg, rolePrimary, newSlowRing(cfg.SlowQueryBuffer))
	b.Cleanup(t.close)
	conn, err := pgx.Connect(context.Background(), pgtest.NewDatabase(b))
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close(context.Background()) })
	return t, conn
}

// BenchmarkTracerQuery is the tracer's start and end of one query, the work
// it adds to every statement.
func BenchmarkTracerQuery(b *testing.B) {
	t, conn := benchTracer(b, 0)
	ctx := context.Background()
	start := pgx.TraceQueryStartData{SQL: "-- name: GetUser :one\nSELECT * FROM users WHERE id = $1", Args: []any{42}}
	end := pgx.TraceQueryEndData{CommandTag: pgconn.NewCommandTag("SELECT 1")}
	b.ReportAllocs()
	for b.Loop() {
		t.TraceQueryEnd(t.TraceQueryStart(ctx, conn, start), conn, end)
	}
}

// BenchmarkTracerAcquireRelease is the tracer's part of one checkout (acquire
// start and end, release): with leak detection off and on (the price of
// LeakThreshold is the stack captured at each checkout), and for a checkout
// that waits (what arming AcquireTimeout's bound costs: puddle's check of
// the context, then the wait's, are the two calls of Done).
func BenchmarkTracerAcquireRelease(b *testing.B) {
	for _, c := range []struct {
		name   string
		leak   time.Duration
		waited bool
	}{{"leak-off", 0, false}, {"leak-on", time.Minute, false}, {"waited", 0, true}} {
		b.Run(c.name, func(b *testing.B) {
			t, conn := benchTracer(b, c.leak)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				actx := t.TraceAcquireStart(ctx, nil, pgxpool.TraceAcquireStartData{})
				if c.waited {
					actx.Done()
					actx.Done()
				}
				t.TraceAcquireEnd(actx, nil, pgxpool.TraceAcquireEndData{Conn: conn})
				t.TraceRelease(nil, pgxpool.TraceReleaseData{Conn: conn})
			}
		})
	}
}
