package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// shared holds the servers this test binary resolved once and shares
// between its tests; Main closes the ones it started.
var shared struct {
	pgOnce    sync.Once
	pgURL     string
	pgCluster *Cluster
	pgErr     error

	tplMu   sync.Mutex
	tplName map[string]string // admin URL -> template name

	redisOnce   sync.Once
	redisURL    string
	redisServer *RedisServer
	redisCtr    *container
	redisErr    error
}

// Main runs the tests of a package and exits; call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// After the tests it stops the shared servers this binary started (see
// AdminURL and RedisURL); then, if the tests passed, it looks for leaked
// goroutines with goleak.Find(leakOpts...) and fails the run, printing
// them, if there are any.
func Main(m interface{ Run() int }, leakOpts ...goleak.Option) {
	code := m.Run()
	if err := closeShared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(leakOpts...); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: goroutines leaked by the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// closeShared stops the shared servers this binary started.
func closeShared() error {
	var errs []error
	if c := shared.pgCluster; c != nil {
		errs = append(errs, c.Close())
	}
	if r := shared.redisServer; r != nil {
		errs = append(errs, r.Stop())
	}
	if c := shared.redisCtr; c != nil {
		if err := c.remove(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: remove redis container: %w", err))
		}
	}
	return errors.Join(errs...)
}

// AdminURL returns the URL of this test binary's PostgreSQL server, for a
// superuser, resolved once: PGKIT_TEST_DATABASE_URL if set; else a
// throwaway cluster from local binaries, shared by every test of the binary
// and closed by Main; else one in Docker; else the test fails with a
// message naming the three ways to get a server.
func AdminURL(t testing.TB) string {
	t.Helper()
	url, err := sharedAdminURL()
	if err != nil {
		t.Fatal(err)
	}
	return url
}

func sharedAdminURL() (string, error) {
	shared.pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared.pgURL, shared.pgCluster, shared.pgErr = defaultFinder().resolvePostgres(ctx)
	})
	return shared.pgURL, shared.pgErr
}

// WithExampleDatabase wraps a test run so that DATABASE_URL names a
// database with testdata/schema.sql while it runs (unless the environment
// already sets DATABASE_URL): the package's Examples open it as a user's
// program would, with nothing but the public API.
//
//	func TestMain(m *testing.M) { pgtest.Main(pgtest.WithExampleDatabase(m)) }
func WithExampleDatabase(m interface{ Run() int }) interface{ Run() int } {
	return exampleRun{m}
}

type exampleRun struct{ m interface{ Run() int } }

func (r exampleRun) Run() int {
	if os.Getenv("DATABASE_URL") != "" {
		return r.m.Run()
	}
	url, drop := ForExample()
	os.Setenv("DATABASE_URL", url)
	defer drop()
	return r.m.Run()
}

// ForExample is NewDatabase for Example functions, which have no testing.TB:
// a new database on the shared server and the function that drops it. It
// panics when no server can be had, which fails the example.
func ForExample() (url string, drop func()) {
	admin, err := sharedAdminURL()
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tpl, err := sharedTemplate(ctx, admin)
	if err != nil {
		panic(err)
	}
	url, dropDB, err := CreateDatabase(ctx, admin, tpl)
	if err != nil {
		panic(err)
	}
	return url, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dropDB(ctx); err != nil {
			panic(err)
		}
	}
}

// resolvePostgres finds the shared server: the URL from the environment,
// else a cluster of its own (returned, for the caller to close).
func (f finder) resolvePostgres(ctx context.Context) (string, *Cluster, error) {
	if u := strings.TrimSpace(f.getenv(f.envName())); u != "" {
		return u, nil, nil
	}
	c, err := f.startCluster(ctx, []string{f.envName() + " is not set"})
	if err != nil {
		return "", nil, err
	}
	return c.URL(), c, nil
}

// ResolveServer is how a harness outside pgtest finds a server: the URL in
// the environment variable envVar when set, else a throwaway cluster from
// local binaries, else in Docker, for the caller to Close (nil with a URL).
// Its error names envVar among the ways to get a server.
func ResolveServer(ctx context.Context, envVar string) (string, *Cluster, error) {
	f := defaultFinder()
	f.envVar = envVar
	return f.resolvePostgres(ctx)
}

func (f finder) envName() string {
	if f.envVar != "" {
		return f.envVar
	}
	return EnvDatabaseURL
}

// NewDatabase returns the URL of a new database of the test's own on the
// shared server (see AdminURL), cloned from the template that has
// testdata/schema.sql applied (see CreateTemplate); t.Cleanup drops it.
// Tests using it can call t.Parallel.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin := AdminURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tpl, err := sharedTemplate(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	dbURL, drop, err := CreateDatabase(ctx, admin, tpl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := drop(ctx); err != nil {
			t.Error(err)
		}
	})
	return dbURL
}

// sharedTemplate calls CreateTemplate once per admin URL in this process.
// A failure is not remembered, so a later test may try again.
func sharedTemplate(ctx context.Context, adminURL string) (string, error) {
	shared.tplMu.Lock()
	defer shared.tplMu.Unlock()
	if name, ok := shared.tplName[adminURL]; ok {
		return name, nil
	}
	name, err := CreateTemplate(ctx, adminURL)
	if err != nil {
		return "", err
	}
	if shared.tplName == nil {
		shared.tplName = map[string]string{}
	}
	shared.tplName[adminURL] = name
	return name, nil
}

// NewDatabase is the package-level NewDatabase on this cluster: a database
// cloned from a template with testdata/schema.sql, dropped in t.Cleanup
// (while the cluster still runs).
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tpl, err := CreateTemplate(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	dbURL, drop, err := CreateDatabase(ctx, c.URL(), tpl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = drop(ctx) // the test may have stopped the cluster for good
	})
	return dbURL
}

// StartCluster starts a PostgreSQL server of the test's own (see Start:
// local binaries, else Docker, else the test fails naming the three ways)
// and closes it in t.Cleanup. Use it for tests that stop, restart or
// reconfigure a server; others should use NewDatabase.
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// RedisURL returns the URL of this test binary's Redis server, resolved
// once: PGKIT_TEST_REDIS_URL if set; else a redis-server of its own on a
// free port, shared by every test of the binary and stopped by Main; else
// one in Docker; else the test fails with a message naming the three ways.
// Tests sharing it should keep to keys of their own (a prefix per test).
func RedisURL(t testing.TB) string {
	t.Helper()
	shared.redisOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared.redisURL, shared.redisServer, shared.redisCtr, shared.redisErr = defaultFinder().resolveRedis(ctx)
	})
	if shared.redisErr != nil {
		t.Fatal(shared.redisErr)
	}
	return shared.redisURL
}

// resolveRedis finds the shared Redis: the URL from the environment, else
// a server or container of its own (returned, for the caller to stop).
func (f finder) resolveRedis(ctx context.Context) (string, *RedisServer, *container, error) {
	if u := strings.TrimSpace(f.getenv(EnvRedisURL)); u != "" {
		return u, nil, nil, nil
	}
	reasons := []string{EnvRedisURL + " is not set"}
	r, err := startRedisServer(ctx, f.path)
	if err == nil {
		return r.URL(), r, nil, nil
	}
	reasons = append(reasons, reason(err))
	if err := f.dockerOK(ctx); err != nil {
		reasons = append(reasons, reason(err))
		return "", nil, nil, noRedisError(reasons...)
	}
	d, err := dockerClient()
	var u string
	var ctr *container
	if err == nil {
		u, ctr, err = startDockerRedis(ctx, d)
	}
	if err != nil {
		reasons = append(reasons, "start "+RedisImage+" in Docker: "+err.Error())
		return "", nil, nil, noRedisError(reasons...)
	}
	return u, nil, ctr, nil
}
