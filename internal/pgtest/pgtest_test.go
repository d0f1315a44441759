package pgtest

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestStartLocal(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)

	c, err := StartLocal(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	lc, ok := c.impl.(*localCluster)
	require.True(t, ok)
	port := c.Port()
	require.Equal(t, "postgres://postgres@127.0.0.1:"+strconv.Itoa(port)+"/postgres?sslmode=disable", c.URL())
	require.Equal(t, "postgres://postgres@127.0.0.1:"+strconv.Itoa(port)+"/other?sslmode=disable", c.URLFor("other"))

	conn, err := pgx.Connect(ctx, c.URL())
	require.NoError(t, err)
	var user string
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_user").Scan(&user))
	require.Equal(t, "postgres", user)
	_, err = conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before stop')")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, c.Stop(ctx))
	require.NoError(t, c.Stop(ctx), "a second Stop does nothing")
	_, err = pgx.Connect(ctx, c.URL())
	require.Error(t, err, "a stopped server refuses connections")

	require.NoError(t, c.Start(ctx))
	require.Equal(t, port, c.Port(), "Start comes back on the same port")
	conn = connect(t, ctx, c.URL())
	var v string
	require.NoError(t, conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v))
	require.Equal(t, "before stop", v)
	require.NoError(t, conn.Close(ctx))

	pid := lc.postmasterPID()
	require.Positive(t, pid)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	require.Error(t, c.Start(ctx), "a closed cluster cannot start")

	_, err = os.Stat(lc.dir)
	require.ErrorIs(t, err, os.ErrNotExist, "the temp dir is removed")
	require.Eventually(t, func() bool { return processGone(pid) }, 10*time.Second, 20*time.Millisecond,
		"postmaster %d still runs", pid)
	_, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	require.Error(t, err, "the port refuses connections")
}

// processGone reports whether pid has exited (a zombie counts as exited:
// in a container PID 1 may never reap the orphaned postmaster).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err == nil {
		// pid (comm) STATE ...; comm may hold spaces, so cut at the last ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
			return s[i+2] == 'Z'
		}
		return false
	}
	if _, statErr := os.Stat("/proc/self"); statErr == nil {
		return true // /proc works, and pid is not in it
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return true
	}
	return p.Signal(syscall.Signal(0)) != nil
}

func TestWithSetting(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	prefix := `%m [%p] it's "quoted" $HOME `
	c := StartCluster(t, WithSetting("max_connections", "123"), WithSetting("log_line_prefix", prefix))
	conn := connect(t, ctx, c.URL())

	var got string
	require.NoError(t, conn.QueryRow(ctx, "SHOW max_connections").Scan(&got))
	require.Equal(t, "123", got)
	require.NoError(t, conn.QueryRow(ctx, "SHOW log_line_prefix").Scan(&got))
	require.Equal(t, prefix, got, "values reach the server unchanged by the shell")
	require.NoError(t, conn.QueryRow(ctx, "SHOW fsync").Scan(&got))
	require.Equal(t, "off", got)
}

func TestNewDatabase(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var names [2]string

	t.Run("isolated", func(t *testing.T) {
		urls := [2]string{NewDatabase(t), NewDatabase(t)}
		require.NotEqual(t, urls[0], urls[1])
		var conns [2]*pgx.Conn
		for i, u := range urls {
			conns[i] = connect(t, ctx, u)
			require.NoError(t, conns[i].QueryRow(ctx, "SELECT current_database()").Scan(&names[i]))
			require.True(t, strings.HasPrefix(names[i], "pgkit_t_"), names[i])
			for _, table := range []string{"tenants", "users", "conversations", "messages", "usage_records"} {
				var found bool
				require.NoError(t, conns[i].QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&found))
				require.True(t, found, "table %s in %s", table, names[i])
			}
		}
		require.NotEqual(t, names[0], names[1])

		_, err := conns[0].Exec(ctx, "INSERT INTO tenants (id, name) VALUES ('t1', 'one')")
		require.NoError(t, err)
		var n int
		require.NoError(t, conns[0].QueryRow(ctx, "SELECT count(*) FROM tenants").Scan(&n))
		require.Equal(t, 1, n)
		require.NoError(t, conns[1].QueryRow(ctx, "SELECT count(*) FROM tenants").Scan(&n))
		require.Equal(t, 0, n, "data written to one database is not in the other")
		// The connections stay open: drop must end them (WITH (FORCE)).
	})

	admin := connect(t, ctx, AdminURL(t))
	for _, name := range names {
		var exists bool
		require.NoError(t, admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists))
		require.False(t, exists, "database %s is dropped after the test", name)
	}
}

func TestCreateTemplateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	admin := AdminURL(t)

	// Several callers at once (as several test binaries would be) agree.
	const callers = 4
	names := make(chan string, callers)
	errs := make(chan error, callers)
	for range callers {
		go func() {
			name, err := CreateTemplate(ctx, admin)
			names <- name
			errs <- err
		}()
	}
	first := ""
	for range callers {
		require.NoError(t, <-errs)
		name := <-names
		if first == "" {
			first = name
		}
		require.Equal(t, first, name)
	}
	require.Regexp(t, `^pgkit_tpl_[0-9a-f]{12}$`, first)

	conn := connect(t, ctx, admin)
	var isTemplate, allowConn bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1", first).
		Scan(&isTemplate, &allowConn))
	require.True(t, isTemplate)
	require.False(t, allowConn)
}

func TestSchemaPath(t *testing.T) {
	t.Parallel()
	p := SchemaPath()
	require.True(t, strings.HasSuffix(p, "testdata/schema.sql"), p)
	require.FileExists(t, p)
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	got, err := withDatabase("postgres://u:p@h:5/a?sslmode=disable", "b")
	require.NoError(t, err)
	require.Equal(t, "postgres://u:p@h:5/b?sslmode=disable", got)
	got, err = withDatabase("host=h dbname=a", "it's")
	require.NoError(t, err)
	require.Equal(t, `host=h dbname=a dbname='it\'s'`, got)
	cfg, err := pgx.ParseConfig(got)
	require.NoError(t, err)
	require.Equal(t, "it's", cfg.Database)
}
