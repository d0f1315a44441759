package cache_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// TestCacheDashboardStats is a per-tenant dashboard cached: the first
// call loads from PostgreSQL, the second is a hit, and both equal a direct
// query, for each tenant, on both stores.
func TestCacheDashboardStats(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	fillDashboard(t, db, "acme", 40, 8, 5)
	fillDashboard(t, db, "globex", 25, 3, 7)
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			reg := prometheus.NewPedanticRegistry()
			c := newCache[dashboardStats](t, kind.new(t), cache.Config{Name: "dashboard", Registerer: reg})
			var loads atomic.Int64
			get := func(tenant string) dashboardStats {
				s, err := c.Tenant(tenant).GetOrLoad(ctx, "dashboard_stats", func(ctx context.Context) (dashboardStats, error) {
					loads.Add(1)
					return queryDashboard(ctx, db, tenant)
				})
				require.NoError(t, err)
				return s
			}
			for i, tenant := range []string{"acme", "globex"} {
				want, err := queryDashboard(ctx, db, tenant)
				require.NoError(t, err)
				require.NotZero(t, want.TokensUsed)

				require.Equal(t, want, get(tenant), "first call: loaded from PostgreSQL")
				require.Equal(t, int64(i+1), loads.Load())
				require.Equal(t, want, get(tenant), "second call: a hit")
				require.Equal(t, int64(i+1), loads.Load(), "a hit does not load")
			}
			a := get("acme")
			require.Equal(t, [3]int64{40, 8, 40}, [3]int64{a.Users, a.Conversations, a.Messages}, "what fillDashboard made")

			s := c.Stats()
			require.Equal(t, cache.Stats{Hits: 3, Misses: 2, Loads: 2, HitRatio: 3.0 / 5}, s)
			g := testkit.Gather(t, reg)
			labels := func(result string) map[string]string {
				return map[string]string{"cache": "dashboard", "result": result}
			}
			require.Equal(t, 3.0, g.Value(t, "pgkit_cache_requests_total", labels("hit")))
			require.Equal(t, 2.0, g.Value(t, "pgkit_cache_requests_total", labels("miss")))
			require.Equal(t, 0.0, g.Value(t, "pgkit_cache_requests_total", labels("error")))
			require.Equal(t, 2.0, g.Value(t, "pgkit_cache_load_duration_seconds", map[string]string{"cache": "dashboard"}))
			require.Equal(t, 0.0, g.Value(t, "pgkit_cache_store_errors_total", map[string]string{"cache": "dashboard"}))
		})
	}
}

// TestCacheStoreKeyLayout pins where a value lands in Redis: the store's
// prefix, the cache's Name, then the cache key, which starts with its tenant.
func TestCacheStoreKeyLayout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, client := newRedisStore(t)
	c := newCache[dashboardStats](t, store, cache.Config{Name: "dash:board"})
	want := dashboardStats{Users: 3}
	_, err := c.Tenant("acme").GetOrLoad(ctx, "dashboard_stats", func(context.Context) (dashboardStats, error) { return want, nil })
	require.NoError(t, err)
	raw, err := client.Get(ctx, store.Prefix()+`dash\:board:acme:dashboard_stats`).Result()
	require.NoError(t, err)
	require.Equal(t, `v{"users":3,"conversations":0,"messages":0,"tokens_used":0,"cost_cents":0}`, raw,
		"a kind byte, then the codec's bytes")
}

// TestCacheStampede: 1,000 callers ask for one cold key at once; load runs
// once and every caller gets its value.
func TestCacheStampede(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			const callers = 1000
			c := newCache[dashboardStats](t, kind.new(t), cache.Config{
				Name: "stampede",
				// The callers share one GET, but on a loaded machine under
				// -race that GET (a new connection's first) can take over the
				// default 50ms, and counts as an error, not the miss this test
				// waits for. TestCacheStampedeRedisDefaults runs the default.
				StoreTimeout: 30 * time.Second,
			})
			release := make(chan struct{})
			var loads atomic.Int64
			load := func(ctx context.Context) (dashboardStats, error) {
				loads.Add(1)
				select {
				case <-release:
					return dashboardStats{Users: 1000, Messages: 7}, nil
				case <-ctx.Done():
					return dashboardStats{}, ctx.Err()
				}
			}
			var wg sync.WaitGroup
			results := make(chan dashboardStats, callers)
			errs := make(chan error, callers)
			for range callers {
				wg.Go(func() {
					v, err := c.GetOrLoad(context.Background(), cache.Key("acme", "dashboard_stats"), load)
					if err != nil {
						errs <- err
						return
					}
					results <- v
				})
			}
			// Every caller has missed (and so waits for, or is about to join,
			// the one load, which is blocked until release): let it finish. A
			// caller that reaches the flight after it ended finds the value
			// in the store, which the flight wrote before ending.
			require.Eventually(t, func() bool { return c.Stats().Misses == callers }, 60*time.Second, time.Millisecond)
			close(release)
			wg.Wait()
			close(results)
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			n := 0
			for v := range results {
				require.Equal(t, dashboardStats{Users: 1000, Messages: 7}, v)
				n++
			}
			require.Equal(t, callers, n)
			require.Equal(t, int64(1), loads.Load(), "load ran once for 1,000 callers")
			s := c.Stats()
			require.Equal(t, uint64(1), s.Loads)
			require.Equal(t, uint64(callers), s.Misses)
			require.Zero(t, s.Errors)
		})
	}
}

// TestCacheTTLExpiry: an entry expires after its TTL, on both stores.
func TestCacheTTLExpiry(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := newCache[int](t, kind.new(t), cache.Config{Name: "ttl", TTL: 100 * time.Millisecond, TTLJitter: pgkit.Disabled})
			var loads atomic.Int64
			load := func(context.Context) (int, error) { return int(loads.Add(1)), nil }
			v, err := c.GetOrLoad(ctx, "k", load)
			require.NoError(t, err)
			require.Equal(t, 1, v)
			require.Eventually(t, func() bool {
				v, err := c.GetOrLoad(ctx, "k", load)
				return err == nil && v == 2
			}, 10*time.Second, 5*time.Millisecond, "the entry never expired")
			require.Equal(t, int64(2), loads.Load(), "loaded again once, after expiry")
		})
	}
}

// TestCacheTTLJitter checks the TTLs Redis actually holds: each in [TTL,
// TTL+TTLJitter], and spread across that range.
func TestCacheTTLJitter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, client := newRedisStore(t)
	const ttl, jitter, keys = 10 * time.Minute, 2 * time.Minute, 200
	c := newCache[int](t, store, cache.Config{Name: "jitter", TTL: ttl, TTLJitter: jitter})
	start := time.Now()
	for i := range keys {
		_, err := c.GetOrLoad(ctx, fmt.Sprint(i), func(context.Context) (int, error) { return i, nil })
		require.NoError(t, err)
	}
	var lowest, highest time.Duration
	for i := range keys {
		pttl, err := client.PTTL(ctx, store.Prefix()+"jitter:"+fmt.Sprint(i)).Result()
		require.NoError(t, err)
		elapsed := time.Since(start) + time.Millisecond // PTTL counts whole milliseconds
		require.GreaterOrEqual(t, pttl, ttl-elapsed, "key %d", i)
		require.LessOrEqual(t, pttl, ttl+jitter, "key %d", i)
		if i == 0 || pttl < lowest {
			lowest = pttl
		}
		highest = max(highest, pttl)
	}
	// 200 draws from a uniform 2-minute range: their spread is under one
	// minute with probability about 200 × 2^-199.
	require.Greater(t, highest-lowest, jitter/2, "the TTLs are spread by the jitter (%s..%s)", lowest, highest)
}

// TestCacheTTLJitterDefault: TTLJitter left at zero is TTL/10 (the TTLs
// Redis holds are spread over [TTL, TTL+TTL/10]); pgkit.Disabled is none.
func TestCacheTTLJitterDefault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, client := newRedisStore(t)
	const ttl, keys = 10 * time.Minute, 200
	for _, tc := range []struct {
		name   string
		jitter time.Duration // the Config's
		want   time.Duration // the range of extra lifetime expected
	}{
		{"default", 0, ttl / cache.DefaultTTLJitterDivisor},
		{"disabled", pgkit.Disabled, 0},
	} {
		c := newCache[int](t, store, cache.Config{Name: "jitter-" + tc.name, TTL: ttl, TTLJitter: tc.jitter})
		start := time.Now()
		for i := range keys {
			_, err := c.GetOrLoad(ctx, fmt.Sprint(i), func(context.Context) (int, error) { return i, nil })
			require.NoError(t, err)
		}
		var lowest, highest time.Duration
		for i := range keys {
			pttl, err := client.PTTL(ctx, store.Prefix()+"jitter-"+tc.name+":"+fmt.Sprint(i)).Result()
			require.NoError(t, err)
			elapsed := time.Since(start) + time.Millisecond // PTTL counts whole milliseconds
			require.GreaterOrEqual(t, pttl, ttl-elapsed, "%s: key %d", tc.name, i)
			require.LessOrEqual(t, pttl, ttl+tc.want, "%s: key %d", tc.name, i)
			if i == 0 || pttl < lowest {
				lowest = pttl
			}
			highest = max(highest, pttl)
		}
		if tc.want > 0 {
			// As in TestCacheTTLJitter: 200 uniform draws spread over more
			// than half their range but with a negligible probability.
			require.Greater(t, highest-lowest, tc.want/2, "%s: the TTLs are spread by TTL/10 (%s..%s)", tc.name, lowest, highest)
		}
	}
}

// TestCacheLoadErrors: an error is returned and not cached; a NotFound
// error is cached for NegativeTTL; a panic becomes an error.
func TestCacheLoadErrors(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			errNoTenant := errors.New("no such tenant")
			var logs testkit.LockedBuffer
			c := newCache[dashboardStats](t, kind.new(t), cache.Config{
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				Name:   "errors", NotFound: errNoTenant, NegativeTTL: time.Minute,
			})
			var loads atomic.Int64

			errDown := errors.New("database down")
			for range 2 {
				_, err := c.GetOrLoad(ctx, "a", func(context.Context) (dashboardStats, error) {
					loads.Add(1)
					return dashboardStats{}, fmt.Errorf("loading: %w", errDown)
				})
				require.ErrorIs(t, err, errDown)
			}
			require.Equal(t, int64(2), loads.Load(), "an error is not cached")

			for range 3 {
				_, err := c.GetOrLoad(ctx, "ghost", func(context.Context) (dashboardStats, error) {
					loads.Add(1)
					return dashboardStats{}, fmt.Errorf("tenant ghost: %w", errNoTenant)
				})
				require.ErrorIs(t, err, errNoTenant)
			}
			require.Equal(t, int64(3), loads.Load(), "not found is cached")

			_, err := c.GetOrLoad(ctx, "boom", func(context.Context) (dashboardStats, error) { panic("load bug") })
			require.ErrorContains(t, err, `pgkit: cache "errors": load panicked: load bug`)
			require.NotContains(t, err.Error(), "goroutine", "the stack goes to the log, not into every caller's error")
			require.NotContains(t, err.Error(), ".go:")
			require.Contains(t, logs.String(), "goroutine", "the stack is logged once")

			s := c.Stats()
			require.Equal(t, uint64(4), s.Loads)
			require.Equal(t, uint64(4), s.LoadErrors)
			require.Equal(t, uint64(2), s.Hits, "the two cached not-founds")

			_, err = c.GetOrLoad(ctx, "nil-loader", nil)
			require.ErrorContains(t, err, "load is nil")
		})
	}
}

// TestCacheLoadOutlivesLeaver: the caller that started a load gives up; the
// load goes on for the others, and its value is stored.
func TestCacheLoadOutlivesLeaver(t *testing.T) {
	t.Parallel()
	c := newCache[int](t, newMemoryStore(t, cache.MemoryStoreConfig{}), cache.Config{Name: "leaver"})
	started, release := make(chan struct{}), make(chan struct{})
	var startOnce sync.Once
	var loadErr atomic.Pointer[error]
	load := func(ctx context.Context) (int, error) {
		startOnce.Do(func() { close(started) })
		<-release
		if err := ctx.Err(); err != nil {
			loadErr.Store(&err)
		}
		return 42, nil
	}
	leaverCtx, leave := context.WithCancel(context.Background())
	leaverDone := make(chan error)
	go func() {
		_, err := c.GetOrLoad(leaverCtx, "k", load)
		leaverDone <- err
	}()
	<-started
	stayerDone := make(chan int)
	go func() {
		v, _ := c.GetOrLoad(context.Background(), "k", load)
		stayerDone <- v
	}()
	require.Eventually(t, func() bool { return c.Stats().Misses == 2 }, 10*time.Second, time.Millisecond)
	leave()
	require.ErrorIs(t, <-leaverDone, context.Canceled, "the leaver stops waiting at once")
	close(release)
	require.Equal(t, 42, <-stayerDone)
	require.Nil(t, loadErr.Load(), "the load's context was not canceled with the leaver's")
	v, err := c.GetOrLoad(context.Background(), "k", func(context.Context) (int, error) { return 0, errors.New("not again") })
	require.NoError(t, err)
	require.Equal(t, 42, v)
}

// TestCacheLocalTier: with LocalTTL, hits come from this process; Delete
// clears it; a change behind the cache's back shows after LocalTTL.
func TestCacheLocalTier(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, client := newRedisStore(t)
	c := newCache[string](t, store, cache.Config{Name: "tiered", LocalTTL: time.Hour})
	var loads atomic.Int64
	load := func(context.Context) (string, error) { return fmt.Sprint("v", loads.Add(1)), nil }

	v, err := c.GetOrLoad(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "v1", v)
	// Take Redis's copy away behind the cache's back: the local tier still answers.
	require.NoError(t, client.Del(ctx, store.Prefix()+"tiered:k").Err())
	v, err = c.GetOrLoad(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "v1", v)
	require.Equal(t, uint64(1), c.Stats().LocalHits)

	require.NoError(t, c.Delete(ctx, "k"))
	v, err = c.GetOrLoad(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "v2", v, "Delete clears the local tier too")

	// A second process's cache (same store, same name) fills its tier from Redis.
	other := newCache[string](t, store, cache.Config{Name: "tiered", LocalTTL: 50 * time.Millisecond})
	v, err = other.GetOrLoad(ctx, "k", load)
	require.NoError(t, err)
	require.Equal(t, "v2", v)
	require.Equal(t, uint64(1), other.Stats().Hits)
	require.NoError(t, c.Delete(ctx, "k")) // "this" process invalidates
	require.NoError(t, client.Set(ctx, store.Prefix()+"tiered:k", `v"v3"`, time.Hour).Err())
	require.Eventually(t, func() bool {
		v, err := other.GetOrLoad(ctx, "k", load)
		return err == nil && v == "v3"
	}, 10*time.Second, 5*time.Millisecond, "the other process sees the change once its LocalTTL passes")
}

// TestCacheUndecodableEntry: an entry the codec cannot read (another
// version's) is loaded again and overwritten, not returned as an error.
func TestCacheUndecodableEntry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, client := newRedisStore(t)
	rec := &testkit.LogRecorder{}
	c := newCache[dashboardStats](t, store, cache.Config{Name: "dash", Logger: slog.New(rec)})
	for _, garbage := range []string{`{"users":1}`, `vnot json`, ``} {
		require.NoError(t, client.Set(ctx, store.Prefix()+"dash:k", garbage, time.Hour).Err())
		v, err := c.GetOrLoad(ctx, "k", func(context.Context) (dashboardStats, error) { return dashboardStats{Users: 9}, nil })
		require.NoError(t, err)
		require.Equal(t, dashboardStats{Users: 9}, v)
		raw, err := client.Get(ctx, store.Prefix()+"dash:k").Result()
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(raw, `v{"users":9`), raw)
	}
	require.Equal(t, uint64(3), c.Stats().Errors)
	_, logged := rec.Find("pgkit: cache entry could not be decoded")
	require.True(t, logged)
}

// TestCacheCodec: a codec of one's own is used both ways.
func TestCacheCodec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, client := newRedisStore(t)
	c := newCache[string](t, store, cache.Config{Name: "codec", Codec: upperCodec{}})
	v, err := c.GetOrLoad(ctx, "k", func(context.Context) (string, error) { return "hello", nil })
	require.NoError(t, err)
	require.Equal(t, "hello", v)
	raw, err := client.Get(ctx, store.Prefix()+"codec:k").Result()
	require.NoError(t, err)
	require.Equal(t, "vHELLO", raw)
	v, err = c.GetOrLoad(ctx, "k", func(context.Context) (string, error) { return "", errors.New("not a hit") })
	require.NoError(t, err)
	require.Equal(t, "hello", v)
}

// upperCodec stores strings in upper case and reads them back in lower case.
type upperCodec struct{}

func (upperCodec) Marshal(v any) ([]byte, error) { return []byte(strings.ToUpper(v.(string))), nil }
func (upperCodec) Unmarshal(data []byte, v any) error {
	*(v.(*string)) = strings.ToLower(string(data))
	return nil
}

// TestCacheMetricsRegistry: caches of different names share a registry;
// the same name twice is refused until the first is closed; nil registers
// nothing.
func TestCacheMetricsRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	store := newMemoryStore(t, cache.MemoryStoreConfig{})
	a := newCache[int](t, store, cache.Config{Name: "a", Registerer: reg})
	b := newCache[int](t, store, cache.Config{Name: "b", Registerer: reg})
	one := func(context.Context) (int, error) { return 1, nil }
	two := func(context.Context) (int, error) { return 2, nil }
	for range 3 {
		v, err := a.GetOrLoad(ctx, "k", one)
		require.NoError(t, err)
		require.Equal(t, 1, v)
	}
	v, err := b.GetOrLoad(ctx, "k", two)
	require.NoError(t, err)
	require.Equal(t, 2, v, "same key, same store, another cache: another key space")

	g := testkit.Gather(t, reg)
	require.ElementsMatch(t, []string{"a", "b"}, g.LabelValues("pgkit_cache_requests_total", "cache"))
	require.Equal(t, 2.0, g.Value(t, "pgkit_cache_requests_total", map[string]string{"cache": "a", "result": "hit"}))
	require.Equal(t, 1.0, g.Value(t, "pgkit_cache_requests_total", map[string]string{"cache": "b", "result": "miss"}))

	_, err = cache.New[int](store, cache.Config{Name: "a", Registerer: reg})
	var cfgErr *pgkit.ConfigError
	require.ErrorAs(t, err, &cfgErr)
	require.Equal(t, "cache.Config", cfgErr.Struct)
	require.Equal(t, "Name", cfgErr.Field)
	require.ErrorContains(t, err, `pgkit: invalid cache.Config.Name: metrics of a cache named "a" are already registered`)

	a.Close()
	a.Close() // twice is fine
	again := newCache[int](t, store, cache.Config{Name: "a", Registerer: reg})
	v, err = again.GetOrLoad(ctx, "k", two)
	require.NoError(t, err)
	require.Equal(t, 1, v, "the store kept the value")

	none := newCache[int](t, store, cache.Config{Name: "a"})
	_, err = none.GetOrLoad(ctx, "k", one)
	require.NoError(t, err)
}

func TestCacheConfigRefused(t *testing.T) {
	t.Parallel()
	store := newMemoryStore(t, cache.MemoryStoreConfig{})
	errNF := errors.New("not found")
	for field, cfg := range map[string]cache.Config{
		"Name":             {},
		"TTL":              {Name: "x", TTL: -time.Second},
		"TTLJitter":        {Name: "x", TTLJitter: -2},
		"StoreTimeout":     {Name: "x", StoreTimeout: -time.Second},
		"LoadTimeout":      {Name: "x", LoadTimeout: -time.Second},
		"StoreBackoff":     {Name: "x", StoreBackoff: -time.Second},
		"LocalTTL":         {Name: "x", LocalTTL: -time.Second},
		"LocalMaxEntries":  {Name: "x", LocalMaxEntries: -1},
		"NegativeTTL":      {Name: "x", NegativeTTL: time.Second},
		"NotFound":         {Name: "x", NotFound: errNF},
		"ErrorLogInterval": {Name: "x", ErrorLogInterval: -time.Second},
	} {
		_, err := cache.New[int](store, cfg)
		var cfgErr *pgkit.ConfigError
		require.ErrorAs(t, err, &cfgErr, field)
		require.Equal(t, "cache.Config", cfgErr.Struct, field)
		require.Equal(t, field, cfgErr.Field)
		require.True(t, strings.HasPrefix(err.Error(), "pgkit: invalid cache.Config."+field+": "), err.Error())
	}
	_, err := cache.New[int](nil, cache.Config{Name: "x"})
	require.ErrorContains(t, err, "pgkit: cache.New: the store is nil")
	c := newCache[int](t, store, cache.Config{Name: "x",
		StoreTimeout: pgkit.Disabled, TTLJitter: pgkit.Disabled, LoadTimeout: pgkit.Disabled, StoreBackoff: pgkit.Disabled})
	v, err := c.GetOrLoad(context.Background(), "k", func(context.Context) (int, error) { return 5, nil })
	require.NoError(t, err)
	require.Equal(t, 5, v)
}

// TestCacheConcurrentUse runs GetOrLoad, Delete and InvalidateOnCommit-style
// deletes of a few keys from many goroutines, under -race, on both stores.
// Every value names its key, so a caller that got another key's value is
// caught.
func TestCacheConcurrentUse(t *testing.T) {
	t.Parallel()
	type entry struct {
		Key     string `json:"key"`
		Version int64  `json:"version"`
	}
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			for _, local := range []time.Duration{0, 20 * time.Millisecond} {
				c := newCache[entry](t, kind.new(t), cache.Config{
					Name: "concurrent", TTL: 50 * time.Millisecond, LocalTTL: local, StoreTimeout: 10 * time.Second,
				})
				var version atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, 32)
				for g := range 32 {
					wg.Go(func() {
						for i := range 100 {
							key := cache.Key(fmt.Sprint("tenant", (g+i)%3), fmt.Sprint("k", i%5))
							if i%7 == 0 {
								if err := c.Delete(ctx, key, cache.Key("tenant0", "k0")); err != nil {
									errs <- err
									return
								}
								continue
							}
							v, err := c.GetOrLoad(ctx, key, func(context.Context) (entry, error) {
								return entry{Key: key, Version: version.Add(1)}, nil
							})
							if err == nil && v.Key != key {
								err = fmt.Errorf("asked for %q, got %q's value", key, v.Key)
							}
							if err != nil {
								errs <- err
								return
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					require.NoError(t, err)
				}
				s := c.Stats()
				require.Equal(t, uint64(32*100-32*15), s.Hits+s.Misses+s.Errors)
				require.Zero(t, s.StoreErrors)
			}
		})
	}
}

// TestCacheHitAllocations: a hit allocates only the store key and the
// decoded value, metrics registered: the metric children are bound once.
// Not parallel: AllocsPerRun refuses parallel tests.
func TestCacheHitAllocations(t *testing.T) {
	ctx := context.Background()
	c := newCache[int](t, newMemoryStore(t, cache.MemoryStoreConfig{}), cache.Config{
		Name: "allocs", Codec: byteCodec{}, Registerer: prometheus.NewRegistry(),
	})
	load := func(context.Context) (int, error) { return 7, nil }
	_, err := c.GetOrLoad(ctx, "k", load)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(1000, func() {
		if v, err := c.GetOrLoad(ctx, "k", load); err != nil || v != 7 {
			panic("not a hit")
		}
	})
	require.LessOrEqual(t, allocs, 2.0, "the key (name prefix + key) and the value decoded into")
	require.Equal(t, uint64(1001), c.Stats().Hits)
}

// byteCodec stores a small int as one byte, without allocating.
type byteCodec struct{}

func (byteCodec) Marshal(v any) ([]byte, error) { return []byte{byte(v.(int))}, nil }
func (byteCodec) Unmarshal(data []byte, v any) error {
	*(v.(*int)) = int(data[0])
	return nil
}
