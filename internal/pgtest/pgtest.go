// Package pgtest is pgkit's test database harness: real PostgreSQL and Redis
// servers, never mocks.
//
// A test binary finds its PostgreSQL server in this order:
//
//  1. PGKIT_TEST_DATABASE_URL, a server someone already runs;
//  2. PostgreSQL server binaries on this machine (initdb and pg_ctl on PATH,
//     under `pg_config --bindir`, or in a distribution's usual place), started
//     as a throwaway cluster in a temp dir on a free 127.0.0.1 port;
//  3. Docker, through the docker command (postgres:15-alpine, published on
//     127.0.0.1);
//
// and fails with a message naming these three ways when none works. Redis is
// found the same way: PGKIT_TEST_REDIS_URL, a redis-server binary, Docker
// (redis:7-alpine), fail.
//
// Each test gets a database of its own, cloned from a template that has
// testdata/schema.sql applied, so tests can call t.Parallel:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		url := pgtest.NewDatabase(t)
//		...
//	}
//
// The non-test half of the API (Start, StartLocal, StartDocker,
// CreateTemplate, CreateDatabase, StartRedisServer) takes a context instead of
// a *testing.T, so programs such as examples/tour can use it too.
package pgtest

import (
	"fmt"
	"strings"
)

// Environment variables that name servers someone already runs.
const (
	// EnvDatabaseURL names the variable holding the URL of a PostgreSQL server
	// (a superuser connection) that the tests may create databases on.
	EnvDatabaseURL = "PGKIT_TEST_DATABASE_URL"
	// EnvRedisURL names the variable holding the URL of a Redis server the
	// tests may use.
	EnvRedisURL = "PGKIT_TEST_REDIS_URL"
)

// Option configures a PostgreSQL server started by Start, StartLocal,
// StartDocker or StartCluster.
type Option func(*options)

type options struct {
	settings  []setting
	owner     int // WithOwner's process; 0: this one
	dataFiles []dataFile
}

type dataFile struct{ name, content string }

// WithDataFile writes a file into a local cluster's data directory after
// initdb, owned by the server's OS user with mode 0600: pg_hba.conf to
// replace initdb's (keep trust for postgres on 127.0.0.1, which the
// harness connects as), server.crt and server.key for
// WithSetting("ssl", "on"). The Docker path ignores it.
func WithDataFile(name, content string) Option {
	return func(o *options) { o.dataFiles = append(o.dataFiles, dataFile{name, content}) }
}

// WithOwner ties a local cluster's life to process pid instead of this
// one: its watchdog stops the server and removes its files once pid has
// ended, and this process's Close is not needed. It is how the test
// binaries of one go test run share one server: pid is the go command. The
// Docker path ignores it.
func WithOwner(pid int) Option {
	return func(o *options) { o.owner = pid }
}

type setting struct{ name, value string }

// WithSetting sets a server setting, passed to postgres as -c name=value,
// for example WithSetting("max_connections", "300"). Later values for the
// same name win. The setting stays in force across Cluster.Stop and
// Cluster.Start.
func WithSetting(name, value string) Option {
	return func(o *options) { o.settings = append(o.settings, setting{name, value}) }
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// postgresArgs returns the -c flags for the settings, in order.
func (o options) postgresArgs() []string {
	args := make([]string, 0, 2*len(o.settings))
	for _, s := range o.settings {
		args = append(args, "-c", s.name+"="+s.value)
	}
	return args
}

// noPostgresError is the error returned when no way to reach a PostgreSQL
// server worked; it names the three ways and why each failed.
func noPostgresError(envVar string, reasons ...string) error {
	return fmt.Errorf("pgtest: no PostgreSQL server for the tests (%s). Provide one of:\n"+
		"  1. set %s to a server's URL, e.g. %s=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable\n"+
		"  2. install PostgreSQL server binaries (initdb, pg_ctl), e.g. `apt-get install postgresql`\n"+
		"  3. run a Docker engine and put the docker command on PATH",
		strings.Join(reasons, "; "), envVar, envVar)
}

// noRedisError is the error returned when no way to reach a Redis server
// worked; it names the three ways and why each failed.
func noRedisError(reasons ...string) error {
	return fmt.Errorf("pgtest: no Redis server for the tests (%s). Provide one of:\n"+
		"  1. set %s to a server's URL, e.g. %s=redis://127.0.0.1:6379/0\n"+
		"  2. install the redis-server binary, e.g. `apt-get install redis-server`\n"+
		"  3. run a Docker engine and put the docker command on PATH",
		strings.Join(reasons, "; "), EnvRedisURL, EnvRedisURL)
}

// reason is err's message without the package prefix, for a list of
// reasons inside another pgtest error.
func reason(err error) string {
	return strings.TrimPrefix(err.Error(), "pgtest: ")
}
