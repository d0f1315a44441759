package pgkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// The cache benchmarks compare a cache hit with what it replaces, side by
// side in one run, as benchAB does; the sides differ by three orders of
// magnitude, so the fast side runs scale times as many operations per round
// as the slow one, to be measured for as long.
//
//	go test -run '^$' -bench 'BenchmarkCache' -benchtime 2000x -count 3 .

// dashboardBench is the benchmark setting: the test schema filled to 10,000
// users, 1,000 conversations, 10,000 messages and 10,000 usage records, a
// pgkit DB on it, and the dashboard query.
type dashboardBench struct {
	db   *pgkit.DB
	want dashboardStats
}

func newDashboardBench(b *testing.B) *dashboardBench {
	b.Helper()
	db := openBenchDB(b)
	seedDashboard(b, db, "acme", 10_000, 1_000, 10)
	want, err := queryDashboard(context.Background(), db, "acme")
	require.NoError(b, err)
	require.Equal(b, [3]int64{10_000, 1_000, 10_000}, [3]int64{want.Users, want.Conversations, want.Messages})
	return &dashboardBench{db: db, want: want}
}

func openBenchDB(b *testing.B) *pgkit.DB {
	b.Helper()
	db, err := pgkit.Open(context.Background(), pgkit.Config{
		URL: pgtest.NewDatabase(b), MaxConns: 4, Registerer: prometheus.NewRegistry(),
	})
	require.NoError(b, err)
	b.Cleanup(db.Close)
	return db
}

func (d *dashboardBench) query(ctx context.Context) error {
	s, err := queryDashboard(ctx, d.db, "acme")
	if err == nil && s != d.want {
		err = fmt.Errorf("query returned %+v", s)
	}
	return err
}

// hitOp returns a GetOrLoad of acme's stats on cache, warmed so every call
// is a hit; a load afterwards is an error.
func (d *dashboardBench) hitOp(b *testing.B, cache *pgkit.Cache[dashboardStats]) func(context.Context) error {
	b.Helper()
	acme := cache.Tenant("acme")
	_, err := acme.GetOrLoad(context.Background(), "dashboard_stats", func(ctx context.Context) (dashboardStats, error) {
		return queryDashboard(ctx, d.db, "acme")
	})
	require.NoError(b, err)
	errLoaded := errors.New("a benchmark hit loaded")
	noLoad := func(context.Context) (dashboardStats, error) { return dashboardStats{}, errLoaded }
	return func(ctx context.Context) error {
		s, err := acme.GetOrLoad(ctx, "dashboard_stats", noLoad)
		if err == nil && s != d.want {
			err = fmt.Errorf("hit returned %+v", s)
		}
		return err
	}
}

// BenchmarkCacheMemoryHitVsPostgres: a hit of the in-memory cache against
// the PostgreSQL query it replaces, one goroutine. Target: ≥ 1,000× faster.
func BenchmarkCacheMemoryHitVsPostgres(b *testing.B) {
	d := newDashboardBench(b)
	cache := newCache[dashboardStats](b, newMemoryStore(b, pgkit.MemoryStoreConfig{}),
		pgkit.CacheConfig{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	benchScaled(b, 1, "postgres", d.query, "memory-hit", 1000, d.hitOp(b, cache))
}

// BenchmarkCacheRedisHitVsPostgres: a hit of the Redis cache against the
// PostgreSQL query, one goroutine. Target: ≥ 10× faster.
func BenchmarkCacheRedisHitVsPostgres(b *testing.B) {
	d := newDashboardBench(b)
	store, _ := newRedisStore(b)
	cache := newCache[dashboardStats](b, store, pgkit.CacheConfig{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	benchScaled(b, 1, "postgres", d.query, "redis-hit", 20, d.hitOp(b, cache))
}

// BenchmarkCacheRedisHitVsRawGET: a hit of the Redis cache through pgkit
// against go-redis GETs of the same bytes on the same client, one
// goroutine: "raw-GET" alone, and "raw-GET+json" with the decoding the hit
// also does. Target: pgkit ≤ 1.2× the raw GET's time.
func BenchmarkCacheRedisHitVsRawGET(b *testing.B) {
	d := newDashboardBench(b)
	store, client := newRedisStore(b)
	cache := newCache[dashboardStats](b, store, pgkit.CacheConfig{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	hit := d.hitOp(b, cache)
	key := store.Prefix() + "dashboard:" + pgkit.Key("acme", "dashboard_stats")
	rawGET := func(ctx context.Context) error {
		v, err := client.Get(ctx, key).Bytes()
		if err == nil && len(v) < 10 {
			err = fmt.Errorf("GET returned %q", v)
		}
		return err
	}
	rawGETJSON := func(ctx context.Context) error {
		v, err := client.Get(ctx, key).Bytes()
		if err != nil {
			return err
		}
		var s dashboardStats
		if err := json.Unmarshal(v[1:], &s); err != nil || s != d.want {
			return fmt.Errorf("decoded %+v: %w", s, err)
		}
		return nil
	}
	b.Run("raw-GET", func(b *testing.B) { benchScaled(b, 1, "raw", rawGET, "pgkit", 1, hit) })
	b.Run("raw-GET+json", func(b *testing.B) { benchScaled(b, 1, "raw", rawGETJSON, "pgkit", 1, hit) })
}

// BenchmarkCacheMemoryHitParallel: in-memory hits from 64 goroutines,
// through pgkit's Cache against the floor under it: the same store's Get
// and json.Unmarshal of the bytes, with nothing else.
func BenchmarkCacheMemoryHitParallel(b *testing.B) {
	d := newDashboardBench(b)
	store := newMemoryStore(b, pgkit.MemoryStoreConfig{})
	cache := newCache[dashboardStats](b, store, pgkit.CacheConfig{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	hit := d.hitOp(b, cache)
	key := "dashboard:" + pgkit.Key("acme", "dashboard_stats")
	floor := func(ctx context.Context) error {
		v, err := store.Get(ctx, key)
		if err != nil {
			return err
		}
		var s dashboardStats
		return json.Unmarshal(v[1:], &s)
	}
	benchScaled(b, 64, "store+json", floor, "cache", 1, hit)
}

// benchScaled runs, in alternating rounds, b.N operations of side a and
// b.N × scale of side b, each from goroutines goroutines, and reports each
// side's ns/op, ops/s and allocs/op, and how many times faster b is than a
// (a's time per op over b's).
func benchScaled(b *testing.B, goroutines int, nameA string, opA func(context.Context) error, nameB string, scale int, opB func(context.Context) error) {
	const rounds = 10
	var elapsed [2]time.Duration
	var allocs [2]uint64
	var ops [2]int64
	perRound := [2]int{max(b.N/rounds, 1), max(b.N/rounds, 1) * scale}
	sides := [2]func(context.Context) error{opA, opB}
	b.ResetTimer()
	for r := range rounds {
		for i := range 2 {
			s := (r + i) % 2
			d, a := runParallel(b, goroutines, perRound[s], sides[s])
			elapsed[s] += d
			allocs[s] += a
			ops[s] += int64(perRound[s])
		}
	}
	b.StopTimer()
	var perOp [2]float64
	for s, name := range []string{nameA, nameB} {
		perOp[s] = float64(elapsed[s].Nanoseconds()) / float64(ops[s])
		b.ReportMetric(perOp[s], name+"-ns/op")
		b.ReportMetric(1e9/perOp[s], name+"-ops/s")
		b.ReportMetric(float64(allocs[s])/float64(ops[s]), name+"-allocs/op")
	}
	b.ReportMetric(perOp[0]/perOp[1], nameB+"-speedup")
}
