package cache_test

import (
	"context"
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
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestCacheRedisDown stops the test's own redis-server mid-run, then makes
// it stop answering: GetOrLoad keeps returning the right values from
// PostgreSQL, each within StoreTimeout plus the load, the failures are
// counted (and logged once), and hits resume once Redis is back (and
// StoreBackoff has passed).
func TestCacheRedisDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{})
	fillDashboard(t, db, "acme", 30, 6, 4)
	want, err := queryDashboard(ctx, db, "acme")
	require.NoError(t, err)

	server := pgtest.StartRedis(t)
	store, admin := newRedisStoreAt(t, server.URL())
	reg := prometheus.NewPedanticRegistry()
	rec := &testkit.LogRecorder{}
	const storeTimeout = 50 * time.Millisecond
	c := newCache[dashboardStats](t, store, cache.Config{
		Name: "dashboard", StoreTimeout: storeTimeout, Registerer: reg, Logger: slog.New(rec),
	})
	acme := c.Tenant("acme")
	var loads atomic.Int64
	var lastLoad atomic.Int64 // how long the last load took, in ns
	get := func() (dashboardStats, time.Duration, time.Duration) {
		t.Helper()
		start := time.Now()
		s, err := acme.GetOrLoad(ctx, "dashboard_stats", func(ctx context.Context) (dashboardStats, error) {
			loads.Add(1)
			loadStart := time.Now()
			defer func() { lastLoad.Store(int64(time.Since(loadStart))) }()
			return queryDashboard(ctx, db, "acme")
		})
		require.NoError(t, err, "a store failure never reaches the caller")
		return s, time.Since(start), time.Duration(lastLoad.Load())
	}
	// The bound is StoreTimeout plus the load; slack covers scheduling on
	// a busy machine under -race. Without StoreTimeout, go-redis would wait
	// its ReadTimeout (3s) for a server that does not answer.
	const slack = 250 * time.Millisecond
	requireBounded := func(took, load time.Duration) {
		t.Helper()
		require.Less(t, took, storeTimeout+load+slack, "load took %s", load)
	}

	// Warm: a miss, then hits (polled: the machine may be busy enough
	// under -race for a 50ms SET to time out once).
	require.Eventually(t, func() bool {
		got, _, _ := get()
		require.Equal(t, want, got)
		return c.Stats().Hits > 0
	}, 30*time.Second, 10*time.Millisecond)

	// Down: the server is gone, connections are refused.
	require.NoError(t, server.Stop())
	before := c.Stats()
	loadsBefore := loads.Load()
	for i := range 10 {
		got, took, load := get()
		require.Equal(t, want, got, "call %d", i)
		requireBounded(took, load)
	}
	require.Equal(t, loadsBefore+10, loads.Load(), "every call loaded from PostgreSQL")
	s := c.Stats()
	require.Equal(t, before.Errors+10, s.Errors)
	// After a failure the store is left alone for StoreBackoff (1s), so
	// most calls do not try it (the loop takes well under a second: one).
	require.Greater(t, s.StoreErrors, before.StoreErrors)
	require.Less(t, s.StoreErrors, before.StoreErrors+10)
	g := testkit.Gather(t, reg)
	require.Equal(t, float64(s.Errors), g.Value(t, "pgkit_cache_requests_total", map[string]string{"cache": "dashboard", "result": "error"}))
	require.Equal(t, float64(s.StoreErrors), g.Value(t, "pgkit_cache_store_errors_total", map[string]string{"cache": "dashboard"}))

	// Back: the server keeps no data, so one miss, then hits.
	require.NoError(t, server.Start())
	hitsBefore := c.Stats().Hits
	require.Eventually(t, func() bool {
		got, _, _ := get()
		require.Equal(t, want, got)
		return c.Stats().Hits > hitsBefore
	}, 30*time.Second, 10*time.Millisecond, "hits never resumed after Redis came back")

	// Not answering: the server is up but paused for every client; the
	// cached value cannot be read, so GetOrLoad loads within StoreTimeout.
	require.NoError(t, admin.Do(ctx, "CLIENT", "PAUSE", 3000, "ALL").Err())
	errorsBefore := c.Stats().Errors
	for range 3 {
		got, took, load := get()
		require.Equal(t, want, got)
		requireBounded(took, load)
	}
	require.Equal(t, errorsBefore+3, c.Stats().Errors)
	hitsBefore = c.Stats().Hits
	require.Eventually(t, func() bool {
		got, _, _ := get()
		require.Equal(t, want, got)
		return c.Stats().Hits > hitsBefore
	}, 30*time.Second, 20*time.Millisecond, "hits never resumed after the pause")

	// Many failures, one log line: at most one per ErrorLogInterval (1m).
	n := 0
	for _, line := range strings.Split(rec.Text(), "\n") {
		if strings.Contains(line, "pgkit: cache store error") && strings.Contains(line, "cache=dashboard op=") {
			n++
		}
	}
	require.Equal(t, 1, n, rec.Text())
}

// TestCacheStampedeRedisDefaults: 500 callers miss one key at once, five
// rounds (a fresh key each), on Redis with the default config, StoreTimeout
// 50ms included. The callers of one key share one lookup (one GET) and one
// load, so they do not queue up for go-redis's connections (20 on two cores)
// and time out there: every caller counts a miss, the load runs exactly once
// a round, no store call fails, and every caller gets the value.
func TestCacheStampedeRedisDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{})
	fillDashboard(t, db, "acme", 20, 4, 3)
	want, err := queryDashboard(ctx, db, "acme")
	require.NoError(t, err)
	store, client := newRedisStore(t)
	c, err := cache.New[dashboardStats](store, cache.Config{Name: "stampede_defaults"})
	require.NoError(t, err)
	t.Cleanup(c.Close)

	// A service's client has its connections open: so has this one.
	require.NoError(t, client.Ping(ctx).Err())
	const callers, rounds = 500, 5
	var gets atomic.Int64
	client.AddHook(countGETs{&gets})
	for round := range rounds {
		key := cache.Key("acme", fmt.Sprint("dashboard_stats_", round))
		var loads atomic.Int64
		release := make(chan struct{})
		load := func(ctx context.Context) (dashboardStats, error) {
			loads.Add(1)
			<-release // until every caller has asked
			return queryDashboard(ctx, db, "acme")
		}
		before := c.Stats()
		gets.Store(0)
		start := make(chan struct{})
		errs := make(chan error, callers)
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				<-start
				v, err := c.GetOrLoad(ctx, key, load)
				if err == nil && v != want {
					err = fmt.Errorf("got %+v", v)
				}
				errs <- err
			})
		}
		close(start)
		// Every caller has missed (the load waits for release): all 500 are
		// in the one flight.
		allMissed := pollUntil(30*time.Second, func() bool { return c.Stats().Misses-before.Misses == callers })
		close(release)
		wg.Wait()
		require.True(t, allMissed, "round %d: every caller counts a miss: %+v", round, c.Stats())
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		after := c.Stats()
		require.Equal(t, int64(1), loads.Load(), "round %d: the load ran once for %d callers", round, callers)
		require.Zero(t, after.StoreErrors-before.StoreErrors, "round %d: no store call failed", round)
		require.Zero(t, after.Errors-before.Errors, "round %d", round)
		require.Equal(t, uint64(callers), after.Misses-before.Misses, "round %d", round)
		require.Equal(t, int64(1), gets.Load(), "round %d: one GET for the %d callers of one key", round, callers)
	}
}

// countGETs is a go-redis hook that counts the GET commands sent.
type countGETs struct{ n *atomic.Int64 }

func (h countGETs) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countGETs) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "get" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h countGETs) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// pollUntil checks cond every millisecond until it holds (true) or d has
// passed (false).
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
