package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

type poolConfig struct {
	databaseURL string
	queries     int
	rounds      int
	maxConns    int
	users       int
	compare     string
	query       string
	keep        bool
}

func parsePoolFlags(args []string) (poolConfig, error) {
	var c poolConfig
	fs := flag.NewFlagSet("loadtest pool", flag.ContinueOnError)
	fs.StringVar(&c.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "a superuser or owner URL ($DATABASE_URL); the test works in a schema of its own, pgkit_loadtest, dropped at the end; empty: a throwaway server")
	fs.IntVar(&c.queries, "queries", 1000, "concurrent queries per round (one goroutine each)")
	fs.IntVar(&c.rounds, "rounds", 5, "measured rounds per pool (after one warm-up round)")
	fs.IntVar(&c.maxConns, "max-conns", 0, "pool size; 0: pgkit.DefaultMaxConns()")
	fs.IntVar(&c.users, "users", 10_000, "users in the table")
	fs.StringVar(&c.compare, "compare", "", `"raw": run the same through a plain pgxpool, alternating rounds, and print the ratio`)
	fs.StringVar(&c.query, "query", "SELECT COUNT(*) FROM users", "the query")
	fs.BoolVar(&c.keep, "keep", false, "keep the pgkit_loadtest schema")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.compare != "" && c.compare != "raw" {
		return c, fmt.Errorf("-compare: only raw, not %q", c.compare)
	}
	if c.queries < 1 || c.rounds < 1 || c.users < 0 {
		return c, errors.New("-queries and -rounds must be positive")
	}
	if c.maxConns == 0 {
		c.maxConns = int(pgkit.DefaultMaxConns())
	}
	return c, nil
}

// poolResult is one pool's line.
type poolResult struct {
	Test          string    `json:"test"`
	Impl          string    `json:"impl"`
	Query         string    `json:"query"`
	Concurrency   int       `json:"concurrency"`
	Rounds        int       `json:"rounds"`
	MaxConns      int       `json:"max_conns"`
	Queries       int       `json:"queries"`
	Errors        int       `json:"errors"`
	Seconds       float64   `json:"seconds"`
	QueriesPerSec float64   `json:"queries_per_sec"`
	P50ms         float64   `json:"p50_ms"`
	P95ms         float64   `json:"p95_ms"`
	P99ms         float64   `json:"p99_ms"`
	RoundQPS      []float64 `json:"round_queries_per_sec"`
}

const loadtestSchema = "pgkit_loadtest"

func runPool(ctx context.Context, c poolConfig, out io.Writer) error {
	serverURL := c.databaseURL
	if serverURL == "" {
		fmt.Fprintln(os.Stderr, "loadtest: no -database-url: starting a throwaway PostgreSQL server")
		cluster, err := pgtest.Start(ctx, pgtest.WithSetting("max_connections", "300"))
		if err != nil {
			return err
		}
		defer func() { _ = cluster.Close() }()
		serverURL = cluster.URL()
	}
	if err := prepare(ctx, serverURL, c.users); err != nil {
		return err
	}
	if !c.keep {
		defer drop(serverURL)
	}
	url, err := withSearchPath(serverURL, loadtestSchema)
	if err != nil {
		return err
	}

	db, err := pgkit.Open(ctx, pgkit.Config{URL: url, MaxConns: int32(c.maxConns), ApplicationName: "loadtest-pgkit"})
	if err != nil {
		return err
	}
	defer db.Close()
	runners := []runner{{"pgkit", func(ctx context.Context) error {
		var n int64
		return db.QueryRow(ctx, c.query).Scan(&n)
	}}}
	if c.compare == "raw" {
		pcfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			return err
		}
		pcfg.MaxConns = int32(c.maxConns)
		pcfg.ConnConfig.RuntimeParams["application_name"] = "loadtest-raw"
		raw, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return err
		}
		defer raw.Close()
		runners = append(runners, runner{"raw", func(ctx context.Context) error {
			var n int64
			return raw.QueryRow(ctx, c.query).Scan(&n)
		}})
	}

	type acc struct {
		lat    []time.Duration
		errs   int
		wall   time.Duration
		rounds []float64
	}
	accs := make([]acc, len(runners))
	for round := -1; round < c.rounds; round++ { // round -1 warms both pools up
		for k := range runners {
			i := k
			if round%2 == 1 { // alternate which goes first
				i = len(runners) - 1 - k
			}
			lat, errs, wall := runners[i].round(ctx, c.queries)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if round < 0 {
				continue
			}
			a := &accs[i]
			a.lat = append(a.lat, lat...)
			a.errs += errs
			a.wall += wall
			a.rounds = append(a.rounds, round2(float64(c.queries)/wall.Seconds()))
		}
	}
	results := make([]poolResult, len(runners))
	for i, r := range runners {
		a := accs[i]
		p50, p95, p99 := percentiles(a.lat)
		n := c.queries * c.rounds
		results[i] = poolResult{Test: "pool", Impl: r.name, Query: c.query, Concurrency: c.queries, Rounds: c.rounds,
			MaxConns: c.maxConns, Queries: n, Errors: a.errs, Seconds: round(a.wall.Seconds()),
			QueriesPerSec: round2(float64(n-a.errs) / a.wall.Seconds()), P50ms: p50, P95ms: p95, P99ms: p99, RoundQPS: a.rounds}
		if err := emit(out, results[i]); err != nil {
			return err
		}
	}
	if len(results) == 2 {
		if err := emit(out, map[string]any{"test": "pool", "compare": "pgkit/raw",
			"throughput_ratio": round(results[0].QueriesPerSec / results[1].QueriesPerSec),
			"p99_ratio":        round(results[0].P99ms / results[1].P99ms)}); err != nil {
			return err
		}
	}
	for _, r := range results {
		if r.Errors > 0 {
			return errFailed
		}
	}
	return nil
}

type runner struct {
	name string
	fn   func(ctx context.Context) error
}

// round runs n queries at once, one goroutine each, and returns each one's
// latency (acquire + query), the errors and the wall time.
func (r runner) round(ctx context.Context, n int) ([]time.Duration, int, time.Duration) {
	lat := make([]time.Duration, n)
	errs := make([]bool, n)
	var wg sync.WaitGroup
	startGun := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGun
			t := time.Now()
			errs[i] = r.fn(ctx) != nil
			lat[i] = time.Since(t)
		}()
	}
	start := time.Now()
	close(startGun)
	wg.Wait()
	wall := time.Since(start)
	failed := 0
	for _, e := range errs {
		if e {
			failed++
		}
	}
	return lat, failed, wall
}

// prepare creates the schema pgkit_loadtest with the test schema and fills
// users up to n (idempotent), then analyzes it.
func prepare(ctx context.Context, serverURL string, n int) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('`+loadtestSchema+`.users') IS NOT NULL`).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		schema, err := os.ReadFile(pgtest.SchemaPath())
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE SCHEMA %[1]s; SET search_path = %[1]s;\n%s", loadtestSchema, schema)); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('loadtest', 'Load test')`); err != nil {
			return err
		}
	}
	if _, err := conn.Exec(ctx, `SET search_path = `+loadtestSchema); err != nil {
		return err
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT COUNT(*) FROM users`).Scan(&have); err != nil {
		return err
	}
	if have < n {
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"tenant_id", "email", "name"},
			pgx.CopyFromSlice(n-have, func(i int) ([]any, error) {
				return []any{"loadtest", fmt.Sprintf("user%d@loadtest.test", have+i), fmt.Sprintf("User %d", have+i)}, nil
			})); err != nil {
			return err
		}
	}
	_, err = conn.Exec(ctx, `VACUUM ANALYZE users`)
	return err
}

func drop(serverURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, serverURL); err == nil {
		_, _ = conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+loadtestSchema+` CASCADE`)
		_ = conn.Close(ctx)
	}
}

// withSearchPath adds search_path to a postgres:// URL.
func withSearchPath(connString, schema string) (string, error) {
	u, err := url.Parse(connString)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("-database-url must be a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
