package pgkit_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

const healthTimeout = 500 * time.Millisecond

// checkHealth runs db.Health and requires that it returned within its timeout
// (plus scheduling slack).
func checkHealth(t *testing.T, db *pgkit.DB) pgkit.HealthReport {
	t.Helper()
	start := time.Now()
	r := db.Health(context.Background())
	require.Less(t, time.Since(start), healthTimeout+500*time.Millisecond, "Health blocked past its timeout")
	return r
}

func TestHealthUp(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{HealthTimeout: healthTimeout})
	r := checkHealth(t, db)
	require.Equal(t, pgkit.StatusUp, r.Status, r.Reason)
	require.Empty(t, r.Reason)
	require.Positive(t, r.Latency)
	require.Regexp(t, `^\d+(\.\d+)?`, r.ServerVersion)
	require.False(t, r.InRecovery)
	require.Equal(t, int32(4), r.Pool.Max)
	require.Equal(t, int32(0), r.Pool.Acquired, "the check gave its connection back")
	require.GreaterOrEqual(t, r.Pool.Size, int32(1))
	require.WithinDuration(t, time.Now(), r.CheckedAt, 5*time.Second)
}

func TestHealthDownAndBackWithSameDB(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t)
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{URL: cluster.URL(), MaxConns: 4, HealthTimeout: healthTimeout, Registerer: reg})
	require.Equal(t, pgkit.StatusUp, checkHealth(t, db).Status)
	require.Equal(t, 1.0, testkit.Gather(t, reg).Value(t, "pgkit_database_up", nil))

	require.NoError(t, cluster.Stop(context.Background()))
	r := checkHealth(t, db)
	require.Equal(t, 0.0, testkit.Gather(t, reg).Value(t, "pgkit_database_up", nil), "the scrape sees it too")
	require.Equal(t, pgkit.StatusDown, r.Status)
	require.NotEmpty(t, r.Reason)
	require.NotContains(t, r.Reason, "127.0.0.1", "the reason must not reveal the URL")

	require.NoError(t, cluster.Start(context.Background()))
	deadline := time.Now().Add(15 * time.Second)
	for {
		r = checkHealth(t, db)
		if r.Status == pgkit.StatusUp || time.Now().After(deadline) {
			break
		}
	}
	require.Equal(t, pgkit.StatusUp, r.Status, "the same DB recovers once the server is back: %s", r.Reason)
}

func TestHealthDegradedWhenPoolExhausted(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 2, HealthTimeout: healthTimeout})
	var held []*pgxpool.Conn
	for range 2 {
		c, err := db.Acquire(context.Background())
		require.NoError(t, err)
		held = append(held, c)
	}
	r := checkHealth(t, db)
	require.Equal(t, pgkit.StatusDegraded, r.Status)
	require.Contains(t, r.Reason, "pool exhausted")
	require.Equal(t, int32(2), r.Pool.Acquired)
	require.InDelta(t, 1.0, r.Pool.Utilization, 1e-9)

	for _, c := range held {
		c.Release()
	}
	require.Equal(t, pgkit.StatusUp, checkHealth(t, db).Status)
}

func TestHealthDownWhenUnreachable(t *testing.T) {
	t.Parallel()
	db, err := pgkit.Open(context.Background(), pgkit.Config{
		URL: "postgres://postgres@127.0.0.1:" + closedPort(t) + "/db", LazyConnect: true, HealthTimeout: healthTimeout,
	})
	require.NoError(t, err)
	defer db.Close()
	r := checkHealth(t, db)
	require.Equal(t, pgkit.StatusDown, r.Status)
	require.Equal(t, "cannot reach the server: connection refused", r.Reason)
}

func TestPoolStatsCounters(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 3})
	ctx := context.Background()
	for range 5 {
		_, err := db.Exec(ctx, "SELECT 1")
		require.NoError(t, err)
	}
	c, err := db.Acquire(ctx)
	require.NoError(t, err)
	s := db.PoolStats()
	require.Equal(t, int32(1), s.Acquired)
	require.Equal(t, int32(3), s.Max)
	require.InDelta(t, 1.0/3, s.Utilization, 1e-9)
	require.Equal(t, s.Size, s.Acquired+s.Idle+s.Constructing)
	require.GreaterOrEqual(t, s.AcquireCount, int64(5+1), "five Execs and one Acquire")
	require.GreaterOrEqual(t, s.NewConns, int64(1))
	require.Equal(t, int64(0), s.Waiting)
	c.Release()
}

// TestHealthHandler: the default body is the status alone, for anyone;
// HealthDetails gives the whole report to the requests it accepts, with the
// same status code, and the status alone to the others.
func TestHealthHandler(t *testing.T) {
	t.Parallel()
	const secret = "handler-s3cret"
	db := openTest(t, pgkit.Config{URL: withPassword(t, pgtest.NewDatabase(t), secret), MaxConns: 2, HealthTimeout: healthTimeout})
	srv := httptest.NewServer(pgkit.HealthHandler(db))
	defer srv.Close()

	for _, auth := range []string{"", "Bearer ops", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:ops"))} {
		code, body := get(t, srv.URL, auth)
		require.Equal(t, http.StatusOK, code)
		require.JSONEq(t, `{"status":"up"}`, body, "without HealthDetails no one gets details (%q)", auth)
	}

	details := httptest.NewServer(pgkit.HealthHandler(db, pgkit.HealthDetails(pgkit.BearerToken("ops"))))
	defer details.Close()
	for _, auth := range []string{"", "Bearer wrong", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:wrong"))} {
		code, body := get(t, details.URL, auth)
		require.Equal(t, http.StatusOK, code, auth)
		require.JSONEq(t, `{"status":"up"}`, body, "refused requests get the status alone (%q)", auth)
	}
	for _, auth := range []string{"Bearer ops", "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:ops"))} {
		code, body := get(t, details.URL, auth)
		require.Equal(t, http.StatusOK, code)
		var report map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &report))
		require.Equal(t, "up", report["status"])
		for _, k := range []string{"latency_seconds", "server_version", "in_recovery", "pool", "checked_at"} {
			require.Contains(t, report, k, auth)
		}
		require.Positive(t, report["latency_seconds"])
		pool := report["pool"].(map[string]any)
		for _, k := range []string{"size", "acquired", "idle", "max", "utilization", "waiting", "acquire_count", "acquire_wait_seconds"} {
			require.Contains(t, pool, k)
		}
		require.NotContains(t, body, secret)
		require.NotContains(t, body, "postgres://")
		require.NotContains(t, body, "127.0.0.1")
	}
	allowAll := httptest.NewServer(pgkit.HealthHandler(db, pgkit.HealthDetails(nil)))
	defer allowAll.Close()
	_, body := get(t, allowAll.URL, "Bearer ops")
	require.JSONEq(t, `{"status":"up"}`, body, "a nil authorize lets no one see details")

	down, err := pgkit.Open(context.Background(), pgkit.Config{
		URL:         "postgres://postgres:" + secret + "@127.0.0.1:" + closedPort(t) + "/db",
		LazyConnect: true, HealthTimeout: healthTimeout,
	})
	require.NoError(t, err)
	defer down.Close()
	srvDown := httptest.NewServer(pgkit.HealthHandler(down, pgkit.HealthDetails(pgkit.BearerToken("ops"))))
	defer srvDown.Close()
	code, body := get(t, srvDown.URL, "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.JSONEq(t, `{"status":"down","reason":"cannot reach the server: connection refused"}`, body)
	code, body = get(t, srvDown.URL, "Bearer ops")
	require.Equal(t, http.StatusServiceUnavailable, code, "details come with the same status code")
	require.Contains(t, body, `"status":"down"`)
	require.Contains(t, body, `"latency_seconds":0`)
	require.NotContains(t, body, secret)
	require.NotContains(t, body, "127.0.0.1")
	require.NotContains(t, body, "detail")
}

// TestHealthHandlerDegraded: a pool with every connection checked out is
// degraded, and HealthHandler still answers 200.
func TestHealthHandlerDegraded(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 1, HealthTimeout: healthTimeout})
	c, err := db.Acquire(context.Background())
	require.NoError(t, err)
	defer c.Release()
	srv := httptest.NewServer(pgkit.HealthHandler(db))
	defer srv.Close()
	code, body := get(t, srv.URL, "")
	require.Equal(t, http.StatusOK, code)
	var got map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Equal(t, "degraded", got["status"])
	require.Contains(t, got["reason"], "pool exhausted")
	require.Len(t, got, 2, body)
}

func TestStatsHandler(t *testing.T) {
	t.Parallel()
	const secret = "stats-s3cret"
	db := openTest(t, pgkit.Config{URL: withPassword(t, pgtest.NewDatabase(t), secret), MaxConns: 2})

	anon := httptest.NewServer(pgkit.StatsHandler(db, nil))
	defer anon.Close()
	code, body := get(t, anon.URL, "")
	require.Equal(t, http.StatusUnauthorized, code)
	require.JSONEq(t, `{"error":"unauthorized"}`, body)

	srv := httptest.NewServer(pgkit.StatsHandler(db, pgkit.BearerToken("admin-token")))
	defer srv.Close()
	for _, bad := range []string{"", "Bearer wrong", "Bearer admin-token-and-more", "admin-token", "Basic admin-token",
		"Basic " + base64.StdEncoding.EncodeToString([]byte("admin-token:wrong"))} {
		code, body = get(t, srv.URL, bad)
		require.Equal(t, http.StatusUnauthorized, code, bad)
		require.JSONEq(t, `{"error":"unauthorized"}`, body)
	}

	code, _ = get(t, srv.URL, "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:admin-token")))
	require.Equal(t, http.StatusOK, code, "Basic credentials with the token as the password")
	code, body = get(t, srv.URL, "Bearer admin-token")
	require.Equal(t, http.StatusOK, code)
	var got struct {
		PoolStats map[string]any `json:"pool_stats"`
		Healthy   *bool          `json:"healthy"`
		Timestamp string         `json:"timestamp"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.NotNil(t, got.Healthy)
	require.True(t, *got.Healthy)
	require.Equal(t, float64(2), got.PoolStats["max"])
	ts, err := time.Parse(time.RFC3339Nano, got.Timestamp)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(got.Timestamp, "Z"), "timestamp in UTC: %s", got.Timestamp)
	require.WithinDuration(t, time.Now(), ts, time.Minute)
	require.NotContains(t, body, secret)
	require.NotContains(t, body, "postgres://")
}

func get(t *testing.T, url, authorization string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Close = true // no keep-alive goroutine left for goleak to find
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, string(body)
}
