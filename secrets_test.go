package pgkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// secretItem is a row of secret_items: a text key, an enum and a uuid, the
// columns whose refusals quote the value.
type secretItem struct {
	K    string `db:"k"`
	Mood string `db:"mood"`
	Ref  string `db:"ref"`
}

const secretItemsDDL = `CREATE TYPE mood AS ENUM ('calm');
	CREATE TABLE secret_items (k text PRIMARY KEY, mood mood, ref uuid)`

const zeroUUID = "00000000-0000-0000-0000-000000000000"

// TestLogArgsScrubsServerMessages: with LogArgs on and the default
// RedactArg, a failed statement's log line shows the arguments' types, the
// SQLSTATE and the server's message with the quoted value replaced by "?",
// and no DETAIL: neither the value the server quotes back nor the key it
// shows in DETAIL.
func TestLogArgsScrubsServerMessages(t *testing.T) {
	t.Parallel()
	const secret = "log-args-secret-7731"
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), LogArgs: true, MaxConns: 2})
	ctx := context.Background()
	_, err := db.Exec(ctx, secretItemsDDL)
	require.NoError(t, err)

	cases := []struct {
		name, sql, sqlstate, logged string
	}{
		{"bad_int", `SELECT $1::int`, "22P02", `invalid input syntax for type integer: "?"`},
		{"bad_enum", `SELECT $1::mood`, "22P02", `invalid input value for enum mood: "?"`},
		{"bad_uuid", `INSERT INTO secret_items (k, ref) VALUES ('u', $1)`, "22P02", `invalid input syntax for type uuid: "?"`},
		{"dup_key", `INSERT INTO secret_items (k) VALUES ($1), ($1)`, "23505", `duplicate key value violates unique constraint "secret_items_pkey"`},
	}
	for _, c := range cases {
		_, err := db.Exec(pgkit.WithQueryName(ctx, c.name), c.sql, secret)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, c.name)
		require.Equal(t, c.sqlstate, pgErr.Code)
		if c.name == "dup_key" {
			require.Contains(t, pgErr.Detail, secret, "the server does show the key in DETAIL")
		}
		attrs, ok := logs.Find("query failed", "name", c.name)
		require.True(t, ok, logs.Text())
		require.Equal(t, c.sqlstate, attrs["sqlstate"].String())
		require.Equal(t, c.logged, attrs["error"].String(), "scrubbed, and no DETAIL")
		require.Equal(t, []string{"string(len=20)"}, attrs["args"].Any(), "args in their redacted form")
	}
	require.NotContains(t, logs.Text(), secret)
	require.NotContains(t, logs.Text(), "Key (")
}

// TestWriterDefaultOnErrorScrubbed: items refused by an enum or a uuid
// column, on the COPY path and with DedupeKey, reach the default OnError,
// whose log line has the SQLSTATE and the server's message without the
// value; so do pgkit's own lines for the failed statements (the COPY that
// pgx aborts because it could not encode the uuid included).
func TestWriterDefaultOnErrorScrubbed(t *testing.T) {
	t.Parallel()
	const badMood, badRef = "writer-mood-secret-51", "writer-uuid-secret-52"
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), MaxConns: 2})
	ctx := context.Background()
	_, err := db.Exec(ctx, secretItemsDDL)
	require.NoError(t, err)

	for _, dedupe := range []string{"", "k"} {
		w, err := pgkit.NewWriter(db, pgkit.WriterConfig[secretItem]{Table: "secret_items", Name: "secrets" + dedupe,
			DedupeKey: dedupe, FlushInterval: time.Millisecond})
		require.NoError(t, err)
		require.NoError(t, w.Write(ctx, secretItem{K: "ok" + dedupe, Mood: "calm", Ref: zeroUUID}))
		require.NoError(t, w.Write(ctx, secretItem{K: "m" + dedupe, Mood: badMood, Ref: zeroUUID}))
		require.NoError(t, w.Write(ctx, secretItem{K: "r" + dedupe, Mood: "calm", Ref: badRef}))
		err = w.Close(ctx)
		require.ErrorContains(t, err, "2 items went to OnError")
	}
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM secret_items`).Scan(&n))
	require.Equal(t, 2, n, "the good item of each writer is written")

	for _, name := range []string{"secrets", "secretsk"} {
		attrs, ok := logs.Find("writer could not write items", "writer", name)
		require.True(t, ok, logs.Text())
		require.Contains(t, attrs["error"].String(), "SQLSTATE", "the line keeps the SQLSTATE")
	}
	_, ok := logs.Find("writer could not write items", "error", `invalid input value for enum mood: "?" (SQLSTATE 22P02)`)
	require.True(t, ok, logs.Text())
	require.NotContains(t, logs.Text(), badMood)
	require.NotContains(t, logs.Text(), badRef)
}

// TestHealthHandlerPublicReason: when the server refuses the check because
// the role or the database does not exist, HealthHandler's public 503 body
// says what kind of failure it was, never the role's or the database's name
// (nor the host); the full error is for operators: in HealthReport.Detail,
// the log and StatsHandler.
func TestHealthHandlerPublicReason(t *testing.T) {
	t.Parallel()
	const role, dbName = "no_such_role_6612", "no_such_db_6613"
	base := pgtest.NewDatabase(t)
	cfg, err := pgconn.ParseConfig(base)
	require.NoError(t, err)
	cases := []struct {
		url, reason, name string
	}{
		{strings.Replace(base, "postgres://"+cfg.User+"@", "postgres://"+role+"@", 1), "authentication or authorization refused (SQLSTATE 28000)", role},
		{strings.Replace(base, "/"+cfg.Database, "/"+dbName, 1), "database does not exist (SQLSTATE 3D000)", dbName},
	}
	for _, c := range cases {
		require.NotEqual(t, base, c.url)
		logs := &testkit.LogRecorder{}
		db, err := pgkit.Open(context.Background(), pgkit.Config{URL: c.url, LazyConnect: true, MaxConns: 1,
			HealthTimeout: 2 * time.Second, Logger: slog.New(logs)})
		require.NoError(t, err)
		t.Cleanup(db.Close)

		r := db.Health(context.Background())
		require.Equal(t, pgkit.StatusDown, r.Status)
		require.Equal(t, c.reason, r.Reason)
		require.Contains(t, r.Detail, c.name, "operators see what failed")

		srv := httptest.NewServer(pgkit.HealthHandler(db))
		code, body := get(t, srv.URL, "")
		srv.Close()
		require.Equal(t, http.StatusServiceUnavailable, code)
		var got map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &got))
		require.Equal(t, c.reason, got["reason"])
		require.NotContains(t, body, c.name)
		require.NotContains(t, body, "127.0.0.1")
		require.NotContains(t, body, "detail")

		stats := httptest.NewServer(pgkit.StatsHandler(db, pgkit.BearerToken("ops")))
		code, body = get(t, stats.URL, "Bearer ops")
		stats.Close()
		require.Equal(t, http.StatusOK, code)
		var st struct {
			Status, Reason, Detail string
		}
		require.NoError(t, json.Unmarshal([]byte(body), &st))
		require.Equal(t, "down", st.Status)
		require.Equal(t, c.reason, st.Reason)
		require.Contains(t, st.Detail, c.name)

		attrs, ok := logs.Find("health check failed")
		require.True(t, ok, logs.Text())
		require.Contains(t, attrs["detail"].String(), c.name)
	}
}

// TestOpenErrorsHoldNoPassword: the errors Open returns for a URL or a
// replica URL it cannot parse, and for a refused connection, hold the
// password nowhere: not in their text, not in %#v or %+v of any error of the
// chain, not in a field that errors.As would hand out (pgconn's
// ParseConfigError.ConnString, ConnectError.Config.Password). They still
// match *pgkit.ConfigError and *pgconn.ConnectError.
func TestOpenErrorsHoldNoPassword(t *testing.T) {
	t.Parallel()
	const secret = "Open-s3cret-pw-9917"
	port := closedPort(t)
	good := pgtest.NewDatabase(t)
	for name, cfg := range map[string]pgkit.Config{
		"unparsable URL":     {URL: "postgres://postgres:" + secret + "@127.0.0.1:badport/db"},
		"bad pool parameter": {URL: "postgres://postgres:" + secret + "@127.0.0.1/db?pool_max_conns=x"},
		"bad DSN parameter":  {URL: "host=127.0.0.1 password=" + secret + " connect_timeout=x"},
		"unparsable replica": {URL: good, ReplicaURLs: []string{"postgres://postgres:" + secret + "@127.0.0.1:badport/db"}},
		"refused":            {URL: "postgres://postgres:" + secret + "@127.0.0.1:" + port + "/db", ConnectTimeout: time.Second},
	} {
		_, err := pgkit.Open(context.Background(), cfg)
		require.Error(t, err, name)
		require.NotContains(t, pgkit.ReachableText(err), secret, name)
		var pce *pgconn.ParseConfigError
		require.False(t, errors.As(err, &pce), "%s: pgconn's ParseConfigError (ConnString: the raw URL) is not in the chain", name)
		if name == "refused" {
			var ce *pgconn.ConnectError
			require.ErrorAs(t, err, &ce)
			require.Empty(t, ce.Config.Password)
		} else {
			var cerr *pgkit.ConfigError
			require.ErrorAs(t, err, &cerr, name)
			require.Contains(t, cerr.Field, "URL")
			require.Contains(t, err.Error(), "cannot parse", name)
		}
	}
}

// TestHealthHandlerHidesReplicas: a replica that is down is in no part of
// HealthHandler's status body; its details body shows it as not usable,
// with a generic reason, without its address, user or database;
// StatsHandler gives operators all three.
func TestHealthHandlerHidesReplicas(t *testing.T) {
	t.Parallel()
	const user, dbName = "replica_user_4471", "replica_db_4472"
	addr := "127.0.0.1:" + closedPort(t)
	db := openTest(t, pgkit.Config{URL: pgtest.NewDatabase(t), MaxConns: 2, HealthTimeout: 2 * time.Second,
		ReplicaURLs: []string{"postgres://" + user + ":pw-4473@" + addr + "/" + dbName + "?sslmode=disable"}})
	require.Len(t, db.Replicas(), 1)
	require.False(t, db.Replicas()[0].Usable)

	srv := httptest.NewServer(pgkit.HealthHandler(db, pgkit.HealthDetails(pgkit.BearerToken("ops"))))
	code, body := get(t, srv.URL, "")
	require.Equal(t, http.StatusOK, code, "a replica down does not make the database down")
	require.JSONEq(t, `{"status":"up"}`, body)
	code, body = get(t, srv.URL, "Bearer ops")
	srv.Close()
	require.Equal(t, http.StatusOK, code, "a replica down does not make the database down")
	var public struct {
		Replicas []map[string]any `json:"replicas"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &public))
	require.Len(t, public.Replicas, 1)
	require.Equal(t, false, public.Replicas[0]["usable"])
	require.Equal(t, "cannot reach the server: connection refused", public.Replicas[0]["reason"])
	for _, s := range []string{addr, user, dbName, "pw-4473", "detail", "addr"} {
		require.NotContains(t, body, s)
	}

	stats := httptest.NewServer(pgkit.StatsHandler(db, pgkit.BearerToken("ops")))
	code, body = get(t, stats.URL, "Bearer ops")
	stats.Close()
	require.Equal(t, http.StatusOK, code)
	var private struct {
		Replicas []struct{ Addr, Reason, Detail string } `json:"replicas"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &private))
	require.Len(t, private.Replicas, 1)
	require.Equal(t, addr, private.Replicas[0].Addr)
	require.Equal(t, "cannot reach the server: connection refused", private.Replicas[0].Reason)
	require.Contains(t, private.Replicas[0].Detail, user)
	require.NotContains(t, body, "pw-4473")
}

// TestReplicaDetailScrubbed: a statement sent through Reader fails with an
// error that prints its argument (pgx could not encode it). Whatever the
// replica's status makes of it, the value is in no log line, no
// ReplicaStatus and no StatsHandler body.
func TestReplicaDetailScrubbed(t *testing.T) {
	t.Parallel()
	const secret = "replica-arg-secret-8841"
	logs := &testkit.LogRecorder{}
	s := startReplicas(t, 1)
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, MaxConns: 2, Logger: slog.New(logs)})
	require.True(t, db.Replicas()[0].Usable)

	_, err := db.Reader().Exec(context.Background(), `SELECT $1::int`, struct{ S string }{secret})
	require.ErrorContains(t, err, secret, "pgx's own error prints the value")

	stats := httptest.NewServer(pgkit.StatsHandler(db, pgkit.BearerToken("ops")))
	_, body := get(t, stats.URL, "Bearer ops")
	stats.Close()
	require.Contains(t, logs.Text(), "unable to encode ? into binary format for int4")
	for what, text := range map[string]string{"logs": logs.Text(), "replicas": fmt.Sprintf("%+v", db.Replicas()), "StatsHandler": body} {
		require.NotContains(t, text, secret, what)
	}
}

// TestInsightsHoldNoSecret: an argument value, a literal of the SQL, a value
// stored in the rows (which the planner's statistics hold) and the URL's
// password reach nothing that query insights produce: the N+1 report (log,
// Server-Timing, RequestStats), the slow statement's plan and its verified
// index suggestion (log, SlowQueries), and the server's view (DB.ServerView,
// StatsHandler's ?server, the dashboard's data and server paths), read while
// a session holding a lock blocks a statement that carries the literal. The
// server preloads pg_stat_statements and has HypoPG.
func TestInsightsHoldNoSecret(t *testing.T) {
	t.Parallel()
	const (
		arg      = "insight-arg-sekret-3f1"
		literal  = "insight-literal-sekret-3f2"
		stored   = "insight-row-sekret-3f3"
		password = "insight-pw-sekret-3f4"
	)
	cluster := pgtest.StartCluster(t, pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"))
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cluster.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	_, err = admin.Exec(ctx, `CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg;
		CREATE TABLE notes (id int, owner_id int, body text);
		INSERT INTO notes SELECT i, i % 500, CASE WHEN i % 10 = 7 THEN '`+stored+`' ELSE 'note' END FROM generate_series(1, 50000) i;
		ANALYZE notes`)
	require.NoError(t, err, "pg_stat_statements and HypoPG: install postgresql-15-hypopg (scripts/provision.sh does)")

	logs := &testkit.LogRecorder{}
	url := strings.Replace(cluster.URL(), "postgres@", "postgres:"+password+"@", 1)
	require.NotEqual(t, cluster.URL(), url)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2, Logger: slog.New(logs), LogArgs: true,
		SlowQueryThreshold: time.Microsecond, ExplainSlowQueries: true})

	const loop = `SELECT count(*) FROM notes WHERE owner_id = $1 AND body <> $2 AND body <> '` + literal + `'`
	var report []pgkit.NPlusOne
	handler := pgkit.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for owner := range 12 {
			var n int
			require.NoError(t, db.QueryRow(r.Context(), loop, owner, arg).Scan(&n))
		}
		stats, _ := pgkit.StatsFrom(r.Context())
		report = stats.NPlusOne
	}))
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/notes", nil))
	timing := rec.Header().Get("Server-Timing")
	require.Contains(t, timing, "N+1")
	require.Len(t, report, 1)
	require.Eventually(t, func() bool {
		for _, q := range db.SlowQueries() {
			if q.Plan != nil && len(q.Plan.Suggestions) > 0 && q.Plan.Suggestions[0].Verified {
				return true
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond, "a verified suggestion for the loop's statement")

	// A lock held in an idle transaction blocks a statement with the literal.
	locker, err := pgx.Connect(ctx, cluster.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = locker.Close(context.Background()) })
	_, err = locker.Exec(ctx, `BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() {
		_, err := admin.Exec(ctx, `SELECT count(*) FROM notes WHERE body = '`+literal+`'`)
		waited <- err
	}()
	t.Cleanup(func() { _, _ = locker.Exec(context.Background(), `ROLLBACK`); <-waited })
	require.Eventually(t, func() bool {
		var waiting bool
		return db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock')`).Scan(&waiting) == nil && waiting
	}, 10*time.Second, 10*time.Millisecond)

	view, err := db.ServerView(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, view.Statements, "pg_stat_statements is read")
	require.NotEmpty(t, view.Blocked, "the blocked statement is listed")
	require.Contains(t, view.Blocked[0].Query, "body = ?", "its literal masked")

	serve := func(h http.Handler, path string) string {
		srv := httptest.NewServer(h)
		defer srv.Close()
		code, body := get(t, srv.URL+path, "Bearer ops")
		require.Equal(t, http.StatusOK, code, path)
		return body
	}
	dashboard := http.StripPrefix("/debug/pgkit", pgkit.DashboardHandler(db, pgkit.BearerToken("ops")))
	slow, err := json.Marshal(db.SlowQueries())
	require.NoError(t, err)
	for what, text := range map[string]string{
		"logs":                logs.Text(),
		"Server-Timing":       timing,
		"RequestStats":        pgkit.ReachableText(report),
		"SlowQueries":         string(slow) + pgkit.ReachableText(db.SlowQueries()),
		"ServerView":          pgkit.ReachableText(view),
		"StatsHandler?server": serve(pgkit.StatsHandler(db, pgkit.BearerToken("ops")), "?server"),
		"dashboard data":      serve(dashboard, "/debug/pgkit/data"),
		"dashboard server":    serve(dashboard, "/debug/pgkit/server"),
	} {
		for _, secret := range []string{arg, literal, stored, password} {
			require.NotContains(t, text, secret, what)
		}
	}
}
