package pgkit_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// benchPools opens, on one fresh database, a raw pgxpool and a pgkit DB of the
// same size, with pgkit's instrumentation on (metrics registered, slow log
// armed at its default; leak detection as cfg says).
func benchPools(b *testing.B, size int32, cfg pgkit.Config) (*pgxpool.Pool, *pgkit.DB) {
	b.Helper()
	url := pgtest.NewDatabase(b)
	raw, err := pgxpool.New(context.Background(), fmt.Sprintf("%s&pool_max_conns=%d&pool_min_conns=%d", url, size, size))
	require.NoError(b, err)
	b.Cleanup(raw.Close)
	cfg.URL, cfg.MaxConns, cfg.MinConns = url, size, size
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	db, err := pgkit.Open(context.Background(), cfg)
	require.NoError(b, err)
	b.Cleanup(db.Close)
	return raw, db
}

// benchAB runs b.N operations of each side, a and b, from goroutines
// goroutines, in alternating rounds (so that neither side always runs first
// or on a warmer machine), and reports each side's ns/op and allocs/op and
// the throughput ratio b/a: 1.0 means as fast, 0.97 means 3% slower. It
// returns each side's mean time per operation.
func benchAB(b *testing.B, goroutines int, nameA string, opA func(context.Context) error, nameB string, opB func(context.Context) error) (perOpA, perOpB time.Duration) {
	const rounds = 10
	var elapsed [2]time.Duration
	var allocs [2]uint64
	var ops [2]int64
	perRound := max(b.N/rounds, 1)
	sides := [2]func(context.Context) error{opA, opB}
	b.ResetTimer()
	for r := range rounds {
		for i := range 2 {
			s := (r + i) % 2
			d, a := runParallel(b, goroutines, perRound, sides[s])
			elapsed[s] += d
			allocs[s] += a
			ops[s] += int64(perRound)
		}
	}
	b.StopTimer()
	for s, name := range []string{nameA, nameB} {
		b.ReportMetric(float64(elapsed[s].Nanoseconds())/float64(ops[s]), name+"-ns/op")
		b.ReportMetric(float64(allocs[s])/float64(ops[s]), name+"-allocs/op")
	}
	b.ReportMetric(elapsed[0].Seconds()/elapsed[1].Seconds(), nameB+"/"+nameA)
	return elapsed[0] / time.Duration(ops[0]), elapsed[1] / time.Duration(ops[1])
}

// reportRows adds rows/s for both sides of a benchAB whose operations each
// write rows rows.
func reportRows(b *testing.B, rows int, nameA string, perOpA time.Duration, nameB string, perOpB time.Duration) {
	b.ReportMetric(float64(rows)/perOpA.Seconds(), nameA+"-rows/s")
	b.ReportMetric(float64(rows)/perOpB.Seconds(), nameB+"-rows/s")
}

// runParallel runs op n times from goroutines goroutines and returns the wall
// time and the heap allocations made meanwhile.
func runParallel(b *testing.B, goroutines, n int, op func(context.Context) error) (time.Duration, uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	ctx := context.Background()
	start := time.Now()
	for range goroutines {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := op(ctx); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	runtime.ReadMemStats(&after)
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	return d, after.Mallocs - before.Mallocs
}

// BenchmarkSelect1 is the instrumented query path against raw pgxpool:
// SELECT 1 from 64 goroutines on pools of 8 connections.
//
//	go test -run '^$' -bench BenchmarkSelect1 -benchtime 20000x
func BenchmarkSelect1(b *testing.B) {
	raw, db := benchPools(b, 8, pgkit.Config{})
	benchAB(b, 64,
		"raw", func(ctx context.Context) error { var n int; return raw.QueryRow(ctx, "SELECT 1").Scan(&n) },
		"pgkit", func(ctx context.Context) error { var n int; return db.QueryRow(ctx, "SELECT 1").Scan(&n) })
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
