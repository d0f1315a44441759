package cache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/pgkit-dev/pgkit/internal/benchab"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// The cache benchmarks compare a cache hit with what it replaces, side by
// side in one run, through benchab.Scaled (internal/benchab): the sides
// differ by three orders of magnitude, so the fast side runs scale times as
// many operations per round as the slow one, to be measured for as long.
//
//	go test -run '^$' -bench 'BenchmarkCache' -benchtime 2000x -count 3 ./cache

// dashboardBench is the benchmark setting: the test schema filled to 10,000
// users, 1,000 conversations, 10,000 messages and 10,000 usage records, a
// pgkit DB on it, and the dashboard query.
type dashboardBench struct {
	db   *pgkit.DB
	want dashboardStats
}

// benchDB opens a pgkit DB of size connections, all opened from the start,
// on a fresh database, with metrics registered (as the root package's
// benchmarks open theirs), closed when the benchmark ends.
func benchDB(b *testing.B, size int32) *pgkit.DB {
	b.Helper()
	db, err := pgkit.Open(context.Background(), pgkit.Config{URL: pgtest.NewDatabase(b),
		MaxConns: size, MinConns: size, Registerer: prometheus.NewRegistry()})
	require.NoError(b, err)
	b.Cleanup(db.Close)
	return db
}

func newDashboardBench(b *testing.B) *dashboardBench {
	b.Helper()
	db := benchDB(b, 4)
	fillDashboard(b, db, "acme", 10_000, 1_000, 10)
	want, err := queryDashboard(context.Background(), db, "acme")
	require.NoError(b, err)
	require.Equal(b, [3]int64{10_000, 1_000, 10_000}, [3]int64{want.Users, want.Conversations, want.Messages})
	return &dashboardBench{db: db, want: want}
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
func (d *dashboardBench) hitOp(b *testing.B, c *cache.Cache[dashboardStats]) func(context.Context) error {
	b.Helper()
	acme := c.Tenant("acme")
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
	c := newCache[dashboardStats](b, newMemoryStore(b, cache.MemoryStoreConfig{}),
		cache.Config{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	benchab.Scaled(b, 1, "postgres", d.query, "memory-hit", 1000, d.hitOp(b, c))
}

// BenchmarkCacheRedisHitVsPostgres: a hit of the Redis cache against the
// PostgreSQL query, one goroutine. Target: ≥ 10× faster.
func BenchmarkCacheRedisHitVsPostgres(b *testing.B) {
	d := newDashboardBench(b)
	store, _ := newRedisStore(b)
	c := newCache[dashboardStats](b, store, cache.Config{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	benchab.Scaled(b, 1, "postgres", d.query, "redis-hit", 20, d.hitOp(b, c))
}

// BenchmarkCacheRedisHitVsRawGET: a hit of the Redis cache through pgkit
// against go-redis GETs of the same bytes on the same client, one
// goroutine: "raw-GET" alone, and "raw-GET+json" with the decoding the hit
// also does. Target: pgkit ≤ 1.2× the raw GET's time.
func BenchmarkCacheRedisHitVsRawGET(b *testing.B) {
	d := newDashboardBench(b)
	store, client := newRedisStore(b)
	c := newCache[dashboardStats](b, store, cache.Config{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	hit := d.hitOp(b, c)
	key := store.Prefix() + "dashboard:" + cache.Key("acme", "dashboard_stats")
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
	b.Run("raw-GET", func(b *testing.B) { benchab.Scaled(b, 1, "raw", rawGET, "pgkit", 1, hit) })
	b.Run("raw-GET+json", func(b *testing.B) { benchab.Scaled(b, 1, "raw", rawGETJSON, "pgkit", 1, hit) })
}

// BenchmarkCacheMemoryHitParallel: in-memory hits from 64 goroutines,
// through pgkit's Cache against the floor under it: the same store's Get
// and json.Unmarshal of the bytes, with nothing else.
func BenchmarkCacheMemoryHitParallel(b *testing.B) {
	d := newDashboardBench(b)
	store := newMemoryStore(b, cache.MemoryStoreConfig{})
	c := newCache[dashboardStats](b, store, cache.Config{Name: "dashboard", Registerer: prometheus.NewRegistry()})
	hit := d.hitOp(b, c)
	key := "dashboard:" + cache.Key("acme", "dashboard_stats")
	floor := func(ctx context.Context) error {
		v, err := store.Get(ctx, key)
		if err != nil {
			return err
		}
		var s dashboardStats
		return json.Unmarshal(v[1:], &s)
	}
	benchab.Scaled(b, 64, "store+json", floor, "cache", 1, hit)
}
