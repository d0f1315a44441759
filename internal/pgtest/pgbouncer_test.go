package pgtest

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// pgBouncerShow runs a SHOW command on PgBouncer's admin console and returns
// its rows as column name -> text value.
func pgBouncerShow(t *testing.T, ctx context.Context, adminURL, command string) []map[string]string {
	t.Helper()
	conn := connect(t, ctx, adminURL)
	rows, err := conn.Query(ctx, command)
	require.NoError(t, err)
	defer rows.Close()
	var out []map[string]string
	for rows.Next() {
		m := map[string]string{}
		for i, raw := range rows.RawValues() { // the simple protocol: text
			m[rows.FieldDescriptions()[i].Name] = string(raw)
		}
		out = append(out, m)
	}
	require.NoError(t, rows.Err())
	return out
}

// pgBouncerTestDatabase returns the database of a postgres:// URL.
func pgBouncerTestDatabase(t *testing.T, connURL string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(connURL)
	require.NoError(t, err)
	return cfg.Database
}

func TestStartPgBouncer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := NewDatabase(t)
	bouncer := StartPgBouncer(t, db, PgBouncerOptions{})

	// The same URL but for host:port.
	du, err := url.Parse(db)
	require.NoError(t, err)
	bu, err := url.Parse(bouncer)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", bu.Hostname())
	require.NotEqual(t, du.Port(), bu.Port())
	bu.Host = du.Host
	require.Equal(t, db, bu.String())

	// A query goes through to the target server's database.
	target, err := pgconn.ParseConfig(db)
	require.NoError(t, err)
	conn := connect(t, ctx, withExecMode(bouncer, "exec"))
	var (
		dbName, user string
		port         int
	)
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_database(), current_user, inet_server_port()").Scan(&dbName, &user, &port))
	require.Equal(t, target.Database, dbName)
	require.Equal(t, target.User, user)
	require.Equal(t, int(target.Port), port, "the query ran on the target server")

	// The admin console, on the same port, shows the pool, in transaction
	// mode, while the client above is connected.
	admin := PgBouncerAdminURL(bouncer)
	require.Equal(t, "pgbouncer", pgBouncerTestDatabase(t, admin))
	var pool map[string]string
	for _, row := range pgBouncerShow(t, ctx, admin, "SHOW POOLS") {
		if row["database"] == target.Database && row["user"] == target.User {
			pool = row
		}
	}
	require.NotNil(t, pool, "SHOW POOLS has no pool for %s/%s", target.Database, target.User)
	require.Equal(t, "transaction", pool["pool_mode"])
	require.Equal(t, "1", pool["cl_active"], "the one client connected: %v", pool)

	var config map[string]string
	for _, row := range pgBouncerShow(t, ctx, admin, "SHOW CONFIG") {
		if row["key"] == "default_pool_size" {
			config = row
		}
	}
	require.Equal(t, "8", config["value"], "the default DefaultPoolSize")

	// Why PgBouncerAdminURL asks for the simple protocol: the console
	// refuses the extended one, which pgx's default mode uses for a query.
	ext := connect(t, ctx, withExecMode(admin, "cache_statement"))
	_, err = ext.Query(ctx, "SHOW POOLS")
	require.ErrorContains(t, err, "extended query protocol not supported by admin console")
}

// TestPgBouncerOtherUser: a target URL's user other than postgres, with a
// password, logs in through PgBouncer and may use its admin console.
func TestPgBouncerOtherUser(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := NewDatabase(t)
	role := "pgkit_bouncer_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	admin := connect(t, ctx, db)
	_, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN PASSWORD 'pa\"ss'")
	require.NoError(t, err)
	// Registered before StartPgBouncer, so it runs after PgBouncer stopped.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, adminExec(ctx, AdminURL(t), "DROP ROLE "+role))
	})
	u, err := url.Parse(db)
	require.NoError(t, err)
	u.User = url.UserPassword(role, `pa"ss`)

	bouncer := StartPgBouncer(t, u.String(), PgBouncerOptions{})
	conn := connect(t, ctx, withExecMode(bouncer, "exec"))
	var user string
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_user").Scan(&user))
	require.Equal(t, role, user)
	var users []string
	for _, row := range pgBouncerShow(t, ctx, PgBouncerAdminURL(bouncer), "SHOW POOLS") {
		users = append(users, row["user"])
	}
	require.Contains(t, users, role)
}

// TestPgBouncerPoolSize: PgBouncer runs the queries of 10 clients on
// DefaultPoolSize server connections, queuing the rest.
func TestPgBouncerPoolSize(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	bouncer := StartPgBouncer(t, NewDatabase(t), PgBouncerOptions{DefaultPoolSize: 2})
	const clients = 10
	const sleep = 200 * time.Millisecond

	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		// The simple protocol: pgx's default mode leaves prepared
		// statements on the server connections (see
		// TestPgBouncerCacheStatement).
		conns[i] = connect(t, ctx, withExecMode(bouncer, "simple_protocol"))
	}
	pids := make([]uint32, clients)
	errs := make([]error, clients)
	start := time.Now()
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() {
			errs[i] = conn.QueryRow(ctx, "SELECT pg_backend_pid(), pg_sleep($1::float8)", sleep.Seconds()).Scan(&pids[i], nil)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	require.NoError(t, errors.Join(errs...))
	distinct := map[uint32]bool{}
	for _, pid := range pids {
		distinct[pid] = true
	}
	require.LessOrEqual(t, len(distinct), 2, "backend pids %v", pids)
	require.GreaterOrEqual(t, elapsed, clients/2*sleep-50*time.Millisecond,
		"10 queries of %s on 2 server connections take 5 rounds", sleep)
}

// TestPgBouncerStartupParameters documents which startup parameters (pgx
// RuntimeParams) PgBouncer 1.18 passes on and which it refuses at login,
// with this harness's ignore_startup_parameters = extra_float_digits.
func TestPgBouncerStartupParameters(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	bouncer := StartPgBouncer(t, NewDatabase(t), PgBouncerOptions{})
	for _, tc := range []struct {
		name, value string
		refused     bool
		server      string // what the server then has; "" for value
	}{
		{name: "application_name", value: "pgkit-test"},
		{name: "TimeZone", value: "Europe/Paris"},
		{name: "DateStyle", value: "SQL, DMY"},
		{name: "client_encoding", value: "UTF8"},
		{name: "extra_float_digits", value: "3", server: "1"}, // ignored: the server keeps its default
		{name: "statement_timeout", value: "5s", refused: true},
		{name: "idle_in_transaction_session_timeout", value: "5s", refused: true},
		{name: "search_path", value: "public", refused: true},
		{name: "jit", value: "off", refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(withExecMode(bouncer, "exec"))
			require.NoError(t, err)
			cfg.RuntimeParams[tc.name] = tc.value
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if tc.refused {
				require.ErrorContains(t, err, "unsupported startup parameter: "+tc.name)
				var pgErr *pgconn.PgError
				require.ErrorAs(t, err, &pgErr)
				require.Equal(t, "08P01", pgErr.Code)
				return
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = conn.Close(context.Background()) })
			var got string
			require.NoError(t, conn.QueryRow(ctx, "SELECT current_setting($1)", tc.name).Scan(&got))
			want := tc.server
			if want == "" {
				want = tc.value
			}
			require.Equal(t, want, got)
		})
	}
}

// TestPgBouncerCacheStatement documents why pgkit cannot use pgx's default
// QueryExecModeCacheStatement through PgBouncer 1.18 in transaction mode:
// the statement pgx prepares under a name derived from the SQL stays on the
// server connection, which the next client gets.
func TestPgBouncerCacheStatement(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	bouncer := StartPgBouncer(t, NewDatabase(t), PgBouncerOptions{DefaultPoolSize: 1})
	const query = "SELECT 41 + 1"
	var n int
	first := connect(t, ctx, bouncer)
	require.NoError(t, first.QueryRow(ctx, query).Scan(&n))
	second := connect(t, ctx, bouncer)
	err := second.QueryRow(ctx, query).Scan(&n)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "42P05", pgErr.Code, "prepared statement already exists: %v", err)
	require.Contains(t, pgErr.Message, `prepared statement "stmtcache_`)

	for _, mode := range []string{"exec", "cache_describe", "simple_protocol"} {
		conn := connect(t, ctx, withExecMode(bouncer, mode))
		require.NoError(t, conn.QueryRow(ctx, query).Scan(&n), mode)
		require.Equal(t, 42, n)
	}
}

// TestPgBouncerCleanup: t.Cleanup leaves no pgbouncer process, temp dir or
// listening port behind.
func TestPgBouncerCleanup(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	admin := AdminURL(t)
	var b *pgBouncer
	t.Run("running", func(t *testing.T) {
		b = startPgBouncerT(t, admin, PgBouncerOptions{PoolMode: "session", DefaultPoolSize: 3})
		conn := connect(t, ctx, b.url)
		var one int
		require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))
		var modes []string
		for _, row := range pgBouncerShow(t, ctx, PgBouncerAdminURL(b.url), "SHOW POOLS") {
			if row["database"] == "postgres" {
				modes = append(modes, row["pool_mode"])
			}
		}
		require.Equal(t, []string{"session"}, modes)
		pid, err := os.ReadFile(b.pidFile)
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(b.cmd.Process.Pid), strings.TrimSpace(string(pid)),
			"pgbouncer runs in the foreground, as this process's child")
		if as, err := serverUser(); err == nil && as != nil {
			status, err := os.ReadFile("/proc/" + strconv.Itoa(b.cmd.Process.Pid) + "/status")
			if err == nil {
				require.Regexp(t, `(?m)^Uid:\s+`+strconv.Itoa(as.uid)+`\s`, string(status), "run as root, it runs as %s", as.name)
			}
		}
	})
	require.NotNil(t, b)
	require.True(t, processGone(b.cmd.Process.Pid), "pgbouncer %d still runs", b.cmd.Process.Pid)
	select {
	case <-b.exited:
	default:
		t.Fatal("the cleanup did not wait for pgbouncer to exit")
	}
	_, err := os.Stat(b.dir)
	require.ErrorIs(t, err, os.ErrNotExist, "the temp dir is removed")
	_, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)), time.Second)
	require.Error(t, err, "the port refuses connections")
}

func TestPgBouncerHelpers(t *testing.T) {
	t.Parallel()
	_, err := findPgBouncerIn("", nil)
	require.ErrorContains(t, err, "apt-get install pgbouncer")

	require.Equal(t, "postgres://u:p@127.0.0.1:6432/pgbouncer?default_query_exec_mode=simple_protocol&sslmode=disable",
		PgBouncerAdminURL("postgres://u:p@127.0.0.1:6432/app?sslmode=disable"))
	require.Panics(t, func() { PgBouncerAdminURL("host=x dbname=y") })

	u, err := url.Parse("postgres://app@db.example:5433/app?host=/var/run/postgresql&port=5434&sslmode=disable")
	require.NoError(t, err)
	require.Equal(t, "postgres://app@127.0.0.1:7000/app?sslmode=disable", pgBouncerURL(u, 7000),
		"host and port parameters would override the bouncer's")

	_, tg, err := parsePgBouncerTarget("postgres://app:se%22cret@db.example:5433/app")
	require.NoError(t, err)
	require.Equal(t, pgBouncerTarget{host: "db.example", port: 5433, user: "app", password: `se"cret`}, tg)
	require.Equal(t, `"app" "se""cret"`+"\n", authFileLine(tg.user, tg.password))
	cfg := pgBouncerConfig("/d", 7000, tg, PgBouncerOptions{PoolMode: "transaction", DefaultPoolSize: 8, MaxClientConn: 1000})
	for _, line := range []string{
		"* = host=db.example port=5433\n",
		"listen_port = 7000\n",
		"unix_socket_dir = \n",
		"admin_users = postgres,app\n",
		"auth_file = /d/users.txt\n",
	} {
		require.Contains(t, cfg, line)
	}
	_, _, err = parsePgBouncerTarget("host=x dbname=y")
	require.ErrorContains(t, err, "not a postgres:// URL")
	_, err = PgBouncerOptions{PoolMode: "sessions"}.withDefaults()
	require.ErrorContains(t, err, "want session, transaction or statement")
}
