package pgkit_test

import (
	"context"
	"errors"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// openTest is testkit.OpenDB.
func openTest(t *testing.T, cfg pgkit.Config) *pgkit.DB { return testkit.OpenDB(t, cfg) }

func TestOpenAppliesSessionSettings(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{ApplicationName: "pgkit-settings-test", StatementTimeout: 7 * time.Second})
	ctx := context.Background()

	var app, jit, stmt, idleTx string
	err := db.QueryRow(ctx, `SELECT current_setting('application_name'), current_setting('jit'),
		current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout')`).Scan(&app, &jit, &stmt, &idleTx)
	require.NoError(t, err)
	require.Equal(t, "pgkit-settings-test", app)
	require.Equal(t, "off", jit)
	require.Equal(t, "7s", stmt)
	require.Equal(t, "5min", idleTx)

	cfg := db.Config()
	require.Equal(t, pgkit.DefaultAcquireTimeout, cfg.AcquireTimeout)
	require.Equal(t, time.Hour, cfg.MaxConnLifetime)
	require.Equal(t, 6*time.Minute, cfg.MaxConnLifetimeJitter)
	require.Equal(t, int32(4), db.Stat().MaxConns())

	// The statement timeout is enforced by the server.
	short := openTest(t, pgkit.Config{StatementTimeout: 200 * time.Millisecond})
	_, err = short.Exec(ctx, `SELECT pg_sleep(2)`)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "57014", pgErr.Code, "query_canceled by statement_timeout")
}

func TestOpenDefaultsAndURLPrecedence(t *testing.T) {
	t.Parallel()
	base := pgtest.NewDatabase(t)
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	url := base + sep + "pool_max_conns=3&pool_max_conn_lifetime=10m&application_name=from-url&statement_timeout=2500"

	db := openTest(t, pgkit.Config{URL: url})
	cfg := db.Config()
	require.Equal(t, int32(3), cfg.MaxConns, "the URL's pool_max_conns wins over the default")
	require.Equal(t, 10*time.Minute, cfg.MaxConnLifetime)
	require.Equal(t, time.Minute, cfg.MaxConnLifetimeJitter, "jitter defaults to a tenth of the lifetime")
	require.Equal(t, "from-url", cfg.ApplicationName)
	require.Equal(t, 2500*time.Millisecond, cfg.StatementTimeout)

	var app, stmt string
	require.NoError(t, db.QueryRow(context.Background(),
		`SELECT current_setting('application_name'), current_setting('statement_timeout')`).Scan(&app, &stmt))
	require.Equal(t, "from-url", app)
	require.Equal(t, "2500ms", stmt)

	// Explicit fields win over the URL.
	db2 := openTest(t, pgkit.Config{URL: url, MaxConns: 2, ApplicationName: "explicit", StatementTimeout: pgkit.Disabled})
	require.NoError(t, db2.QueryRow(context.Background(),
		`SELECT current_setting('application_name'), current_setting('statement_timeout')`).Scan(&app, &stmt))
	require.Equal(t, "explicit", app)
	require.Equal(t, int32(2), db2.Stat().MaxConns())
	require.Equal(t, "2500ms", stmt, "Disabled leaves the setting the URL or server has")

	// Without pool_max_conns, the default.
	db3, err := pgkit.Open(context.Background(), pgkit.Config{URL: base, LazyConnect: true})
	require.NoError(t, err)
	defer db3.Close()
	require.Equal(t, pgkit.DefaultMaxConns(), db3.Config().MaxConns)
	require.Equal(t, pgkit.DefaultMaxConns(), db3.Stat().MaxConns())
}

func TestConfigValidationNamesTheField(t *testing.T) {
	t.Parallel()
	url := "postgres://postgres@127.0.0.1:5432/postgres"
	cases := []struct {
		field string
		cfg   pgkit.Config
	}{
		{"URL", pgkit.Config{URL: "postgres://postgres@127.0.0.1:notaport/db"}},
		{"URL", pgkit.Config{URL: "host=127.0.0.1 pool_max_conns=many"}},
		{"MaxConns", pgkit.Config{URL: url, MaxConns: -1}},
		{"MinConns", pgkit.Config{URL: url, MaxConns: 2, MinConns: 3}},
		{"MinConns", pgkit.Config{URL: url, MinConns: -1}},
		{"MinIdleConns", pgkit.Config{URL: url, MaxConns: 2, MinIdleConns: 5}},
		{"KeepaliveCount", pgkit.Config{URL: url, KeepaliveCount: -2}},
		{"MaxConnLifetime", pgkit.Config{URL: url, MaxConnLifetime: -time.Second}},
		{"MaxConnLifetimeJitter", pgkit.Config{URL: url, MaxConnLifetimeJitter: -time.Second}},
		{"MaxConnIdleTime", pgkit.Config{URL: url, MaxConnIdleTime: -time.Second}},
		{"HealthCheckPeriod", pgkit.Config{URL: url, HealthCheckPeriod: -time.Second}},
		{"AcquireTimeout", pgkit.Config{URL: url, AcquireTimeout: -2 * time.Second}},
		{"PingTimeout", pgkit.Config{URL: url, PingTimeout: -2 * time.Second}},
		{"ConnectTimeout", pgkit.Config{URL: url, ConnectTimeout: -2 * time.Second}},
		{"StatementTimeout", pgkit.Config{URL: url, StatementTimeout: -2 * time.Second}},
		{"IdleInTransactionTimeout", pgkit.Config{URL: url, IdleInTransactionTimeout: -time.Minute}},
		{"KeepaliveIdle", pgkit.Config{URL: url, KeepaliveIdle: -time.Second}},
		{"KeepaliveInterval", pgkit.Config{URL: url, KeepaliveInterval: -time.Second}},
		{"HealthTimeout", pgkit.Config{URL: url, HealthTimeout: -time.Second}},
	}
	for _, c := range cases {
		t.Run(c.field, func(t *testing.T) {
			db, err := pgkit.Open(context.Background(), c.cfg)
			require.Nil(t, db)
			var cerr *pgkit.ConfigError
			require.ErrorAs(t, err, &cerr)
			require.Equal(t, c.field, cerr.Field)
			require.True(t, strings.HasPrefix(err.Error(), "pgkit: invalid Config."+c.field+": "), err.Error())
		})
	}
}

func TestPasswordNeverInErrors(t *testing.T) {
	t.Parallel()
	const secret = "Sup3r-s3cret-pw"
	port := closedPort(t)
	logs := &testkit.LogRecorder{}
	cases := map[string]string{
		"unparsable URL":     "postgres://postgres:" + secret + "@127.0.0.1:badport/db",
		"bad pool parameter": "postgres://postgres:" + secret + "@127.0.0.1:5432/db?pool_max_conns=x",
		"DSN bad parameter":  "host=127.0.0.1 password=" + secret + " pool_max_conns=x",
		"refused connection": "postgres://postgres:" + secret + "@127.0.0.1:" + port + "/db",
		"refused DSN":        "host=127.0.0.1 port=" + port + " user=postgres password='" + secret + "'",
		"validation":         "postgres://postgres:" + secret + "@127.0.0.1:" + port + "/db",
	}
	for name, url := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := pgkit.Config{URL: url, ConnectTimeout: time.Second, Logger: slog.New(logs)}
			if name == "validation" {
				cfg.MaxConns = -1
			}
			_, err := pgkit.Open(context.Background(), cfg)
			require.Error(t, err)
			require.NotContains(t, err.Error(), secret)
			require.True(t, strings.HasPrefix(err.Error(), "pgkit: "), err.Error())
		})
	}
	require.NotContains(t, logs.Text(), secret)
}

func TestOpenFailsFastUnlessLazy(t *testing.T) {
	t.Parallel()
	// A server that accepts the TCP connection and never answers: the worst
	// case, worse than a refused connection.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	silent := "postgres://postgres@" + l.Addr().String() + "/db?sslmode=disable"

	start := time.Now()
	db, err := pgkit.Open(context.Background(), pgkit.Config{URL: silent, ConnectTimeout: 300 * time.Millisecond})
	require.Error(t, err)
	require.Nil(t, db)
	require.Less(t, time.Since(start), 2*time.Second, "Open must give up within ConnectTimeout")

	// Refused: an error naming the cause, at once.
	_, err = pgkit.Open(context.Background(), pgkit.Config{URL: "postgres://postgres@127.0.0.1:" + closedPort(t) + "/db"})
	require.ErrorIs(t, err, syscall.ECONNREFUSED)

	// LazyConnect opens without asking the server anything.
	db, err = pgkit.Open(context.Background(), pgkit.Config{URL: silent, LazyConnect: true, ConnectTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, int32(0), db.Stat().TotalConns())
	db.Close()
}

func TestOpenWarnsWhenMaxConnsExceedsServer(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogRecorder{}
	// A common SQLAlchemy setting: pool_size=50 + max_overflow=100.
	db := openTest(t, pgkit.Config{MaxConns: 150, Logger: slog.New(logs)})

	var serverMax int
	require.NoError(t, db.QueryRow(context.Background(), `SELECT current_setting('max_connections')::int`).Scan(&serverMax))
	require.Less(t, serverMax, 150, "this test needs a server with fewer than 150 max_connections")

	attrs, ok := logs.Find("MaxConns exceeds")
	require.True(t, ok, "no warning logged; got:\n%s", logs.Text())
	require.Equal(t, int64(150), attrs["max_conns"].Int64())
	require.Equal(t, int64(serverMax), attrs["server_max_connections"].Int64())
	require.Contains(t, attrs, "superuser_reserved_connections")

	quiet := &testkit.LogRecorder{}
	openTest(t, pgkit.Config{MaxConns: 4, Logger: slog.New(quiet)})
	_, warned := quiet.Find("MaxConns exceeds")
	require.False(t, warned)
}

func TestAcquireTimeoutBoundsEveryMethod(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 2, MinConns: 2, AcquireTimeout: 150 * time.Millisecond})
	ctx := context.Background()

	held := make([]*pgxpool.Conn, 2)
	for i := range held {
		c, err := db.Acquire(ctx)
		require.NoError(t, err)
		held[i] = c
	}

	methods := map[string]func(context.Context) error{
		"Exec": func(ctx context.Context) error { _, err := db.Exec(ctx, "SELECT 1"); return err },
		"Query": func(ctx context.Context) error {
			rows, err := db.Query(ctx, "SELECT 1")
			if err == nil {
				rows.Close()
			}
			return err
		},
		"QueryRow": func(ctx context.Context) error { var n int; return db.QueryRow(ctx, "SELECT 1").Scan(&n) },
		"SendBatch": func(ctx context.Context) error {
			b := &pgx.Batch{}
			b.Queue("SELECT 1")
			return db.SendBatch(ctx, b).Close()
		},
		"CopyFrom": func(ctx context.Context) error {
			_, err := db.CopyFrom(ctx, pgx.Identifier{"tenants"}, []string{"id", "name"}, pgx.CopyFromRows([][]any{{"t", "T"}}))
			return err
		},
		"Begin": func(ctx context.Context) error {
			tx, err := db.Begin(ctx)
			if err == nil {
				_ = tx.Rollback(ctx)
			}
			return err
		},
		"Acquire": func(ctx context.Context) error {
			c, err := db.Acquire(ctx)
			if err == nil {
				c.Release()
			}
			return err
		},
		"Ping":      func(ctx context.Context) error { return db.Ping(ctx) },
		"Pool.Exec": func(ctx context.Context) error { _, err := db.Pool().Exec(ctx, "SELECT 1"); return err },
	}
	// A caller's context that cannot be canceled, and one that can (its
	// cancellation is watched while the checkout waits).
	cancelable, stop := context.WithCancel(ctx)
	defer stop()
	for _, ctx := range []context.Context{ctx, cancelable} {
		for name, call := range methods {
			start := time.Now()
			err := call(ctx)
			elapsed := time.Since(start)
			require.ErrorIs(t, err, pgkit.ErrAcquireTimeout, name)
			require.ErrorIs(t, err, context.DeadlineExceeded, name)
			require.GreaterOrEqual(t, elapsed, 150*time.Millisecond, name)
			require.Less(t, elapsed, 2*time.Second, name)
		}
	}
	require.Equal(t, int64(2*len(methods)), db.PoolStats().AcquireTimeouts)
	require.Zero(t, db.PoolStats().Waiting)

	// The caller's shorter deadline wins, and is not reported as the pool's timeout.
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	start := time.Now()
	_, err := db.Exec(short, "SELECT 1")
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, pgkit.ErrAcquireTimeout)
	require.Less(t, time.Since(start), 140*time.Millisecond)

	// A canceled caller is canceled, not timed out.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = db.Exec(canceled, "SELECT 1")
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, pgkit.ErrAcquireTimeout))

	// Once released, the held connections serve again.
	for _, c := range held {
		c.Release()
	}
	for range 4 {
		var n int
		require.NoError(t, db.QueryRow(ctx, "SELECT 1").Scan(&n))
		require.Equal(t, 1, n)
	}
	require.Equal(t, int32(0), db.PoolStats().Acquired)

	// With idle connections, where the wait is never armed, a
	// caller canceled before the call is still refused, as pgxpool refuses it.
	conn, err := db.Pool().Acquire(canceled)
	if conn != nil {
		conn.Release()
	}
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, pgkit.ErrAcquireTimeout)

	// The timeout bounds only the wait: a query longer than it still runs.
	_, err = db.Exec(ctx, "SELECT pg_sleep(0.3)")
	require.NoError(t, err)
}

// TestAcquireTimeoutWithoutDeadline: waits whose callers' contexts cannot
// be canceled (context.Background) and that begin at different times each
// wait their whole AcquireTimeout, and not much more (room for a busy
// machine). While they wait, PoolStats counts them.
func TestAcquireTimeoutWithoutDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 800 * time.Millisecond
	db := openTest(t, pgkit.Config{MaxConns: 1, MinConns: 1, AcquireTimeout: timeout})
	held, err := db.Acquire(context.Background())
	require.NoError(t, err)
	defer held.Release()

	const waiters = 8
	elapsed := make([]time.Duration, waiters)
	errs := make([]error, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		<-time.After(15 * time.Millisecond) // the waits begin at different times
		wg.Go(func() {
			start := time.Now()
			_, errs[i] = db.Exec(context.Background(), "SELECT 1")
			elapsed[i] = time.Since(start)
		})
	}
	require.Eventually(t, func() bool { return db.PoolStats().Waiting == waiters }, timeout/2, 5*time.Millisecond)
	wg.Wait()
	for i := range waiters {
		require.ErrorIs(t, errs[i], pgkit.ErrAcquireTimeout)
		require.GreaterOrEqual(t, elapsed[i], timeout, "wait %d", i)
		require.Less(t, elapsed[i], timeout+250*time.Millisecond, "wait %d", i)
	}
	require.Zero(t, db.PoolStats().Waiting)
}

func TestKeepaliveOnTheSocket(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{KeepaliveIdle: 42 * time.Second, KeepaliveInterval: 7 * time.Second, KeepaliveCount: 5})
	conn, err := db.Acquire(context.Background())
	require.NoError(t, err)
	defer conn.Release()

	tcp, ok := conn.Conn().PgConn().Conn().(syscall.Conn)
	require.True(t, ok, "expected a socket, got %T", conn.Conn().PgConn().Conn())
	raw, err := tcp.SyscallConn()
	require.NoError(t, err)
	opts := map[string]int{}
	require.NoError(t, raw.Control(func(fd uintptr) {
		for name, opt := range map[string][2]int{
			"keepalive": {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			"idle":      {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			"interval":  {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			"count":     {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
		} {
			v, err := syscall.GetsockoptInt(int(fd), opt[0], opt[1])
			require.NoError(t, err, name)
			opts[name] = v
		}
	}))
	require.Equal(t, map[string]int{"keepalive": 1, "idle": 42, "interval": 7, "count": 5}, opts)
}

// TestAcquireTimeoutUnderContention mixes callers whose own deadlines are
// shorter and longer than AcquireTimeout, and some canceled, on a pool
// much smaller than the crowd: every call either runs or fails with the
// right error, and the timeouts counted are the timeouts returned.
func TestAcquireTimeoutUnderContention(t *testing.T) {
	t.Parallel()
	const acquireTimeout = 20 * time.Millisecond
	db := openTest(t, pgkit.Config{MaxConns: 2, MinConns: 2, AcquireTimeout: acquireTimeout})
	var timeouts, callerDeadlines, cancels, ok atomic.Int64
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			for i := range 20 {
				ctx, cancel := context.WithCancel(context.Background())
				kind := (g + i) % 4
				var canceledAt atomic.Int64 // when case 3's cancel ran, UnixNano
				start := time.Now()
				switch kind {
				case 1:
					ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
				case 2:
					ctx, cancel = context.WithTimeout(context.Background(), 60*time.Millisecond)
				case 3:
					time.AfterFunc(5*time.Millisecond, func() { canceledAt.Store(time.Now().UnixNano()); cancel() })
				}
				_, err := db.Exec(ctx, "SELECT pg_sleep(0.002)")
				ctxErr := ctx.Err()
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, pgkit.ErrAcquireTimeout):
					require.ErrorIs(t, err, context.DeadlineExceeded)
					// The pool's timeout fires AcquireTimeout after the wait
					// began; a caller whose context ended before that gets its
					// own error. (A cancel due earlier but run later, on a
					// busy machine, may land after the pool's timeout: the
					// pool's answer is then the right one.)
					require.NotEqual(t, 1, kind, "a timeout reported as the pool's while the caller's deadline was sooner")
					if at := canceledAt.Load(); at != 0 {
						require.False(t, time.Unix(0, at).Before(start.Add(acquireTimeout)),
							"a timeout reported as the pool's while the caller's context had ended")
					}
					timeouts.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
					require.Error(t, ctxErr)
					callerDeadlines.Add(1)
				case errors.Is(err, context.Canceled):
					require.ErrorIs(t, ctxErr, context.Canceled)
					cancels.Add(1)
				default:
					require.NoError(t, err)
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(64*20), ok.Load()+timeouts.Load()+callerDeadlines.Load()+cancels.Load())
	require.Positive(t, ok.Load())
	require.Positive(t, timeouts.Load())
	require.Equal(t, timeouts.Load(), db.PoolStats().AcquireTimeouts)
	require.Eventually(t, func() bool { return db.PoolStats().Acquired == 0 }, 5*time.Second, 10*time.Millisecond)
	// Canceled statements cost their connections, and opening one can take
	// longer than the 20ms AcquireTimeout on a busy machine: the pool serves
	// again once it has.
	require.Eventually(t, func() bool {
		_, err := db.Exec(context.Background(), "SELECT 1")
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the pool serves normally afterwards")
}

// TestConfigURLMultiHost: Config().URL of a multi-host URL names every host
// once (pgx tries each under two sslmodes), and never the password.
func TestConfigURLMultiHost(t *testing.T) {
	t.Parallel()
	db, err := pgkit.Open(context.Background(), pgkit.Config{LazyConnect: true,
		URL: "postgres://app:multi-sekret@db1:5432,db2:5433,db3/app?target_session_attrs=read-write&sslmode=prefer"})
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, "postgres://app:xxxxx@db1:5432,db2:5433,db3:5432/app", db.Config().URL)
}
