package pgkit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"
)

// TestKilledBackends: every pgkit backend is terminated, repeatedly, while
// 16 goroutines work. Statements in flight fail with an error the caller
// sees (pgkit retries nothing on its own outside InTx's WithRetry), and the
// next acquire always gets a live connection: after the kills every
// statement succeeds.
func TestKilledBackends(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{ApplicationName: "pgkit-killed-backends", MaxConns: 4})
	admin := openTest(t, pgkit.Config{URL: db.Config().URL, MaxConns: 1, ApplicationName: "pgkit-killer"})
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TABLE counter (n int)`)
	require.NoError(t, err)

	var okWrites, failedWrites atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := db.Exec(ctx, `INSERT INTO counter VALUES (1)`); err != nil {
					failedWrites.Add(1)
				} else {
					okWrites.Add(1)
				}
			}
		})
	}
	kills := 0
	for range 5 {
		require.Eventually(t, func() bool { return db.Stat().TotalConns() > 0 }, 5*time.Second, time.Millisecond)
		tag, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgkit-killed-backends'`)
		require.NoError(t, err)
		kills += int(tag.RowsAffected())
		n := okWrites.Load()
		require.Eventually(t, func() bool { return okWrites.Load() > n+20 }, 10*time.Second, time.Millisecond, "work resumes after the kill")
	}
	close(stop)
	wg.Wait()
	require.Positive(t, kills)

	// Every write that reported success is there; the failed ones are not
	// (an INSERT either ran or reported its error).
	var rows int64
	require.NoError(t, admin.QueryRow(ctx, `SELECT COUNT(*) FROM counter`).Scan(&rows))
	require.Equal(t, okWrites.Load(), rows)
	for range 20 {
		_, err := db.Exec(ctx, `SELECT 1`)
		require.NoError(t, err, "the next acquire gets a live connection")
	}
	t.Logf("%d kills, %d writes ok, %d failed", kills, okWrites.Load(), failedWrites.Load())
}

// TestCutDuringCopy: the connection is reset in the middle of a large COPY.
// COPY is all or nothing: not a row of it is in the table.
func TestCutDuringCopy(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2})
	ctx := context.Background()
	convID := seedConversation(t, db)

	rows := messages(convID, 200_000, 0)
	var sent atomic.Int64
	src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		if sent.Add(1) == 50_000 {
			proxy.ResetAll() // a quarter of the way through
		}
		r := &rows[i]
		return []any{r.TenantID, r.ConversationID, r.Role, r.Content, r.Tokens}, nil
	})
	_, err := pgkit.CopyInsertFrom(ctx, db, "messages", []string{"tenant_id", "conversation_id", "role", "content", "tokens"}, src)
	require.Error(t, err)

	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT COUNT(*) FROM messages`).Scan(&n), "the pool recovers at once")
	require.Zero(t, n, "all or nothing")
}

// TestCutAfterBytesDuringCopy: the connection is cut after a given number
// of bytes of a COPY's data have reached the server, mid-message. Nothing of
// the COPY is kept, and a retry on a fresh connection writes it whole.
func TestCutAfterBytesDuringCopy(t *testing.T) {
	t.Parallel()
	url, proxy := proxied(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2})
	ctx := context.Background()
	convID := seedConversation(t, db)
	rows := messages(convID, 50_000, 0)

	proxy.CutAfterBytes(300_000) // the COPY of 50,000 rows is about 2 MB
	_, err := pgkit.CopyInsert(ctx, db, "messages", rows)
	require.Error(t, err)
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT COUNT(*) FROM messages`).Scan(&n))
	require.Zero(t, n, "all or nothing")

	copied, err := pgkit.CopyInsert(ctx, db, "messages", rows)
	require.NoError(t, err)
	require.Equal(t, int64(len(rows)), copied)
}

// TestLabelsBoundedUnderManyQueries: 10,000 distinct statements (each with
// its own name comment and text) leave at most MaxQueryNames names, plus
// pgkit's own, in the metrics.
func TestLabelsBoundedUnderManyQueries(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, MaxQueryNames: 50})
	ctx := context.Background()
	for i := range 10_000 {
		_, err := db.Exec(ctx, fmt.Sprintf("-- name: Query%d :one\nSELECT %d AS column_%d", i, i, i))
		require.NoError(t, err)
	}
	names := gather(t, reg).labelValues("pgkit_query_duration_seconds", "name")
	require.LessOrEqual(t, len(names), 50+2, "at most MaxQueryNames, other and pgkit_health")
	require.Contains(t, names, "other")
}

// TestNoSecretsUnderFaults: a password in the URL and a secret argument in
// every statement, through refusals, a silent partition, resets and server
// errors. Nothing pgkit says (log lines, errors it makes, metrics, HTTP
// bodies) contains either. (A server error returned to the caller keeps the
// server's own message, which can quote a value: see README.)
func TestNoSecretsUnderFaults(t *testing.T) {
	t.Parallel()
	const password, argSecret = "Pw-under-fire-31337", "arg-secret-4242"
	url, proxy := proxied(t)
	url = withPassword(t, url, password)
	logs := &logRecorder{}
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2, Logger: slog.New(logs), Registerer: reg, SlowQueryThreshold: 20 * time.Millisecond,
		AcquireTimeout: 300 * time.Millisecond, ConnectTimeout: 300 * time.Millisecond, HealthTimeout: 300 * time.Millisecond, LeakThreshold: time.Minute})
	ctx := context.Background()
	var pgkitErrors []string
	try := func(sql string) {
		qctx, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
		defer cancel()
		if _, err := db.Exec(qctx, sql, argSecret); err != nil && !strings.Contains(sql, "::int") {
			pgkitErrors = append(pgkitErrors, err.Error())
		}
	}
	for range 3 {
		try(`SELECT pg_sleep(0.03), $1::text`) // slow: logged
		try(`SELECT $1::int`)                  // a server error quoting the value: logged, scrubbed
		try(`SELECT 1 FROM nope WHERE x = $1`) // an undefined table
	}
	proxy.SetLatency(50*time.Millisecond, 10*time.Millisecond)
	try(`SELECT $1::text`)
	proxy.Pause()
	try(`SELECT $1::text`)
	proxy.Resume()
	proxy.ResetAll()
	try(`SELECT $1::text`)
	proxy.SetLatency(0, 0)
	require.Eventually(t, func() bool { _, err := db.Exec(ctx, `SELECT $1::text`, argSecret); return err == nil }, 10*time.Second, 20*time.Millisecond)

	// Refused connections and broken URLs, with the password.
	for _, bad := range []string{strings.Replace(url, proxy.Addr(), "127.0.0.1:"+closedPort(t), 1), url + "&pool_max_conns=oops"} {
		_, err := pgkit.Open(ctx, pgkit.Config{URL: bad, Logger: slog.New(logs), ConnectTimeout: time.Second})
		require.Error(t, err)
		pgkitErrors = append(pgkitErrors, err.Error())
	}

	var bodies strings.Builder
	for _, h := range []http.Handler{pgkit.HealthHandler(db), pgkit.StatsHandler(db, func(*http.Request) bool { return true }),
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{})} {
		srv := httptest.NewServer(h)
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		bodies.Write(body)
	}
	slow := fmt.Sprint(db.SlowQueries())

	require.NotEmpty(t, db.SlowQueries())
	require.Contains(t, logs.text(), "query failed")
	for what, text := range map[string]string{"logs": logs.text(), "errors": strings.Join(pgkitErrors, "\n"), "HTTP bodies": bodies.String(), "slow queries": slow} {
		require.NotContains(t, text, password, what)
		require.NotContains(t, text, argSecret, what)
	}
}
