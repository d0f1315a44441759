package peerbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/pgkit-dev/pgkit/cache/redisstore"
	"github.com/pgkit-dev/pgkit/internal/benchab"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// profile is the cached value: a small struct, about 200 bytes of JSON.
type profile struct {
	ID        int64  `json:"id"`
	TenantID  string `json:"tenant_id"`
	Email     string `json:"email"`
	Name      string `json:"name"`
	Plan      string `json:"plan"`
	Locale    string `json:"locale"`
	Timezone  string `json:"timezone"`
	Tokens    int64  `json:"tokens"`
	Messages  int64  `json:"messages"`
	CreatedAt int64  `json:"created_at"`
}

var wantProfile = profile{
	ID: 4242, TenantID: "acme", Email: "ann.example@acme.example.com", Name: "Ann Example",
	Plan: "enterprise-annual", Locale: "en-GB", Timezone: "Europe/London",
	Tokens: 1_234_567, Messages: 8_910, CreatedAt: 1_767_225_600,
}

// manyKeys is how many keys the ManyKeys hits take in turn: more than a
// cache remembers decoded values of, so that every pgkit hit decodes, as a
// hit on one of many cold keys does.
const manyKeys = 1000

// cacheHits are hit operations of each library, all on the same Redis
// through one client, each with its values already stored: one hot key
// (pgkit, goRedisCache), and manyKeys keys with a different value each,
// taken in turn (pgkitManyKeys, goRedisCacheManyKeys).
type cacheHits struct {
	pgkit, goRedisCache                 func(context.Context) error
	pgkitManyKeys, goRedisCacheManyKeys func(context.Context) error
}

// profileOf is the value stored under key i of the ManyKeys hits.
func profileOf(i int) profile {
	p := wantProfile
	p.ID = int64(i)
	return p
}

// newCacheHits stores the values in both caches, under keys of the
// benchmark's own that are deleted at cleanup, and returns their hit
// operations: pgkit's Cache.GetOrLoad over redisstore, and go-redis/cache's
// Once, its own get-or-load. Both share concurrent lookups of a key and
// decode the bytes (pgkit copies the value it decoded last from the same
// bytes); a load in either is an error.
func newCacheHits(tb testing.TB) cacheHits {
	tb.Helper()
	opts, err := redis.ParseURL(pgtest.RedisURL(tb))
	require.NoError(tb, err)
	opts.ContextTimeoutEnabled = true
	client := redis.NewClient(opts)
	prefix := fmt.Sprintf("pgkit-peerbench:%x:", rand.Uint64())
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if keys, err := client.Keys(ctx, prefix+"*").Result(); err == nil && len(keys) > 0 {
			_ = client.Del(ctx, keys...).Err()
		}
		_ = client.Close()
	})
	ctx := context.Background()
	errLoaded := errors.New("a benchmark hit loaded")

	store, err := redisstore.New(client, prefix+"pgkit:")
	require.NoError(tb, err)
	// StoreTimeout as the root benchmarks set it: long enough that a busy
	// machine makes no miss; the per-call timeout context is still paid.
	c, err := cache.New[profile](store, cache.Config{Name: "profiles", TTL: time.Hour,
		StoreTimeout: 10 * time.Second, Registerer: prometheus.NewRegistry()})
	require.NoError(tb, err)
	tb.Cleanup(c.Close)
	gc := gocache.New(&gocache.Options{Redis: client}) // no local cache: every hit is a GET
	gkey := func(k string) string { return prefix + "go-redis-cache:profiles:" + k }
	set := func(k string, p profile) {
		_, err := c.GetOrLoad(ctx, k, func(context.Context) (profile, error) { return p, nil })
		require.NoError(tb, err)
		require.NoError(tb, gc.Set(&gocache.Item{Ctx: ctx, Key: gkey(k), Value: p, TTL: time.Hour}))
	}
	set("4242", wantProfile)
	keys := make([]string, manyKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("many:%d", i)
		set(keys[i], profileOf(i))
	}

	noLoad := func(context.Context) (profile, error) { return profile{}, errLoaded }
	pgkitHit := func(ctx context.Context, k string, want profile) error {
		p, err := c.GetOrLoad(ctx, k, noLoad)
		if err == nil && p != want {
			err = fmt.Errorf("pgkit hit of %q returned %+v", k, p)
		}
		return err
	}
	goRedisCacheHit := func(ctx context.Context, k string, want profile) error {
		var p profile
		err := gc.Once(&gocache.Item{Ctx: ctx, Key: gkey(k), Value: &p, Do: func(*gocache.Item) (any, error) { return nil, errLoaded }})
		if err == nil && p != want {
			err = fmt.Errorf("go-redis/cache hit of %q returned %+v", k, p)
		}
		return err
	}
	// Each side takes the keys in turn from its own counter.
	var nextPgkit, nextGoRedisCache atomic.Uint64
	return cacheHits{
		pgkit:        func(ctx context.Context) error { return pgkitHit(ctx, "4242", wantProfile) },
		goRedisCache: func(ctx context.Context) error { return goRedisCacheHit(ctx, "4242", wantProfile) },
		pgkitManyKeys: func(ctx context.Context) error {
			i := int(nextPgkit.Add(1) % manyKeys)
			return pgkitHit(ctx, keys[i], profileOf(i))
		},
		goRedisCacheManyKeys: func(ctx context.Context) error {
			i := int(nextGoRedisCache.Add(1) % manyKeys)
			return goRedisCacheHit(ctx, keys[i], profileOf(i))
		},
	}
}

// TestCacheHitsReturnTheValue checks what the benchmark compares: both
// sides hit and return the stored value, which is about 200 bytes of JSON.
func TestCacheHitsReturnTheValue(t *testing.T) {
	b, err := json.Marshal(wantProfile)
	require.NoError(t, err)
	require.InDelta(t, 200, len(b), 40)
	hits := newCacheHits(t)
	for range 3 {
		require.NoError(t, hits.pgkit(context.Background()))
		require.NoError(t, hits.goRedisCache(context.Background()))
	}
	for range 2 * manyKeys {
		require.NoError(t, hits.pgkitManyKeys(context.Background()))
		require.NoError(t, hits.goRedisCacheManyKeys(context.Background()))
	}
}

// BenchmarkCacheRedisHitVsGoRedisCache: a Redis hit through pgkit's cache
// (GetOrLoad over redisstore, JSON) against go-redis/cache's Once (msgpack,
// s2 above 64 bytes) on the same client and Redis, one goroutine, in
// alternating rounds. It reports "pgkit/go-redis-cache": above 1, pgkit's
// hit is faster.
//
//	go test -run '^$' -bench BenchmarkCacheRedisHitVsGoRedisCache -benchtime 5000x -count 6
func BenchmarkCacheRedisHitVsGoRedisCache(b *testing.B) {
	hits := newCacheHits(b)
	benchab.AB(b, 1, "go-redis-cache", hits.goRedisCache, "pgkit", hits.pgkit)
}

// BenchmarkCacheRedisHitVsGoRedisCacheManyKeys is
// BenchmarkCacheRedisHitVsGoRedisCache on 1,000 keys with a value each,
// taken in turn: every hit decodes on both sides (pgkit remembers fewer
// decoded values than that), as a hit on one of many cold keys does.
//
//	go test -run '^$' -bench BenchmarkCacheRedisHitVsGoRedisCacheManyKeys -benchtime 5000x -count 6
func BenchmarkCacheRedisHitVsGoRedisCacheManyKeys(b *testing.B) {
	hits := newCacheHits(b)
	benchab.AB(b, 1, "go-redis-cache", hits.goRedisCacheManyKeys, "pgkit", hits.pgkitManyKeys)
}
