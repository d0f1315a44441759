package pgkit_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/faultproxy"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// proxied returns a fresh database's URL through a fault proxy, and the proxy.
func proxied(t *testing.T) (string, *faultproxy.Proxy) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	hostPort := fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
	proxy, err := faultproxy.Start(hostPort)
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	return strings.Replace(url, hostPort, proxy.Addr(), 1), proxy
}

// TestExhaustion: 256 callers on 4 connections with a 100ms AcquireTimeout.
// Every caller runs or gets ErrAcquireTimeout, nothing deadlocks, the
// counter equals the timeouts returned, and the pool serves normally after.
func TestExhaustion(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{MaxConns: 4, MinConns: 4, AcquireTimeout: 100 * time.Millisecond, Registerer: reg})
	var ran, timedOut atomic.Int64
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			_, err := db.Exec(context.Background(), `SELECT pg_sleep(0.02)`)
			switch {
			case err == nil:
				ran.Add(1)
			case errors.Is(err, pgkit.ErrAcquireTimeout):
				timedOut.Add(1)
			default:
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(256), ran.Load()+timedOut.Load())
	require.Positive(t, ran.Load())
	require.Positive(t, timedOut.Load(), "256 × 20ms on 4 connections cannot all start within 100ms")
	require.Equal(t, float64(timedOut.Load()), testkit.Gather(t, reg).Value(t, "pgkit_pool_acquire_timeouts_total", nil))
	require.Equal(t, timedOut.Load(), db.PoolStats().AcquireTimeouts)
	for range 8 {
		_, err := db.Exec(context.Background(), `SELECT 1`)
		require.NoError(t, err)
	}
	require.Equal(t, int32(0), db.PoolStats().Acquired)
	require.LessOrEqual(t, db.PoolStats().Size, int32(4))
}

// TestCancellationStorm: 1,000 queries canceled at random points. The pool
// never holds more than MaxConns connections, and no cancellation reaches a
// later query.
func TestCancellationStorm(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 4, AcquireTimeout: pgkit.Disabled})
	var canceled, ok, maxSize atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range 1000 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(4000))*time.Microsecond)
			defer cancel()
			var n int
			err := db.QueryRow(ctx, `SELECT $1::int FROM pg_sleep(0.002)`, i).Scan(&n)
			if size := int64(db.Stat().TotalConns()); size > maxSize.Load() {
				maxSize.Store(size)
			}
			switch {
			case err == nil:
				require.Equal(t, i, n)
				ok.Add(1)
			case errors.Is(err, context.DeadlineExceeded):
				canceled.Add(1)
			default:
				require.NoError(t, err, "only the caller's own deadline may end a query")
			}
		})
	}
	wg.Wait()
	require.Positive(t, canceled.Load())
	require.LessOrEqual(t, maxSize.Load(), int64(4))
	// No stale cancellation: every later query succeeds.
	for i := range 200 {
		var n int
		require.NoError(t, db.QueryRow(context.Background(), `SELECT $1::int`, i).Scan(&n))
		require.Equal(t, i, n)
	}
	require.Eventually(t, func() bool { return db.Stat().AcquiredConns() == 0 }, 5*time.Second, 10*time.Millisecond)
	t.Logf("%d canceled, %d completed", canceled.Load(), ok.Load())
}

// TestLatencyInjection: 1s ± 100ms added by the proxy for some queries only.
// The slow-query log and the histogram see exactly those. The margins are
// wide (a 500ms threshold) so that a busy machine's stall of a fast query
// is not taken for the injected latency.
func TestLatencyInjection(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	reg := prometheus.NewPedanticRegistry()
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2, Registerer: reg, Logger: slog.New(logs), SlowQueryThreshold: 500 * time.Millisecond})
	ctx := context.Background()
	run := func(name string, n int) {
		for range n {
			_, err := db.Exec(pgkit.WithQueryName(ctx, name), `SELECT 1`)
			require.NoError(t, err)
		}
	}
	run("fast", 10)
	proxy.SetLatency(time.Second, 100*time.Millisecond)
	run("delayed", 3)
	proxy.SetLatency(0, 0)
	run("fast", 10)

	slow := db.SlowQueries()
	require.Len(t, slow, 3)
	for _, q := range slow {
		require.Equal(t, "delayed", q.Name)
		require.GreaterOrEqual(t, q.Duration, 900*time.Millisecond)
	}
	g := testkit.Gather(t, reg)
	require.Equal(t, 3.0, g.Value(t, "pgkit_slow_queries_total", map[string]string{"name": "delayed"}))
	require.Nil(t, g.Find("pgkit_slow_queries_total", map[string]string{"name": "fast"}))
	delayed := g.Find("pgkit_query_duration_seconds", map[string]string{"name": "delayed", "op": "query"}).GetHistogram()
	fast := g.Find("pgkit_query_duration_seconds", map[string]string{"name": "fast", "op": "query"}).GetHistogram()
	require.Equal(t, uint64(3), delayed.GetSampleCount())
	require.Equal(t, uint64(20), fast.GetSampleCount())
	for _, b := range delayed.GetBucket() {
		if b.GetUpperBound() <= 0.5 {
			require.Zero(t, b.GetCumulativeCount(), "no delayed query under 500ms")
		}
	}
	for _, b := range fast.GetBucket() {
		if b.GetUpperBound() >= 0.5 {
			require.Equal(t, uint64(20), b.GetCumulativeCount(), "every fast query under 500ms")
		}
	}
}

// TestSilentPartition: the proxy stops forwarding but keeps connections
// open. Every call returns within its deadline plus a margin, Health says
// down within its timeout, and the pool recovers when forwarding resumes.
func TestSilentPartition(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2, MinConns: 2, AcquireTimeout: 200 * time.Millisecond,
		ConnectTimeout: 300 * time.Millisecond, HealthTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	_, err := db.Exec(ctx, `SELECT 1`)
	require.NoError(t, err)

	proxy.Pause()
	const margin = 400 * time.Millisecond
	for range 3 {
		qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		start := time.Now()
		_, err := db.Exec(qctx, `SELECT 1`)
		cancel()
		require.Error(t, err)
		require.Less(t, time.Since(start), 300*time.Millisecond+margin, "a call hung past its deadline")
	}
	start := time.Now()
	r := db.Health(ctx)
	require.Less(t, time.Since(start), 300*time.Millisecond+margin)
	require.Equal(t, pgkit.StatusDown, r.Status, r.Reason)

	proxy.Resume()
	require.Eventually(t, func() bool {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := db.Exec(qctx, `SELECT 1`)
		return err == nil && db.Health(ctx).Status == pgkit.StatusUp
	}, 15*time.Second, 50*time.Millisecond, "the pool recovers without a restart")
}

// TestRestartUnderLoad: 32 goroutines query while the server is stopped and
// started. Errors happen only during the outage (requests in flight when it
// stops count as in it); from 5s after the server is back, every request
// succeeds; nothing leaks.
func TestRestartUnderLoad(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t)
	db := openTest(t, pgkit.Config{URL: cluster.NewDatabase(t), MaxConns: 4, AcquireTimeout: time.Second, ConnectTimeout: time.Second})
	ctx := context.Background()

	type result struct {
		start, end time.Time
		err        error
	}
	var mu sync.Mutex
	var results []result
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := db.Exec(qctx, `SELECT 1`)
				cancel()
				mu.Lock()
				results = append(results, result{start, time.Now(), err})
				mu.Unlock()
			}
		})
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(results) > 500 }, 10*time.Second, 5*time.Millisecond)
	down := time.Now()
	require.NoError(t, cluster.Stop(ctx))
	require.NoError(t, cluster.Start(ctx))
	up := time.Now()
	require.Eventually(t, func() bool { return time.Since(up) > 6*time.Second }, 10*time.Second, 50*time.Millisecond)
	close(stop)
	wg.Wait()

	var before, during, after, afterErrs int
	for _, r := range results {
		switch {
		case r.end.Before(down):
			before++
			require.NoError(t, r.err, "before the outage")
		case r.start.After(up.Add(5 * time.Second)):
			after++
			require.NoError(t, r.err, "5s after the server is back")
		default:
			during++
			if r.err != nil {
				afterErrs++
			}
		}
	}
	require.Positive(t, after)
	s := db.PoolStats()
	require.Equal(t, s.Size, s.Acquired+s.Idle+s.Constructing, "pool stats add up")
	require.LessOrEqual(t, s.Size, int32(4))
	t.Logf("%d before, %d during (%d failed), %d after", before, during, afterErrs, after)
}
