package peerbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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

// cacheHits are one hit operation per library, both on the same Redis
// through one client, each with its value already stored. pgkitSameCodec is
// pgkit's hit with go-redis/cache's codec (msgpack, s2 above 64 bytes) as its
// cache.Codec: the two hit paths without the difference of codec.
type cacheHits struct {
	pgkit, pgkitSameCodec, goRedisCache func(context.Context) error
}

// goRedisCacheCodec is go-redis/cache's own encoding as a cache.Codec.
type goRedisCacheCodec struct{ c *gocache.Cache }

func (g goRedisCacheCodec) Marshal(v any) ([]byte, error)      { return g.c.Marshal(v) }
func (g goRedisCacheCodec) Unmarshal(data []byte, v any) error { return g.c.Unmarshal(data, v) }

// newCacheHits stores wantProfile in both caches, under keys of the
// benchmark's own that are deleted at cleanup, and returns their hit
// operations: pgkit's Cache.GetOrLoad over redisstore, and go-redis/cache's
// Once, its own get-or-load. Both share concurrent lookups of a key and
// decode the bytes; a load in either is an error.
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
	_, err = c.GetOrLoad(ctx, "4242", func(context.Context) (profile, error) { return wantProfile, nil })
	require.NoError(tb, err)

	gc := gocache.New(&gocache.Options{Redis: client}) // no local cache: every hit is a GET

	sameStore, err := redisstore.New(client, prefix+"pgkit-same-codec:")
	require.NoError(tb, err)
	same, err := cache.New[profile](sameStore, cache.Config{Name: "profiles_same_codec", TTL: time.Hour,
		StoreTimeout: 10 * time.Second, Codec: goRedisCacheCodec{gc}, Registerer: prometheus.NewRegistry()})
	require.NoError(tb, err)
	tb.Cleanup(same.Close)
	_, err = same.GetOrLoad(ctx, "4242", func(context.Context) (profile, error) { return wantProfile, nil })
	require.NoError(tb, err)
	gkey := prefix + "go-redis-cache:profiles:4242"
	require.NoError(tb, gc.Set(&gocache.Item{Ctx: ctx, Key: gkey, Value: wantProfile, TTL: time.Hour}))

	noLoad := func(context.Context) (profile, error) { return profile{}, errLoaded }
	return cacheHits{
		pgkit: func(ctx context.Context) error {
			p, err := c.GetOrLoad(ctx, "4242", noLoad)
			if err == nil && p != wantProfile {
				err = fmt.Errorf("pgkit hit returned %+v", p)
			}
			return err
		},
		pgkitSameCodec: func(ctx context.Context) error {
			p, err := same.GetOrLoad(ctx, "4242", noLoad)
			if err == nil && p != wantProfile {
				err = fmt.Errorf("pgkit hit (go-redis/cache's codec) returned %+v", p)
			}
			return err
		},
		goRedisCache: func(ctx context.Context) error {
			var p profile
			err := gc.Once(&gocache.Item{Ctx: ctx, Key: gkey, Value: &p, Do: func(*gocache.Item) (any, error) { return nil, errLoaded }})
			if err == nil && p != wantProfile {
				err = fmt.Errorf("go-redis/cache hit returned %+v", p)
			}
			return err
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
		require.NoError(t, hits.pgkitSameCodec(context.Background()))
		require.NoError(t, hits.goRedisCache(context.Background()))
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

// BenchmarkCacheRedisHitVsGoRedisCacheSameCodec is
// BenchmarkCacheRedisHitVsGoRedisCache with go-redis/cache's codec as
// pgkit's cache.Codec: what the two hit paths cost apart from the codec.
//
//	go test -run '^$' -bench BenchmarkCacheRedisHitVsGoRedisCacheSameCodec -benchtime 5000x -count 6
func BenchmarkCacheRedisHitVsGoRedisCacheSameCodec(b *testing.B) {
	hits := newCacheHits(b)
	benchab.AB(b, 1, "go-redis-cache", hits.goRedisCache, "pgkit", hits.pgkitSameCodec)
}
