package pgkit_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestServerView reads the server's view as a pg_monitor role, without
// superuser, on a server with pg_stat_statements preloaded, while a session
// holds a lock in an idle transaction, another waits for it, and a third
// runs a long statement with a secret literal.
func TestServerView(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t, pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"))
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cluster.URL())
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, `CREATE EXTENSION pg_stat_statements;
		CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
		CREATE TABLE t (k int, v int);
		INSERT INTO t SELECT i, i % 100 FROM generate_series(1, 20000) i;
		CREATE INDEX t_k ON t (k); CREATE INDEX t_k_v ON t (k, v); CREATE INDEX t_v ON t (v);
		GRANT SELECT ON t TO watcher; ANALYZE t`)
	require.NoError(t, err)

	url := strings.Replace(cluster.URL(), "postgres@", "watcher@", 1)
	db := openTest(t, pgkit.Config{URL: url, ApplicationName: "watcher-app"})
	var n int
	for range 3 {
		require.NoError(t, db.QueryRow(pgkit.WithQueryName(ctx, "t_by_v_plus"), `SELECT count(*) FROM t WHERE v + 0 = $1`, 7).Scan(&n))
	}
	_, err = db.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
	require.NoError(t, err)

	connect := func(app string) *pgx.Conn {
		c, err := pgx.Connect(ctx, cluster.URL()+"&application_name="+app)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	locker := connect("locker")
	_, err = locker.Exec(ctx, `BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	waiter, sleeper := connect("waiter"), connect("sleeper")
	waited, slept := make(chan error, 1), make(chan error, 1)
	go func() { _, err := waiter.Exec(ctx, `SELECT count(*) FROM t`); waited <- err }()
	go func() { _, err := sleeper.Exec(ctx, `SELECT pg_sleep(30), 'sekret-literal-0b7'`); slept <- err }()

	var v *pgkit.ServerView
	for deadline := time.Now().Add(15 * time.Second); ; <-time.After(200 * time.Millisecond) {
		v, err = db.ServerView(ctx)
		require.NoError(t, err)
		if len(v.Blocked) > 0 && len(v.LongRunning) > 0 && len(v.SeqScanTables) > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the view never showed the sessions and the scans: %+v", v)
	}

	require.Equal(t, "waiter", v.Blocked[0].Application)
	require.Equal(t, []pgkit.BlockingSession{{PID: int32(locker.PgConn().PID()), Application: "locker"}}, v.Blocked[0].BlockedBy)
	require.True(t, slices.ContainsFunc(v.IdleInTransaction, func(s pgkit.ServerSession) bool { return s.Application == "locker" }))
	require.Equal(t, "sleeper", v.LongRunning[0].Application)
	require.Equal(t, "SELECT pg_sleep(?), ?", v.LongRunning[0].Query, "literals masked")
	require.True(t, slices.ContainsFunc(v.Statements, func(s pgkit.ServerStatement) bool {
		return s.Name == "t_by_v_plus" && s.Calls >= 3 && s.Query == "SELECT count(*) FROM t WHERE v + $2 = $1"
	}), "pgkit's name beside the server's row: %+v", v.Statements)
	require.Contains(t, v.UnusedIndexes, pgkit.ServerIndex{Table: "t", Index: "t_v", Bytes: v.UnusedIndexes[slices.IndexFunc(v.UnusedIndexes,
		func(i pgkit.ServerIndex) bool { return i.Index == "t_v" })].Bytes})
	require.True(t, slices.ContainsFunc(v.DuplicateIndexes, func(d pgkit.DuplicateIndex) bool { return d.Index == "t_k" && d.Of == "t_k_v" }))
	require.Equal(t, "t", v.SeqScanTables[0].Table)
	require.Positive(t, v.MaxConnections)
	require.True(t, slices.ContainsFunc(v.Connections, func(c pgkit.ServerConnections) bool { return c.Application == "waiter" && c.State == "active" }))

	again, err := db.ServerView(ctx)
	require.NoError(t, err)
	require.Same(t, v, again, "kept for a few seconds")

	// Through StatsHandler, as JSON, with nothing secret in it.
	srv := httptest.NewServer(pgkit.StatsHandler(db, pgkit.BearerToken("tok")))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"?server", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NotContains(t, string(body), "sekret-literal")
	var got struct {
		Server map[string]any `json:"server"`
	}
	require.NoError(t, json.Unmarshal(body, &got))
	require.NotEmpty(t, got.Server["blocked"])
	c := &schemaCheck{t: t, schemas: docSchemas(t), used: map[string]bool{}}
	c.body("StatsHandler?server", "Stats body", body)
	c.allObservedOf("ServerStatement", "ServerSession", "BlockingSession", "DuplicateIndex", "SeqScannedTable")

	_, err = locker.Exec(ctx, `ROLLBACK`)
	require.NoError(t, err)
	require.NoError(t, <-waited)
	_, err = admin.Exec(ctx, `SELECT pg_cancel_backend($1)`, sleeper.PgConn().PID())
	require.NoError(t, err)
	require.Error(t, <-slept, "canceled")
}

// TestServerViewWithoutPgStatStatements: the rest is read, and a note says
// what to install.
func TestServerViewWithoutPgStatStatements(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	v, err := db.ServerView(context.Background())
	require.NoError(t, err)
	require.Nil(t, v.Statements)
	require.Contains(t, v.StatementsNote, "CREATE EXTENSION pg_stat_statements")
	require.Positive(t, v.MaxConnections)
}
