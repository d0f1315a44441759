package pgkit_test

import (
	"context"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// bouncerPoolSize is the server connections PgBouncer opens per database in
// these tests.
const bouncerPoolSize = 8

// openThroughBouncer opens a DB on a database of the test's own through a
// PgBouncer in transaction mode; it returns the DB and a direct one, for
// looking at the server from outside.
func openThroughBouncer(t *testing.T, cfg pgkit.Config) (db, direct *pgkit.DB, bouncerURL string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	direct = openTest(t, pgkit.Config{URL: url, MaxConns: 2})
	bouncerURL = pgtest.StartPgBouncer(t, url, pgtest.PgBouncerOptions{DefaultPoolSize: bouncerPoolSize})
	cfg.URL, cfg.PgBouncer = bouncerURL, true
	return openTest(t, cfg), direct, bouncerURL
}

func TestPgBouncerNeedsConfig(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	bouncer := pgtest.StartPgBouncer(t, url, pgtest.PgBouncerOptions{})
	_, err := pgkit.Open(context.Background(), pgkit.Config{URL: bouncer})
	require.ErrorContains(t, err, "unsupported startup parameter")
	require.ErrorContains(t, err, "set Config.PgBouncer")
}

func TestPgBouncerSessionSettingsAreTransactionLocal(t *testing.T) {
	t.Parallel()
	db, _, _ := openThroughBouncer(t, pgkit.Config{MaxConns: 4, StatementTimeout: 7 * time.Second,
		IdleInTransactionTimeout: 11 * time.Second, ApplicationName: "bouncer-test"})
	ctx := context.Background()

	require.Equal(t, pgx.QueryExecModeExec, db.Pool().Config().ConnConfig.DefaultQueryExecMode, "nothing prepared on the server")
	for _, param := range []string{"statement_timeout", "idle_in_transaction_session_timeout", "jit"} {
		require.NotContains(t, db.Pool().Config().ConnConfig.RuntimeParams, param, "not a startup parameter")
	}
	withMode := openTest(t, pgkit.Config{URL: db.Config().URL + "?default_query_exec_mode=cache_describe", PgBouncer: true, MaxConns: 1})
	require.Equal(t, pgx.QueryExecModeCacheDescribe, withMode.Pool().Config().ConnConfig.DefaultQueryExecMode, "the URL's mode wins")

	settings := func(q pgkit.Querier) (timeout, idle, jit, app string) {
		require.NoError(t, q.QueryRow(ctx, `SELECT current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout'),
			current_setting('jit'), current_setting('application_name')`).Scan(&timeout, &idle, &jit, &app))
		return
	}
	for _, opts := range [][]pgkit.TxOption{nil, {pgkit.ReadOnly()}, {pgkit.WithIsolation(pgx.Serializable)}} {
		require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
			timeout, idle, jit, app := settings(tx)
			require.Equal(t, []string{"7s", "11s", "off", "bouncer-test"}, []string{timeout, idle, jit, app})
			return nil
		}, opts...))
	}
	tx, err := db.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	timeout, _, _, _ := settings(tx)
	require.Equal(t, "7s", timeout, "BeginTx sets them too")
	var readOnly string
	require.NoError(t, tx.QueryRow(ctx, `SHOW transaction_read_only`).Scan(&readOnly))
	require.Equal(t, "on", readOnly, "and keeps the options")
	require.NoError(t, tx.Rollback(ctx))

	// Outside a transaction: the server's settings, since nothing was left
	// on any server connection. application_name is PgBouncer's to set.
	timeout, _, _, app := settings(db)
	require.Equal(t, "0", timeout, "the harness server's default")
	require.Equal(t, "bouncer-test", app)

	// The statement timeout is enforced inside transactions.
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 100; SELECT pg_sleep(2)`)
		return err
	})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "57014", pgErr.Code)
}

func TestPgBouncerWarnsWhenServerSettingsDiffer(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	bouncer := pgtest.StartPgBouncer(t, url, pgtest.PgBouncerOptions{})
	logs := &testkit.LogRecorder{}
	openTest(t, pgkit.Config{URL: bouncer, PgBouncer: true, MaxConns: 2, Logger: slog.New(logs)})
	attrs, ok := logs.Find("ALTER ROLE")
	require.True(t, ok, "no warning logged; got:\n%s", logs.Text())
	require.Contains(t, attrs["differences"].String(), "statement_timeout is 0, Config asks 1m0s")
	require.Contains(t, attrs["differences"].String(), "jit is on, Config asks off")

	// Settings on the database (or role) that match Config: no warning.
	url = pgtest.NewDatabase(t)
	direct := openTest(t, pgkit.Config{URL: url, MaxConns: 1})
	var name string
	require.NoError(t, direct.QueryRow(context.Background(), `SELECT current_database()`).Scan(&name))
	_, err := direct.Exec(context.Background(), `ALTER DATABASE `+pgx.Identifier{name}.Sanitize()+` SET statement_timeout = '60s';
		ALTER DATABASE `+pgx.Identifier{name}.Sanitize()+` SET jit = off;
		ALTER DATABASE `+pgx.Identifier{name}.Sanitize()+` SET idle_in_transaction_session_timeout = '5min'`)
	require.NoError(t, err)
	bouncer = pgtest.StartPgBouncer(t, url, pgtest.PgBouncerOptions{})
	quiet := &testkit.LogRecorder{}
	openTest(t, pgkit.Config{URL: bouncer, PgBouncer: true, MaxConns: 2, Logger: slog.New(quiet)})
	_, warned := quiet.Find("ALTER ROLE")
	require.False(t, warned, quiet.Text())
}

func TestPgBouncerSixtyFourClientsEightServerConnections(t *testing.T) {
	t.Parallel()
	db, direct, bouncer := openThroughBouncer(t, pgkit.Config{MaxConns: 64})
	ctx := context.Background()
	convID := newConversation(t, db)

	var mu sync.Mutex
	pids := map[int32]bool{}
	var group errgroup.Group
	for g := range 64 {
		group.Go(func() error {
			for i := range 20 {
				var pid int32
				var n int
				// Arguments of several types, each statement sent unnamed
				// (QueryExecModeExec) to whichever server connection
				// PgBouncer gives.
				err := db.QueryRow(ctx, `SELECT pg_backend_pid(), $1::int + length($2::text), pg_sleep(0.001)::text IS NOT NULL`,
					g, fmt.Sprint(i)).Scan(&pid, &n, new(bool))
				if err == nil && n != g+len(fmt.Sprint(i)) {
					err = fmt.Errorf("wrong answer %d", n)
				}
				if err == nil {
					err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
						_, err := tx.Exec(ctx, `INSERT INTO messages (tenant_id, conversation_id, role, content) VALUES ('acme', $1, 'user', $2)`,
							convID, fmt.Sprint(g, "-", i))
						return err
					})
				}
				if err != nil {
					return err
				}
				mu.Lock()
				pids[pid] = true
				mu.Unlock()
			}
			return nil
		})
	}
	require.NoError(t, group.Wait())
	require.LessOrEqual(t, len(pids), bouncerPoolSize, "PgBouncer multiplexed 64 clients onto its server connections")
	require.Greater(t, db.Stat().TotalConns(), int32(bouncerPoolSize), "more client connections than PgBouncer's server connections")
	var stored int
	require.NoError(t, direct.QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&stored))
	require.Equal(t, 64*20, stored)

	var serverConns int
	require.NoError(t, direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&serverConns))
	require.LessOrEqual(t, serverConns, bouncerPoolSize+1, "the direct pool's other connection, and PgBouncer's")

	admin, err := pgx.Connect(ctx, pgtest.PgBouncerAdminURL(bouncer))
	require.NoError(t, err)
	defer admin.Close(ctx)
	rows, err := admin.Query(ctx, `SHOW POOLS`)
	require.NoError(t, err)
	pools, err := pgx.CollectRows(rows, pgx.RowToMap)
	require.NoError(t, err)
	u, err := url.Parse(bouncer)
	require.NoError(t, err)
	found := false
	for _, p := range pools {
		if p["database"] == strings.TrimPrefix(u.Path, "/") {
			found = true
			require.Equal(t, "transaction", p["pool_mode"])
		}
	}
	require.True(t, found, "SHOW POOLS lists the test database: %v", pools)
}

func TestPgBouncerRetryTenantBulkAndWriter(t *testing.T) {
	t.Parallel()
	db, direct, _ := openThroughBouncer(t, pgkit.Config{MaxConns: 16})
	ctx := context.Background()
	convID := newConversation(t, db)

	// WithRetry: a serialization failure on the first attempt, a commit on
	// the second.
	attempts := 0
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		attempts++
		if attempts == 1 {
			_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$`)
			return err
		}
		return insertTenant(ctx, tx, "retried")
	}, pgkit.WithRetry(pgkit.RetryPolicy{BaseDelay: time.Millisecond})))
	require.Equal(t, 2, attempts)
	require.Equal(t, 1, tenantCount(t, direct, "retried"))

	// Tenant transactions: set_config(..., true) is transaction-local, so
	// 64 concurrent tenants over 8 server connections each see their own.
	var group errgroup.Group
	for g := range 64 {
		group.Go(func() error {
			id := fmt.Sprint("tenant-", g)
			for range 10 {
				var seen string
				err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
					return tx.QueryRow(ctx, `SELECT current_setting('app.tenant_id')`).Scan(&seen)
				}, pgkit.WithTenant(id))
				if err == nil && seen != id {
					err = fmt.Errorf("tenant %s saw %q", id, seen)
				}
				if err == nil {
					// Outside: no tenant left behind on the server connection.
					err = db.QueryRow(ctx, `SELECT coalesce(current_setting('app.tenant_id', true), '')`).Scan(&seen)
					if err == nil && seen != "" {
						err = fmt.Errorf("tenant %q left on a server connection", seen)
					}
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, group.Wait())

	// Bulk helpers.
	n, err := pgkit.CopyInsert(ctx, db, "messages", messages(convID, 1000, 0))
	require.NoError(t, err)
	require.EqualValues(t, 1000, n)
	ret := messages(convID, 500, 1000)
	require.NoError(t, pgkit.InsertReturning(ctx, db, "messages", ret))
	for _, m := range ret {
		require.NotZero(t, m.ID)
	}
	for i := range ret {
		ret[i].Tokens = -1
	}
	n, err = pgkit.UpdateMany(ctx, db, "messages", ret, []string{"id"}, pgkit.Columns("id", "tokens"))
	require.NoError(t, err)
	require.EqualValues(t, 500, n)
	n, err = pgkit.UpsertMany(ctx, db, "messages", ret, []string{"id"}, pgkit.Columns("id", "tenant_id", "conversation_id", "role", "content", "tokens"))
	require.NoError(t, err)
	require.EqualValues(t, 500, n)
	var updated int
	require.NoError(t, direct.QueryRow(ctx, `SELECT count(*) FROM messages WHERE tokens = -1`).Scan(&updated))
	require.Equal(t, 500, updated)

	// The writer.
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", BatchSize: 100, FlushInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	accepted := produce(t, w, convID, 8, 250)
	require.NoError(t, w.Close(ctx))
	var written int
	require.NoError(t, direct.QueryRow(ctx, `SELECT count(*) FROM messages WHERE client_id IS NOT NULL`).Scan(&written))
	require.EqualValues(t, accepted, written)
	require.EqualValues(t, 2000, written)
}

func TestPgBouncerRowLevelSecurity(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := openTest(t, pgkit.Config{URL: url, MaxConns: 2})
	ctx := context.Background()
	_, err := admin.Exec(ctx, rlsPolicy+`
		INSERT INTO tenants (id, name) VALUES ('a', 'A'), ('b', 'B');
		INSERT INTO users (tenant_id, email) VALUES ('a', 'ann@a'), ('b', 'bob@b');
		INSERT INTO conversations (tenant_id, user_id, title) SELECT tenant_id, id, 'chat of ' || tenant_id FROM users;`)
	require.NoError(t, err)
	bouncer := pgtest.StartPgBouncer(t, appRole(t, admin, url), pgtest.PgBouncerOptions{DefaultPoolSize: 2})
	app := openTest(t, pgkit.Config{URL: bouncer, PgBouncer: true, MaxConns: 8})

	var group errgroup.Group
	for g := range 16 {
		group.Go(func() error {
			tenant := []string{"a", "b"}[g%2]
			for range 10 {
				var titles []string
				err := pgkit.InTx(ctx, app, func(tx pgkit.Tx) error {
					rows, err := tx.Query(ctx, `SELECT title FROM conversations`)
					if err != nil {
						return err
					}
					titles, err = pgx.CollectRows(rows, pgx.RowTo[string])
					return err
				}, pgkit.WithTenant(tenant))
				if err == nil && (len(titles) != 1 || titles[0] != "chat of "+tenant) {
					err = fmt.Errorf("tenant %s saw %v", tenant, titles)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, group.Wait())
	var leaked int
	require.NoError(t, app.QueryRow(ctx, `SELECT count(*) FROM conversations`).Scan(&leaked))
	require.Zero(t, leaked, "outside a tenant transaction, no tenant is set on any server connection")
}

// TestPgBouncerCancel: a canceled statement through PgBouncer ends the
// call at once, the server stops the statement, and PgBouncer (which pgx's
// keep-the-connection cancel handler would crash) and the pool go on
// serving.
func TestPgBouncerCancel(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	direct := openTest(t, pgkit.Config{URL: url, MaxConns: 2})
	bouncer := pgtest.StartPgBouncer(t, url, pgtest.PgBouncerOptions{DefaultPoolSize: 2})
	db := openTest(t, pgkit.Config{URL: bouncer, PgBouncer: true, MaxConns: 4})
	ctx := context.Background()
	var err error

	for _, inTx := range []bool{false, true, false} {
		qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		start := time.Now()
		if inTx {
			err = pgkit.InTx(qctx, db, func(tx pgkit.Tx) error {
				_, err := tx.Exec(qctx, `SELECT pg_sleep(30)`)
				return err
			})
		} else {
			_, err = db.Exec(qctx, `SELECT pg_sleep(30)`)
		}
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 5*time.Second, "the call ends at its deadline, not the statement's")
	}
	canceled := time.Now()
	require.Eventually(t, func() bool {
		var sleeping int
		require.NoError(t, direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'`).Scan(&sleeping))
		return sleeping == 0
	}, 2*time.Second, 20*time.Millisecond, "the server stopped the canceled statements")
	t.Logf("stopped %s after the last cancel", time.Since(canceled))
	for range 10 {
		var one int
		require.NoError(t, db.QueryRow(ctx, `SELECT 1`).Scan(&one), "PgBouncer and the pool still serve")
		require.Equal(t, 1, one)
	}
}
