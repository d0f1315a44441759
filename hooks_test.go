package pgkit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"reflect"
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

// A type registered in AfterConnect round-trips; without it pgx cannot
// decode the column, so the hook is what made the difference.
func TestAfterConnectRegistersTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	setup := openTest(t, pgkit.Config{URL: url})
	_, err := setup.Exec(ctx, `CREATE TYPE mood AS ENUM ('calm', 'busy');
		CREATE TYPE point3 AS (x int, y int, z int)`)
	require.NoError(t, err)

	type point3 struct{ X, Y, Z int32 }
	query := `SELECT ARRAY['calm', 'busy']::mood[], ROW(1, 2, 3)::point3`
	var moods []string
	var p point3

	plain := openTest(t, pgkit.Config{URL: url})
	require.Error(t, plain.QueryRow(ctx, query).Scan(&moods, &p), "an unregistered composite cannot be scanned into a struct")

	var connects atomic.Int32
	db := openTest(t, pgkit.Config{URL: url, AfterConnect: func(ctx context.Context, c *pgx.Conn) error {
		connects.Add(1)
		types, err := c.LoadTypes(ctx, []string{"mood", "_mood", "point3"})
		if err != nil {
			return err
		}
		c.TypeMap().RegisterTypes(types)
		return nil
	}})
	require.NoError(t, db.QueryRow(ctx, query).Scan(&moods, &p))
	require.Equal(t, []string{"calm", "busy"}, moods)
	require.Equal(t, point3{1, 2, 3}, p)
	var back point3
	require.NoError(t, db.QueryRow(ctx, `SELECT $1::point3`, p).Scan(&back), "and it is sent as a parameter")
	require.Equal(t, p, back)
	require.Positive(t, connects.Load())

	// An AfterConnect error fails the call that needed the connection, with
	// that error.
	hookErr := errors.New("types not found")
	failing := openTest(t, pgkit.Config{URL: url, LazyConnect: true, AfterConnect: func(context.Context, *pgx.Conn) error { return hookErr }})
	require.ErrorIs(t, failing.Ping(ctx), hookErr)
}

// PrepareConn sees every checkout and AfterRelease every return; false from
// AfterRelease destroys the connection, so the next checkout is a new backend.
func TestPrepareConnAndAfterRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var prepared, released atomic.Int32
	var drop atomic.Uint32 // the backend AfterRelease refuses to keep
	db := openTest(t, pgkit.Config{MaxConns: 1,
		PrepareConn: func(context.Context, *pgx.Conn) (bool, error) { prepared.Add(1); return true, nil },
		AfterRelease: func(c *pgx.Conn) bool {
			released.Add(1)
			return c.PgConn().PID() != drop.Load()
		},
	})
	// Release hands the connection back asynchronously: wait for it.
	use := func(total int32) uint32 {
		c, err := db.Acquire(ctx)
		require.NoError(t, err)
		pid := c.Conn().PgConn().PID()
		c.Release()
		require.Eventually(t, func() bool { st := db.Stat(); return st.AcquiredConns() == 0 && st.TotalConns() == total },
			10*time.Second, time.Millisecond)
		return pid
	}
	first := use(1)
	require.Equal(t, first, use(1), "kept: the same backend")
	drop.Store(first)
	require.Equal(t, first, use(0), "AfterRelease said false: that connection was destroyed")
	require.NotEqual(t, first, use(1))
	require.EqualValues(t, 4, prepared.Load())
	require.EqualValues(t, 4, released.Load())
}

// A dialer of the user's own is used, and pgkit still sets keepalives and
// TCP_USER_TIMEOUT on what it returns (the dialer here turns keepalives
// off).
func TestDialFuncIsWrappedNotReplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var dialed atomic.Pointer[net.TCPConn]
	db := openTest(t, pgkit.Config{TCPUserTimeout: 7 * time.Second, KeepaliveIdle: 11 * time.Second,
		DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{KeepAlive: -1}
			c, err := d.DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				dialed.Store(tc)
			}
			return c, err
		}})
	require.NoError(t, db.Ping(ctx))
	tc := dialed.Load()
	require.NotNil(t, tc, "the user's DialFunc dialled")
	raw, err := tc.SyscallConn()
	require.NoError(t, err)
	var keepalive, idle, userTimeout int
	require.NoError(t, raw.Control(func(fd uintptr) {
		keepalive, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		idle, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		userTimeout, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x12)
	}))
	require.Equal(t, 1, keepalive)
	require.Equal(t, 11, idle)
	require.Equal(t, 7000, userTimeout)
}

// An empty URL connects where the libpq environment says, as pgx does.
func TestEmptyURLUsesTheLibpqEnvironment(t *testing.T) {
	u, err := url.Parse(pgtest.NewDatabase(t))
	require.NoError(t, err)
	host, port, err := net.SplitHostPort(u.Host)
	require.NoError(t, err)
	t.Setenv("PGHOST", host)
	t.Setenv("PGPORT", port)
	t.Setenv("PGUSER", u.User.Username())
	t.Setenv("PGDATABASE", u.Path[1:])
	t.Setenv("PGSSLMODE", "disable")
	t.Setenv("PGAPPNAME", "from-the-environment")

	db, err := pgkit.Open(context.Background(), pgkit.Config{MaxConns: 2})
	require.NoError(t, err)
	defer db.Close()
	var database, app string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT current_database(), current_setting('application_name')`).Scan(&database, &app))
	require.Equal(t, u.Path[1:], database)
	require.Equal(t, "from-the-environment", app, "PGAPPNAME wins over the program's name, as a URL's application_name does")

	t.Setenv("PGPORT", closedPort(t))
	_, err = pgkit.Open(context.Background(), pgkit.Config{ConnectTimeout: time.Second})
	require.Error(t, err, "the environment is really what it used")
}

// secureCluster is a throwaway server that takes TLS and asks user
// "rotating" for a password; postgres stays trusted for the harness.
func secureCluster(t *testing.T) *pgtest.Cluster {
	t.Helper()
	cert, key := selfSigned(t)
	c, err := pgtest.StartLocal(context.Background(),
		pgtest.WithDataFile("pg_hba.conf", "local all all trust\n"+
			"host all rotating 127.0.0.1/32 scram-sha-256\n"+
			"host all all 127.0.0.1/32 trust\n"),
		pgtest.WithDataFile("server.crt", cert), pgtest.WithDataFile("server.key", key),
		pgtest.WithSetting("ssl", "on"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// A password that changes between connects, as a rotated cloud token does,
// is picked up by BeforeConnect: after the rotation the DB keeps
// connecting, while a pool with the old password in its URL cannot.
// TLSConfig is used though the URL says sslmode=disable.
func TestBeforeConnectRotatesThePasswordAndTLSConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := secureCluster(t)
	admin, err := pgx.Connect(ctx, c.URL())
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, `CREATE ROLE rotating LOGIN PASSWORD 'token-1'`)
	require.NoError(t, err)

	base := fmt.Sprintf("postgres://rotating@127.0.0.1:%d/postgres?sslmode=disable", c.Port())
	var token atomic.Pointer[string]
	first := "token-1"
	token.Store(&first)
	db, err := pgkit.Open(ctx, pgkit.Config{URL: base, MaxConns: 2,
		TLSConfig: &tls.Config{InsecureSkipVerify: true}, // a test's self-signed certificate
		BeforeConnect: func(_ context.Context, cc *pgx.ConnConfig) error {
			cc.Password = *token.Load()
			return nil
		}})
	require.NoError(t, err)
	defer db.Close()
	var ssl bool
	require.NoError(t, db.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl))
	require.True(t, ssl, "TLSConfig won over the URL's sslmode=disable")

	stale, err := pgkit.Open(ctx, pgkit.Config{URL: "postgres://rotating:token-1@127.0.0.1:" + fmt.Sprint(c.Port()) + "/postgres?sslmode=disable",
		MaxConns: 1, ConnectBackoff: pgkit.Disabled})
	require.NoError(t, err)
	defer stale.Close()

	_, err = admin.Exec(ctx, `ALTER ROLE rotating PASSWORD 'token-2'`)
	require.NoError(t, err)
	second := "token-2"
	token.Store(&second)
	db.Reset()
	stale.Reset()

	var user string
	require.NoError(t, db.QueryRow(ctx, `SELECT current_user`).Scan(&user), "the new token was used")
	require.Equal(t, "rotating", user)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, stale.Ping(ctx), &pgErr, "the old password no longer logs in")
	require.Equal(t, "28P01", pgErr.Code)

	// An error from BeforeConnect fails the attempt with it.
	hookErr := errors.New("token service down")
	broken, err := pgkit.Open(ctx, pgkit.Config{URL: base, LazyConnect: true, MaxConns: 1,
		BeforeConnect: func(context.Context, *pgx.ConnConfig) error { return hookErr }})
	require.NoError(t, err)
	defer broken.Close()
	require.ErrorIs(t, broken.Ping(ctx), hookErr)
}

// DB has every method of *pgxpool.Pool, with the same signature, but
// Config, which returns pgkit's effective Config (db.Pool().Config() is
// pgxpool's).
func TestDBHasThePoolMethodSet(t *testing.T) {
	pool, db := reflectType[*pgxpool.Pool](), reflectType[*pgkit.DB]()
	for i := range pool.NumMethod() {
		m := pool.Method(i)
		if m.Name == "Config" {
			continue
		}
		dm, ok := db.MethodByName(m.Name)
		require.True(t, ok, "*pgkit.DB lacks %s", m.Name)
		require.Equal(t, m.Type.String()[len("func(*pgxpool.Pool"):], dm.Type.String()[len("func(*pgkit.DB"):], "%s's signature", m.Name)
	}
}

// AcquireFunc releases whatever f returns; AcquireAllIdle hands out the
// idle connections; Reset replaces every connection.
func TestAcquireFuncAcquireAllIdleAndReset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{MinConns: 2, MaxConns: 2})
	fErr := errors.New("from f")
	require.ErrorIs(t, db.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		require.EqualValues(t, 1, db.Stat().AcquiredConns())
		return fErr
	}), fErr)
	require.EqualValues(t, 0, db.Stat().AcquiredConns(), "released")

	idle := db.AcquireAllIdle(ctx)
	require.Len(t, idle, 2)
	pids := map[uint32]bool{}
	for _, c := range idle {
		pids[c.Conn().PgConn().PID()] = true
		c.Release()
	}
	db.Reset()
	require.NoError(t, db.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		require.False(t, pids[c.Conn().PgConn().PID()], "Reset closed the old connections")
		return nil
	}))
	db.Close()
	require.Nil(t, db.AcquireAllIdle(ctx))
	require.ErrorIs(t, db.AcquireFunc(ctx, func(*pgxpool.Conn) error { return nil }), pgkit.ErrClosed)
}

func reflectType[T any]() reflect.Type { return reflect.TypeFor[T]() }
