package pgkit_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// xssSQL is a slow statement whose text is markup: the dashboard must show
// it as text.
// The markup is a quoted identifier: literals are masked before SQL is kept.
const xssSQL = `SELECT pg_sleep(0.06) AS "<script>alert(1)</script>"`

// xssShown is xssSQL as kept and shown.
const xssShown = `SELECT pg_sleep(?) AS "<script>alert(1)</script>"`

// dashData mirrors the documented JSON of the dashboard's data endpoint.
type dashData struct {
	Version        int     `json:"version"`
	Time           string  `json:"time"`
	Pool           string  `json:"pool"`
	RefreshSeconds float64 `json:"refresh_seconds"`
	Metrics        bool    `json:"metrics"`
	PoolStats      struct {
		Size         int32   `json:"size"`
		Acquired     int32   `json:"acquired"`
		Idle         int32   `json:"idle"`
		Constructing int32   `json:"constructing"`
		Max          int32   `json:"max"`
		Utilization  float64 `json:"utilization"`
		AcquireCount int64   `json:"acquire_count"`
	} `json:"pool_stats"`
	Queries *struct {
		Count      uint64  `json:"count"`
		Errors     uint64  `json:"errors"`
		Canceled   uint64  `json:"canceled"`
		SumSeconds float64 `json:"sum_seconds"`
		Buckets    []struct {
			LE    float64 `json:"le_seconds"`
			Count uint64  `json:"count"`
		} `json:"buckets"`
	} `json:"queries"`
	Window *struct {
		Seconds               float64  `json:"duration_seconds"`
		QueriesPerSecond      *float64 `json:"queries_per_second"`
		ErrorsPerSecond       *float64 `json:"errors_per_second"`
		P50Seconds            *float64 `json:"p50_seconds"`
		P99Seconds            *float64 `json:"p99_seconds"`
		AcquiresPerSecond     float64  `json:"acquires_per_second"`
		EmptyAcquiresPerSec   float64  `json:"empty_acquires_per_second"`
		AcquireWaitAvgSeconds *float64 `json:"acquire_wait_avg_seconds"`
	} `json:"window"`
	SlowThreshold float64            `json:"slow_query_threshold_seconds"`
	SlowQueries   []pgkit.SlowQuery  `json:"slow_queries"`
	Sources       []dashSourceValues `json:"sources"`
}

type dashSourceValues struct {
	Name   string             `json:"name"`
	Values map[string]float64 `json:"values"`
}

// dashResp is a response of the dashboard, read whole.
type dashResp struct {
	code   int
	header http.Header
	body   []byte
}

// dashGet fetches url, with the Authorization header when token is set.
func dashGet(t *testing.T, url, token string) dashResp {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Close = true // no idle keep-alive connection outlives the test
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return dashResp{resp.StatusCode, resp.Header, body}
}

func getDashData(t *testing.T, url, token string) (dashData, []byte) {
	t.Helper()
	resp := dashGet(t, url, token)
	require.Equal(t, http.StatusOK, resp.code, string(resp.body))
	require.Equal(t, "application/json", resp.header.Get("Content-Type"))
	var d dashData
	require.NoError(t, json.Unmarshal(resp.body, &d), string(resp.body))
	return d, resp.body
}

// serveDashboard mounts the dashboard under /debug/pgkit/, as the doc
// comment shows, on a test server.
func serveDashboard(t *testing.T, h http.Handler) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/debug/pgkit/", http.StripPrefix("/debug/pgkit", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/debug/pgkit/"
}

func TestDashboardRefusesUnauthorized(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	for name, authorize := range map[string]func(*http.Request) bool{
		"nil":     nil,
		"refuses": func(*http.Request) bool { return false },
		"token":   pgkit.BearerToken("right"),
	} {
		base := serveDashboard(t, pgkit.DashboardHandler(db, authorize))
		for _, path := range []string{"", "data", "dashboard.js", "dashboard.css", "nothing"} {
			for _, token := range []string{"", "wrong"} {
				resp := dashGet(t, base+path, token)
				require.Equal(t, http.StatusUnauthorized, resp.code, "%s %q", name, path)
				require.Equal(t, "application/json", resp.header.Get("Content-Type"))
				require.JSONEq(t, `{"error":"unauthorized"}`, string(resp.body))
				require.Equal(t, []string{`Bearer realm="pgkit"`, `Basic realm="pgkit", charset="UTF-8"`},
					resp.header.Values("WWW-Authenticate"), "a browser answers the Basic challenge with its login prompt")
				require.Equal(t, "no-store", resp.header.Get("Cache-Control"))
				require.Equal(t, "nosniff", resp.header.Get("X-Content-Type-Options"))
			}
		}
	}
}

func TestDashboardServesPageAndAssets(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	base := serveDashboard(t, pgkit.DashboardHandler(db, pgkit.BearerToken("tok")))

	for path, want := range map[string]string{
		"":              "text/html; charset=utf-8",
		"dashboard.js":  "text/javascript; charset=utf-8",
		"dashboard.css": "text/css; charset=utf-8",
		"data":          "application/json",
	} {
		resp := dashGet(t, base+path, "tok")
		require.Equal(t, http.StatusOK, resp.code, path)
		require.Equal(t, want, resp.header.Get("Content-Type"), path)
		require.Equal(t, "no-store", resp.header.Get("Cache-Control"), path)
		require.Equal(t, "nosniff", resp.header.Get("X-Content-Type-Options"), path)
		csp := resp.header.Get("Content-Security-Policy")
		for _, directive := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'",
			"connect-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'"} {
			require.Contains(t, csp, directive, path)
		}
		require.NotContains(t, csp, "unsafe", path)
		require.NotEmpty(t, resp.body, path)
	}

	// The page refers to its assets and data relatively, so that it works
	// under any prefix, and holds no inline script or style.
	page := dashGet(t, base, "tok").body
	require.Contains(t, string(page), `<script src="dashboard.js" defer></script>`)
	require.Contains(t, string(page), `<link rel="stylesheet" href="dashboard.css">`)
	require.NotContains(t, string(page), `src="/`)
	require.NotContains(t, string(page), `href="/`)
	require.NotContains(t, string(page), "<style")
	require.NotContains(t, string(page), "style=")
	require.Equal(t, 1, strings.Count(string(page), "<script"))
	js := dashGet(t, base+"dashboard.js", "tok").body
	require.NotContains(t, string(js), "innerHTML")
	require.Contains(t, string(js), "new URL('data', document.baseURI)")
	require.Contains(t, string(js), "fetch(dataURL.href")

	// Unknown paths and other methods are refused.
	resp := dashGet(t, base+"nothing", "tok")
	require.Equal(t, http.StatusNotFound, resp.code)
	req, err := http.NewRequest(http.MethodPost, base+"data", nil)
	require.NoError(t, err)
	req.Close = true
	req.Header.Set("Authorization", "Bearer tok")
	post, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, post.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, post.StatusCode)

	// Without StripPrefix the handler finds its resources all the same.
	mux := http.NewServeMux()
	mux.Handle("/ops/db/", pgkit.DashboardHandler(db, pgkit.BearerToken("tok")))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp = dashGet(t, srv.URL+"/ops/db/", "tok")
	require.Equal(t, "text/html; charset=utf-8", resp.header.Get("Content-Type"))
	getDashData(t, srv.URL+"/ops/db/data", "tok")

	// Mounted on an exact path, the prefix alone is sent on to the page at
	// prefix + "/", where its relative URLs resolve under the prefix.
	h := http.StripPrefix("/admin/db", pgkit.DashboardHandler(db, pgkit.BearerToken("tok")))
	mux.Handle("/admin/db", h)
	mux.Handle("/admin/db/", h)
	req, err = http.NewRequest(http.MethodGet, srv.URL+"/admin/db?x=1", nil)
	require.NoError(t, err)
	req.Close = true
	req.Header.Set("Authorization", "Bearer tok")
	redirect, err := http.DefaultTransport.RoundTrip(req)
	require.NoError(t, err)
	require.NoError(t, redirect.Body.Close())
	require.Equal(t, http.StatusFound, redirect.StatusCode)
	require.Equal(t, "db/", redirect.Header.Get("Location"))
	resp = dashGet(t, srv.URL+"/admin/db/", "tok")
	require.Equal(t, "text/html; charset=utf-8", resp.header.Get("Content-Type"))
}

func TestDashboardData(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, Name: "dash", SlowQueryThreshold: 50 * time.Millisecond})
	ctx := context.Background()
	var lookups atomic.Uint64
	base := serveDashboard(t, pgkit.DashboardHandler(db, pgkit.BearerToken("tok"),
		pgkit.WithDashboardRefresh(100*time.Millisecond),
		pgkit.WithDashboardSource("users cache", func() map[string]float64 {
			n := float64(lookups.Add(1))
			return map[string]float64{"hits": 3 * n, "misses": n, "hit_ratio": 0.75, "broken": nanValue()}
		})))

	first, _ := getDashData(t, base+"data", "tok")
	require.Equal(t, 2, first.Version)
	require.Equal(t, "dash", first.Pool)
	require.True(t, first.Metrics)
	require.InDelta(t, 0.1, first.RefreshSeconds, 1e-9)
	require.InDelta(t, 0.05, first.SlowThreshold, 1e-9)
	require.Nil(t, first.Window, "nothing to compare the first read with")
	require.Equal(t, int32(4), first.PoolStats.Max)
	require.NotNil(t, first.Queries)
	_, err := time.Parse(time.RFC3339Nano, first.Time)
	require.NoError(t, err)

	// Work: fast queries, one failure, and the slow one (60ms, longer than
	// the half refresh the window needs).
	for range 20 {
		_, err := db.Exec(ctx, `SELECT 1`)
		require.NoError(t, err)
	}
	_, err = db.Exec(ctx, `SELECT 1/0`)
	require.Error(t, err)
	_, err = db.Exec(ctx, xssSQL)
	require.NoError(t, err)

	second, body := getDashData(t, base+"data", "tok")
	q := second.Queries
	require.NotNil(t, q)
	require.GreaterOrEqual(t, q.Count-first.Queries.Count, uint64(22))
	require.Equal(t, uint64(1), q.Errors-first.Queries.Errors)
	require.Greater(t, q.SumSeconds, 0.06)
	require.Len(t, q.Buckets, 14)
	for i := 1; i < len(q.Buckets); i++ {
		require.Greater(t, q.Buckets[i].LE, q.Buckets[i-1].LE)
		require.GreaterOrEqual(t, q.Buckets[i].Count, q.Buckets[i-1].Count, "cumulative")
	}
	require.LessOrEqual(t, q.Buckets[len(q.Buckets)-1].Count, q.Count)

	w := second.Window
	require.NotNil(t, w)
	require.GreaterOrEqual(t, w.Seconds, 0.05)
	require.NotNil(t, w.QueriesPerSecond)
	require.InDelta(t, float64(q.Count-first.Queries.Count)/w.Seconds, *w.QueriesPerSecond, 1e-6)
	require.NotNil(t, w.ErrorsPerSecond)
	require.InDelta(t, 1/w.Seconds, *w.ErrorsPerSecond, 1e-6)
	require.NotNil(t, w.P50Seconds)
	require.NotNil(t, w.P99Seconds)
	require.Greater(t, *w.P50Seconds, 0.0)
	require.Less(t, *w.P50Seconds, 0.05, "most statements were fast")
	require.GreaterOrEqual(t, *w.P99Seconds, *w.P50Seconds)
	require.GreaterOrEqual(t, *w.P99Seconds, 0.05, "the slowest 1% is the pg_sleep")
	require.Greater(t, w.AcquiresPerSecond, 0.0)
	require.NotNil(t, w.AcquireWaitAvgSeconds)

	// The slow statement is listed as data: its text intact once decoded,
	// and escaped in the bytes on the wire.
	require.NotEmpty(t, second.SlowQueries)
	sq := second.SlowQueries[0]
	require.Equal(t, xssShown, sq.SQL)
	require.Equal(t, "select", sq.Name)
	require.Equal(t, "query", sq.Op)
	require.GreaterOrEqual(t, sq.Duration, 60*time.Millisecond)
	require.NotContains(t, string(body), "<script>")
	require.Contains(t, string(body), `\u003cscript\u003ealert(1)\u003c/script\u003e`)

	require.Equal(t, []dashSourceValues{{Name: "users cache", Values: map[string]float64{
		"hits": 6, "misses": 2, "hit_ratio": 0.75}}}, second.Sources, "NaN is left out")

	// A read right after has no sample old enough but the first one.
	third, _ := getDashData(t, base+"data", "tok")
	require.NotNil(t, third.Window)
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

func TestDashboardWithoutMetrics(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{SlowQueryThreshold: 50 * time.Millisecond})
	ctx := context.Background()
	convID := newConversation(t, db)
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: "chat", FlushInterval: time.Hour})
	require.NoError(t, err)
	convs := newDashCache(t, time.Hour)
	base := serveDashboard(t, pgkit.DashboardHandler(db, pgkit.BearerToken("tok"),
		pgkit.WithDashboardWriter(w), pgkit.WithDashboardSource("convs", convs.DashboardStats), pgkit.WithDashboardRefresh(time.Millisecond)))

	first, _ := getDashData(t, base+"data", "tok")
	require.InDelta(t, 0.1, first.RefreshSeconds, 1e-9, "raised to 100ms")
	for i := range 3 {
		require.NoError(t, w.Write(ctx, chatMsg(convID, i)))
	}
	for range 3 {
		_, err := convs.GetOrLoad(ctx, "k", func(context.Context) (int, error) { return 7, nil })
		require.NoError(t, err)
	}
	_, err = db.Exec(ctx, xssSQL)
	require.NoError(t, err)

	// Query figures come from pgkit's own counters, not from Prometheus:
	// the page has them without a Registerer.
	d, _ := getDashData(t, base+"data", "tok")
	require.False(t, d.Metrics, "no Registerer")
	require.NotNil(t, d.Queries)
	require.GreaterOrEqual(t, d.Queries.Count, first.Queries.Count+1, "the Exec above")
	require.Equal(t, int32(4), d.PoolStats.Max)
	require.Positive(t, d.PoolStats.AcquireCount)
	require.NotNil(t, d.Window)
	require.NotNil(t, d.Window.QueriesPerSecond)
	require.Positive(t, *d.Window.QueriesPerSecond)
	require.NotNil(t, d.Window.P50Seconds)
	require.NotNil(t, d.Window.P99Seconds)
	require.Greater(t, d.Window.AcquiresPerSecond, 0.0)
	// Newest first; on a busy machine the setup statements can pass the
	// 50ms threshold too.
	require.NotEmpty(t, d.SlowQueries)
	require.Equal(t, xssShown, d.SlowQueries[0].SQL)
	require.Equal(t, []dashSourceValues{
		{Name: "chat", Values: map[string]float64{"queued": 3, "capacity": 50_000, "accepted": 3, "written": 0, "failed": 0, "ambiguous": 0}},
		{Name: "convs", Values: map[string]float64{"hits": 2, "misses": 1, "errors": 0, "hit_ratio": 2.0 / 3,
			"local_hits": 0, "loads": 1, "load_errors": 0, "store_errors": 0}},
	}, d.Sources)

	require.NoError(t, w.Close(ctx))
	d, _ = getDashData(t, base+"data", "tok")
	require.Equal(t, map[string]float64{"queued": 0, "capacity": 50_000, "accepted": 3, "written": 3, "failed": 0, "ambiguous": 0},
		d.Sources[0].Values)
}

// newDashCache is a small in-memory Cache whose entries live for ttl.
func newDashCache(t *testing.T, ttl time.Duration) *cache.Cache[int] {
	t.Helper()
	store, err := cache.NewMemoryStore(cache.MemoryStoreConfig{MaxEntries: 100})
	require.NoError(t, err)
	t.Cleanup(store.Close)
	c, err := cache.New[int](store, cache.Config{Name: "conversations", TTL: ttl})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}
