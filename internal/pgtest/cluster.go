package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a throwaway PostgreSQL server of its own: a local initdb
// cluster in a temp dir, or a Docker container. Its superuser is postgres
// and it trusts every local connection, so URLs carry no password. A
// Cluster is safe for concurrent use.
type Cluster struct {
	mu      sync.Mutex
	host    string
	port    int
	running bool
	closed  bool
	impl    clusterImpl
}

// clusterImpl is what a kind of server (local, Docker) provides.
type clusterImpl interface {
	// stop stops the server and keeps its data.
	stop(ctx context.Context) error
	// start starts it again and returns the host and port it listens on.
	start(ctx context.Context) (host string, port int, err error)
	// close stops it, if running, and removes everything it left.
	close(ctx context.Context) error
}

// Start starts a throwaway PostgreSQL server: from local binaries if found
// (see StartLocal), else in Docker (see StartDocker), else it returns an
// error that names the three ways to get a server (set
// PGKIT_TEST_DATABASE_URL, install the PostgreSQL server binaries, run a
// Docker engine). The caller must Close it.
func Start(ctx context.Context, opts ...Option) (*Cluster, error) {
	return defaultFinder().startCluster(ctx, nil, opts...)
}

// startCluster starts a cluster from local binaries, else in Docker; its
// error lists the reasons given and why each way failed.
func (f finder) startCluster(ctx context.Context, reasons []string, opts ...Option) (*Cluster, error) {
	bins, err := f.postgresBins(ctx)
	if err == nil {
		c, err := startLocal(ctx, bins, opts...)
		if err == nil {
			return c, nil
		}
		reasons = append(reasons, reason(err))
	} else {
		reasons = append(reasons, reason(err))
	}
	if err := f.dockerOK(ctx); err != nil {
		reasons = append(reasons, reason(err))
		return nil, noPostgresError(f.envName(), reasons...)
	}
	c, err := StartDocker(ctx, opts...)
	if err != nil {
		reasons = append(reasons, reason(err))
		return nil, noPostgresError(f.envName(), reasons...)
	}
	return c, nil
}

// URL returns the URL of the server's postgres database, for the postgres
// superuser: postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
// On the Docker path Stop and Start may change the mapped port; URL always
// reflects the current one, so call it again after Start.
func (c *Cluster) URL() string { return c.URLFor("postgres") }

// URLFor returns the URL of the named database on the server, for the
// postgres superuser. See URL about ports on the Docker path.
func (c *Cluster) URLFor(database string) string {
	c.mu.Lock()
	host, port := c.host, c.port
	c.mu.Unlock()
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on (on the Docker path, the
// port currently mapped on the host).
func (c *Cluster) Port() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.port
}

// Stop stops the server with a fast shutdown (open sessions are ended) and
// keeps its data, so Start can bring it back. Stopping a stopped server does
// nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: Stop on a closed cluster")
	}
	if !c.running {
		return nil
	}
	if err := c.impl.stop(ctx); err != nil {
		return err
	}
	c.running = false
	return nil
}

// Start starts a stopped server again, with the same data and settings, and
// returns once it accepts connections. A local cluster comes back on the
// same port; a Docker one may get another mapped port (see URL). Starting a
// running server does nothing.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: Start on a closed cluster")
	}
	if c.running {
		return nil
	}
	host, port, err := c.impl.start(ctx)
	if err != nil {
		return err
	}
	c.host, c.port, c.running = host, port, true
	return nil
}

// Close stops the server, if it runs, and removes everything it left: no
// process, no temp dir, no container. Calling Close again does nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed, c.running = true, false
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.impl.close(ctx)
}

// waitAccepting polls until a connection to url succeeds and answers a
// query, or until ctx or the timeout ends; it returns the last error.
func waitAccepting(ctx context.Context, connURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		last = pingOnce(ctx, connURL)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: server did not accept connections: %w (last error: %w)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func pingOnce(ctx context.Context, connURL string) error {
	var one int
	return queryOnce(ctx, connURL, "SELECT 1", &one)
}

// queryOnce runs sql on a connection of its own, within 5s, and scans its
// row into dest.
func queryOnce(ctx context.Context, connURL, sql string, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// withDatabase returns connURL with its database replaced by name. connURL
// may be a URL (postgres:// or postgresql://) or a keyword/value string.
func withDatabase(connURL, name string) (string, error) {
	if strings.HasPrefix(connURL, "postgres://") || strings.HasPrefix(connURL, "postgresql://") {
		u, err := url.Parse(connURL)
		if err != nil {
			return "", fmt.Errorf("pgtest: parse database URL: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// Keyword/value: a later keyword overrides an earlier one.
	return strings.TrimSpace(connURL) + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name) + "'", nil
}
