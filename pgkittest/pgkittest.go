package pgkittest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
)

// EnvDatabaseURL names the environment variable New reads first: the URL of
// a PostgreSQL server and a role that may create databases, for example
// postgres://postgres@127.0.0.1:5432/postgres. Without it New uses a
// throwaway server from the local PostgreSQL binaries (initdb and pg_ctl on
// PATH or under pg_config --bindir; fsync off, in a temp dir) that the
// packages of one go test run share (on Unix), stopped and removed when the
// run ends; else one in Docker (the docker command and postgres:15-alpine)
// for the test binary, removed when it ends.
const EnvDatabaseURL = "PGKITTEST_DATABASE_URL"

// DefaultReady is how many migrated databases New keeps cloned ahead of
// demand per template, each with a DB open on it and a connection made (used
// by tests without WithConfig), so that a test takes one instead of waiting
// for CREATE DATABASE and a connection: enough for a wave of 8 parallel
// tests.
const DefaultReady = 8

// Option configures New.
type Option func(*options)

type options struct {
	migrations     fs.FS
	migrate        func(context.Context, *pgkit.DB) error
	migrateVersion string
	config         pgkit.Config
	configSet      bool
	serverURL      string
	ready          int
}

// WithMigrations applies the .sql files at the root of fsys, in name order,
// each as one script (simple protocol, so a file may hold many statements),
// to the template every test database is cloned from. Use fs.Sub for a
// subdirectory, or an embed.FS:
//
//	//go:embed migrations/*.sql
//	var migrations embed.FS
//	sub, _ := fs.Sub(migrations, "migrations")
//	db := pgkittest.New(t, pgkittest.WithMigrations(sub))
func WithMigrations(fsys fs.FS) Option { return func(o *options) { o.migrations = fsys } }

// WithMigrateFunc runs fn on the template after the WithMigrations files:
// the hook for goose, golang-migrate, atlas, tern or any other runner.
// version names what fn applies (a migration version, a hash of your
// migrations directory): the template is keyed by it, so change it when fn
// would do something else.
func WithMigrateFunc(version string, fn func(ctx context.Context, db *pgkit.DB) error) Option {
	return func(o *options) { o.migrate, o.migrateVersion = fn, version }
}

// WithConfig sets the pgkit.Config the test's DB is opened with; its URL is
// replaced by the test database's, and LazyConnect is set (the clone has
// just reached the server). Default: pgkit's defaults, with MaxConns 4 and
// LeakThreshold 1m (so that a leaked connection is named with the stack
// that acquired it).
func WithConfig(cfg pgkit.Config) Option {
	return func(o *options) { o.config, o.configSet = cfg, true }
}

// WithServerURL sets the server New creates databases on, in place of
// EnvDatabaseURL and a throwaway server.
func WithServerURL(u string) Option { return func(o *options) { o.serverURL = u } }

// WithReady sets how many databases are cloned ahead of demand (default
// DefaultReady; 0 clones each on demand).
func WithReady(n int) Option { return func(o *options) { o.ready = max(n, 0) } }

// New returns a pgkit DB on a database of the test's own, cloned from a
// template that holds the migrations (built once per server and set of
// migrations, and reused across test binaries and runs), dropped at the
// end of the test. Tests using it can call t.Parallel.
//
// At the end of the test New's cleanup fails the test when a connection is
// still checked out (an Acquire never released, Rows never closed, a
// transaction never ended), naming the stack that acquired it; it runs
// after the test's own cleanups. When the test failed, the database is
// kept and its URL logged (password masked), so that you can look at it.
//
// When no server can be had New fails the test and says what to install; it
// never skips.
func New(t testing.TB, opts ...Option) *pgkit.DB {
	t.Helper()
	o := options{ready: DefaultReady}
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db, tpl, name, err := open(ctx, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever is still checked out now was leaked by the test: the
		// test's own cleanups have run.
		sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		var held *pgkit.ShutdownError
		if err := db.Shutdown(sctx); errors.As(err, &held) {
			t.Errorf("pgkittest: the test left %d connection(s) checked out (an Acquire not released, Rows not closed, a transaction not ended): %v", len(held.Held), err)
		} else if err != nil {
			t.Errorf("pgkittest: closing the test's DB: %v", err)
		}
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t.Failed() {
			kept, err := tpl.keep(dctx, name)
			if err != nil {
				t.Logf("pgkittest: the test failed; its database could not be kept (%v)", err)
				return
			}
			keptURL, _ := withDatabase(tpl.admin.url, kept)
			t.Logf("pgkittest: the test failed; its database is kept, drop it when done: %s", masked(keptURL))
			return
		}
		tpl.release(name) // dropped in the background
	})
	return db
}

// open finds the server, the template for o's migrations, and a database
// cloned from it, and opens a pgkit DB on that database.
func open(ctx context.Context, o *options) (db *pgkit.DB, tpl *template, name string, err error) {
	admin := o.serverURL
	if admin == "" {
		if admin, err = sharedServer(ctx); err != nil {
			return nil, nil, "", err
		}
	}
	if tpl, err = templateFor(ctx, admin, o); err != nil {
		return nil, nil, "", err
	}
	c, err := tpl.take(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	if c.db != nil && !o.configSet {
		return c.db, tpl, c.name, nil
	}
	if c.db != nil {
		c.db.Close() // opened for the default config
	}
	if db, err = pgkit.Open(ctx, testConfig(o.config, tpl.admin.url, c.name)); err != nil {
		_ = tpl.drop(context.WithoutCancel(ctx), c.name)
		return nil, nil, "", err
	}
	return db, tpl, c.name, nil
}

// testConfig is cfg for a test's DB on database name of the server at
// admin: MaxConns 4 and LeakThreshold 1m unless set, and LazyConnect (the
// server was reached a moment ago, by the clone).
func testConfig(cfg pgkit.Config, admin, name string) pgkit.Config {
	cfg.URL, _ = withDatabase(admin, name)
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 4
	}
	if cfg.LeakThreshold == 0 {
		cfg.LeakThreshold = time.Minute
	}
	cfg.LazyConnect = true
	return cfg
}

// Main runs the package's tests, then Drain, and exits; use it from
// TestMain:
//
//	func TestMain(m *testing.M) { pgkittest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := Drain(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// withDatabase returns server URL u with its database set to name.
func withDatabase(u, name string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "postgres" && pu.Scheme != "postgresql") {
		return "", fmt.Errorf("pgkittest: the server URL must be a postgres:// URL (%s)", EnvDatabaseURL)
	}
	pu.Path = "/" + name
	return pu.String(), nil
}

// masked is u with its password, if any, replaced.
func masked(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := pu.User.Password(); ok {
		pu.User = url.UserPassword(pu.User.Username(), "xxxxx")
	}
	return pu.String()
}
