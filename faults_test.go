package pgkit_test

import (
	"context"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
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
	"github.com/jackc/pgx/v5/pgconn"
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
	convID := newConversation(t, db)

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
	convID := newConversation(t, db)
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
	names := testkit.Gather(t, reg).LabelValues("pgkit_query_duration_seconds", "name")
	require.LessOrEqual(t, len(names), 50+2, "at most MaxQueryNames, other and pgkit_health")
	require.Contains(t, names, "other")
}

// TestNoSecretsUnderFaults: a password in the URL and a secret argument in
// every statement, through refusals, a silent partition, resets and server
// errors that quote the value or show it in DETAIL (with LogArgs off and
// on), and through a Writer whose items an enum and a uuid column refuse.
// Nothing pgkit says (log lines, errors it makes, Open's errors down to every
// field of their chains, metrics, HTTP bodies) contains either; the public
// health body names no role, database or host either. (A server error
// returned to the caller keeps the server's own message, which can quote a
// value: see README.)
func TestNoSecretsUnderFaults(t *testing.T) {
	t.Parallel()
	const password, argSecret = "Pw-under-fire-31337", "arg-secret-4242"
	url, proxy := proxied(t)
	url = withPassword(t, url, password)
	logs := &testkit.LogRecorder{}
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2, Logger: slog.New(logs), Registerer: reg, SlowQueryThreshold: 20 * time.Millisecond,
		AcquireTimeout: 300 * time.Millisecond, ConnectTimeout: 300 * time.Millisecond, HealthTimeout: 300 * time.Millisecond, LeakThreshold: time.Minute})
	withArgs := openTest(t, pgkit.Config{URL: url, MaxConns: 2, Logger: slog.New(logs), LogArgs: true, SlowQueryThreshold: 20 * time.Millisecond})
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TYPE mood AS ENUM ('calm'); CREATE TABLE secret_items (k text PRIMARY KEY, mood mood, ref uuid)`)
	require.NoError(t, err)
	var pgkitErrors []string
	// serverShows: the server's error shows the value (quoted in its
	// message, or in DETAIL), and the caller gets that error as it is (by
	// design); only pgkit's log line must not show it.
	try := func(q pgkit.Querier, sql string, serverShows bool) {
		qctx, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
		defer cancel()
		if _, err := q.Exec(qctx, sql, argSecret); err != nil && !serverShows {
			pgkitErrors = append(pgkitErrors, fmt.Sprintf("%v\n%+v\n%#v", err, err, err))
		}
	}
	for range 3 {
		for _, q := range []pgkit.Querier{db, withArgs} {
			try(q, `SELECT pg_sleep(0.03), $1::text`, false)                   // slow: logged
			try(q, `SELECT $1::int`, true)                                     // a server error quoting the value: logged, scrubbed
			try(q, `SELECT $1::mood`, true)                                    // an enum refusing the value
			try(q, `INSERT INTO secret_items (k, ref) VALUES ('u', $1)`, true) // a uuid column refusing it
			try(q, `INSERT INTO secret_items (k) VALUES ($1), ($1)`, true)     // the key in DETAIL
			try(q, `SELECT 1 FROM nope WHERE x = $1`, false)                   // an undefined table
		}
	}
	// The Writer's default OnError, on the COPY path and with DedupeKey.
	for _, dedupe := range []string{"", "k"} {
		w, err := pgkit.NewWriter(db, pgkit.WriterConfig[secretItem]{Table: "secret_items", Name: "secrets" + dedupe, DedupeKey: dedupe})
		require.NoError(t, err)
		require.NoError(t, w.Write(ctx, secretItem{K: "m" + dedupe, Mood: argSecret, Ref: zeroUUID}))
		require.NoError(t, w.Write(ctx, secretItem{K: "r" + dedupe, Mood: "calm", Ref: argSecret}))
		require.ErrorContains(t, w.Close(ctx), "2 items went to OnError") // the server's error, by design
	}
	proxy.SetLatency(50*time.Millisecond, 10*time.Millisecond)
	try(db, `SELECT $1::text`, false)
	proxy.Pause()
	try(db, `SELECT $1::text`, false)
	proxy.Resume()
	proxy.ResetAll()
	try(db, `SELECT $1::text`, false)
	proxy.SetLatency(0, 0)
	require.Eventually(t, func() bool { _, err := db.Exec(ctx, `SELECT $1::text`, argSecret); return err == nil }, 10*time.Second, 20*time.Millisecond)

	// Open refused, and broken URLs, with the password: every text
	// reachable from the error (each error of the chain with %v, %+v and
	// %#v, and every string field, exported or not).
	var openErrors strings.Builder
	for _, bad := range []pgkit.Config{
		{URL: strings.Replace(url, proxy.Addr(), "127.0.0.1:"+closedPort(t), 1)},
		{URL: url + "&pool_max_conns=oops"},
		{URL: strings.Replace(url, proxy.Addr(), "127.0.0.1:badport", 1)},
		{URL: "host=127.0.0.1 password=" + password + " connect_timeout=x"},
		{URL: url, ReplicaURLs: []string{strings.Replace(url, proxy.Addr(), "127.0.0.1:badport", 1)}},
	} {
		bad.Logger, bad.ConnectTimeout = slog.New(logs), time.Second
		_, err := pgkit.Open(ctx, bad)
		require.Error(t, err)
		openErrors.WriteString(pgkit.ReachableText(err))
	}
	require.Contains(t, openErrors.String(), "cannot parse", "the scan saw the parse errors")

	// Health refused by the server for a role and a database that do not
	// exist: the public body says what kind of failure, not which.
	const role, dbName = "role_under_fire_31337", "db_under_fire_31337"
	var publicBodies strings.Builder
	for _, u := range []string{strings.Replace(url, "postgres://postgres:", "postgres://"+role+":", 1), replaceDatabase(t, url, dbName)} {
		down, err := pgkit.Open(ctx, pgkit.Config{URL: u, LazyConnect: true, MaxConns: 1, Logger: slog.New(logs), HealthTimeout: 2 * time.Second})
		require.NoError(t, err)
		body := serve(t, pgkit.HealthHandler(down))
		require.Contains(t, body, `"status":"down"`)
		publicBodies.WriteString(body)
		down.Close()
	}
	publicBodies.WriteString(serve(t, pgkit.HealthHandler(db)))

	var bodies strings.Builder
	for _, h := range []http.Handler{pgkit.StatsHandler(db, func(*http.Request) bool { return true }), promhttp.HandlerFor(reg, promhttp.HandlerOpts{})} {
		bodies.WriteString(serve(t, h))
	}
	slow := fmt.Sprint(db.SlowQueries(), withArgs.SlowQueries())

	require.NotEmpty(t, db.SlowQueries())
	for _, line := range []string{"query failed", "args=[string(len=15)]", "writer could not write items", `invalid input value for enum mood: "?"`} {
		require.Contains(t, logs.Text(), line, "the scan saw these paths")
	}
	for what, text := range map[string]string{"logs": logs.Text(), "errors": strings.Join(pgkitErrors, "\n"), "Open's errors": openErrors.String(),
		"HTTP bodies": bodies.String() + publicBodies.String(), "slow queries": slow} {
		require.NotContains(t, text, password, what)
		require.NotContains(t, text, argSecret, what)
	}
	for _, name := range []string{role, dbName, "127.0.0.1", proxy.Addr()} {
		require.NotContains(t, publicBodies.String(), name, "the public health body")
	}
}

// serve returns the body h answers to a GET.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// replaceDatabase returns url with its database name replaced by name.
func replaceDatabase(t *testing.T, url, name string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(url)
	require.NoError(t, err)
	out := strings.Replace(url, "/"+cfg.Database+"?", "/"+name+"?", 1)
	require.NotEqual(t, url, out)
	return out
}
