package pgkit_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// loadQueries is a service's pool load test: this many concurrent
// SELECT COUNT(*) FROM users over loadUsers users.
const (
	loadQueries = 1000
	loadUsers   = 10_000
)

// BenchmarkPoolSize is the sweep behind DefaultMaxConns and README's "Pool
// sizing" table. Each iteration runs the load once through pgkit and
// once through a raw pgxpool of the same size, alternately, on a server of the
// benchmark's own (max_connections=400, so 150 + 150 fit). It reports
// queries/s and the p99 wait for a connection for each, and their ratio.
//
//	go test -run '^$' -bench BenchmarkPoolSize -benchtime 10x
func BenchmarkPoolSize(b *testing.B) {
	cluster := pgtest.StartCluster(b, pgtest.WithSetting("max_connections", "400"))
	url := cluster.NewDatabase(b)
	fillUsersTable(b, url)

	for _, size := range []int32{4, 8, 16, 32, 50, 150} {
		b.Run(fmt.Sprintf("MaxConns=%d", size), func(b *testing.B) {
			// 150 + 150 backends starting at once on 2 cores take longer than
			// the default ConnectTimeout, and the sweep measures pool sizes,
			// not outages: a long connect timeout, no connect backoff.
			raw, db := benchPoolsOn(b, url+"&connect_timeout=60", size,
				pgkit.Config{AcquireTimeout: time.Minute, ConnectTimeout: time.Minute, ConnectBackoff: pgkit.Disabled})

			// One unmeasured round each fills the pools.
			loadRound(b, db.Acquire)
			loadRound(b, raw.Acquire)

			var kit, rawRes roundResult
			b.ResetTimer()
			for i := range b.N {
				// Alternate which side goes first, so neither always follows the other.
				if i%2 == 0 {
					kit.add(loadRound(b, db.Acquire))
					rawRes.add(loadRound(b, raw.Acquire))
				} else {
					rawRes.add(loadRound(b, raw.Acquire))
					kit.add(loadRound(b, db.Acquire))
				}
			}
			b.StopTimer()
			b.ReportMetric(kit.qps(), "pgkit-q/s")
			b.ReportMetric(rawRes.qps(), "raw-q/s")
			b.ReportMetric(kit.qps()/rawRes.qps(), "pgkit/raw")
			b.ReportMetric(p99(kit.waits).Seconds()*1000, "pgkit-p99-wait-ms")
			b.ReportMetric(p99(rawRes.waits).Seconds()*1000, "raw-p99-wait-ms")
			b.ReportMetric(p99(kit.totals).Seconds()*1000, "pgkit-p99-total-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// roundResult gathers rounds of the load.
type roundResult struct {
	queries int
	elapsed time.Duration
	waits   []time.Duration // acquire
	totals  []time.Duration // acquire + query
}

func (r *roundResult) add(o roundResult) {
	r.queries += o.queries
	r.elapsed += o.elapsed
	r.waits = append(r.waits, o.waits...)
	r.totals = append(r.totals, o.totals...)
}

func (r *roundResult) qps() float64 { return float64(r.queries) / r.elapsed.Seconds() }

func p99(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)*99/100]
}

// loadRound runs loadQueries concurrent counts, each on a connection from
// acquire, and measures the wait for each connection.
func loadRound(b *testing.B, acquire func(context.Context) (*pgxpool.Conn, error)) roundResult {
	ctx := context.Background()
	res := roundResult{queries: loadQueries, waits: make([]time.Duration, loadQueries), totals: make([]time.Duration, loadQueries)}
	errs := make(chan error, loadQueries)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range loadQueries {
		wg.Go(func() {
			t0 := time.Now()
			conn, err := acquire(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Release()
			res.waits[i] = time.Since(t0)
			var n int
			if err := conn.QueryRow(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil || n != loadUsers {
				errs <- fmt.Errorf("count %d: %w", n, err)
			}
			res.totals[i] = time.Since(t0)
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return res
}

// fillUsersTable fills users with loadUsers rows of one tenant.
func fillUsersTable(tb testing.TB, url string) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(tb, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('load', 'Load')`)
	require.NoError(tb, err)
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"tenant_id", "email"},
		pgx.CopyFromSlice(loadUsers, func(i int) ([]any, error) { return []any{"load", fmt.Sprintf("u%d@load.test", i)}, nil }))
	require.NoError(tb, err)
	_, err = conn.Exec(ctx, `ANALYZE users`)
	require.NoError(tb, err)
}
