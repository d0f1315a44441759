// Command tour is the pgkit tour that `make demo` runs. It needs no
// configuration: it uses PGKIT_DATABASE_URL or DATABASE_URL when set, and
// otherwise starts a throwaway PostgreSQL server (local binaries, else
// Docker) that it removes on exit. It creates the demo schema, opens pgkit,
// and shows each feature: the effective pool configuration, per-request
// database time, a slow query caught, a tenant transaction, bulk writes, the
// cache, query insights (an N+1 loop, a slow query's plan, a verified index,
// the server's view), the health report, the pool statistics and pgkit's
// Prometheus metrics.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// demoSchema holds the demo's tables, so that a database given by URL is
// left as it was: the schema is dropped on exit.
const demoSchema = "pgkit_demo"

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tour:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))

	serverURL, stop, err := server(ctx)
	if err != nil {
		return err
	}
	defer stop()

	if err := createSchema(ctx, serverURL); err != nil {
		return err
	}
	defer dropSchema(serverURL)

	step("1. Open: a tuned pool")
	registry := prometheus.NewRegistry()
	db, err := pgkit.Open(ctx, pgkit.Config{
		URL:             withSearchPath(serverURL, demoSchema),
		ApplicationName: "pgkit-tour",
		Logger:          logger,
		Registerer:      registry,
	})
	if err != nil {
		return err
	}
	defer db.Close()
	printConfig(db.Config())

	step("2. Some work, with its database time counted (pgkit.WithStats)")
	reqCtx := pgkit.WithStats(ctx)
	if err := work(reqCtx, db); err != nil {
		return err
	}
	stats, _ := pgkit.StatsFrom(reqCtx)
	fmt.Printf("this unit of work: %d statements, %s in the database, %d slow, %d failed\n",
		stats.Queries, stats.Duration.Round(time.Microsecond), stats.Slow, stats.Errors)

	step("3. A slow query, caught by the slow-query log (threshold 500ms)")
	if _, err := db.Exec(pgkit.WithQueryName(ctx, "deliberately_slow"), `SELECT pg_sleep(0.6)`); err != nil {
		return err
	}
	for _, q := range db.SlowQueries() {
		fmt.Printf("db.SlowQueries(): %s (%s) took %s: %s\n", q.Name, q.Op, q.Duration.Round(time.Millisecond), q.SQL)
	}

	step("4. A conversation operation: one tenant transaction, all or nothing")
	if err := conversationOperation(ctx, db); err != nil {
		return err
	}

	step("5. Bulk writes: 10,000 messages with their ids, usage updated in one statement, a background writer")
	if err := bulkTour(ctx, db); err != nil {
		return err
	}

	step("6. Cache-aside: per-tenant dashboard stats, a miss, a hit, invalidation on commit")
	if err := cacheTour(ctx, db); err != nil {
		return err
	}

	step("7. Query insights: an N+1 loop caught with its line, a slow query's plan, a verified index")
	if err := insightsTour(ctx, db, serverURL, logger); err != nil {
		return err
	}

	step("8. Health")
	printJSON(db.Health(ctx))

	step("9. Pool statistics")
	printJSON(db.PoolStats())

	step("10. GET /metrics (pgkit's series, buckets left out)")
	return printMetrics(ctx, registry)
}

// printMetrics serves the registry as a service would and prints the pgkit
// lines of what a scrape gets.
func printMetrics(ctx context.Context, registry *prometheus.Registry) error {
	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pgkit_") && !strings.Contains(line, "_bucket{") {
			fmt.Println("  " + line)
		}
	}
	srv.Client().CloseIdleConnections()
	return sc.Err()
}

// server returns the URL of the server to use, and how to stop it if it was
// started here.
func server(ctx context.Context) (string, func(), error) {
	for _, env := range []string{"PGKIT_DATABASE_URL", "DATABASE_URL"} {
		if u := os.Getenv(env); u != "" {
			fmt.Printf("using the database in $%s\n", env)
			return u, func() {}, nil
		}
	}
	fmt.Println("no PGKIT_DATABASE_URL or DATABASE_URL: starting a throwaway PostgreSQL server")
	start := time.Now()
	// pg_stat_statements preloaded, for the server's view of the work.
	cluster, err := pgtest.Start(ctx, pgtest.WithSetting("shared_preload_libraries", "pg_stat_statements"))
	if err != nil {
		return "", nil, err
	}
	fmt.Printf("server ready on port %d in %s\n", cluster.Port(), time.Since(start).Round(time.Millisecond))
	return cluster.URL(), func() {
		if err := cluster.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "tour: stopping the throwaway server:", err)
		}
	}, nil
}

func createSchema(ctx context.Context, serverURL string) error {
	schema, err := os.ReadFile(pgtest.SchemaPath())
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, fmt.Sprintf("DROP SCHEMA IF EXISTS %[1]s CASCADE; CREATE SCHEMA %[1]s; SET search_path = %[1]s;\n%s",
		demoSchema, schema))
	return err
}

func dropSchema(serverURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, serverURL); err == nil {
		_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+demoSchema+" CASCADE")
		_ = conn.Close(ctx)
	}
}

func work(ctx context.Context, db *pgkit.DB) error {
	if _, err := db.Exec(pgkit.WithQueryName(ctx, "create_tenant"), `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme Inc.')`); err != nil {
		return err
	}
	start := time.Now()
	n, err := db.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"tenant_id", "email", "name"},
		pgx.CopyFromSlice(1000, func(i int) ([]any, error) {
			return []any{"acme", fmt.Sprintf("user%d@acme.test", i), fmt.Sprintf("User %d", i)}, nil
		}))
	if err != nil {
		return err
	}
	fmt.Printf("copied %d users in %s\n", n, time.Since(start).Round(time.Microsecond))
	var count int
	if err := db.QueryRow(ctx, "-- name: CountUsers :one\nSELECT COUNT(*) FROM users WHERE tenant_id = $1", "acme").Scan(&count); err != nil {
		return err
	}
	fmt.Printf("SELECT COUNT(*) FROM users: %d\n", count)
	return nil
}

// conversationOperation is a complex conversation operation: a
// conversation, its welcome message and a usage record in one transaction
// scoped to the tenant (WithTenant sets app.tenant_id for row-level security
// policies), retried on serialization failures and deadlocks, with an
// on-commit hook. It runs once for real and once with a bad user id, to show
// the rollback.
func conversationOperation(ctx context.Context, db *pgkit.DB) error {
	var userID int64
	if err := db.QueryRow(ctx, `SELECT id FROM users WHERE tenant_id = 'acme' ORDER BY id LIMIT 1`).Scan(&userID); err != nil {
		return err
	}
	create := func(userID int64, title string) (int64, error) {
		var convID int64
		err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
			if err := tx.QueryRow(ctx, `INSERT INTO conversations (tenant_id, user_id, title) VALUES ($1, $2, $3) RETURNING id`,
				"acme", userID, title).Scan(&convID); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO messages (tenant_id, conversation_id, role, content) VALUES ('acme', $1, 'system', $2)`,
				convID, "Welcome to "+title); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO usage_records (tenant_id, user_id, conversation_id) VALUES ('acme', $1, $2)`,
				userID, convID); err != nil {
				return err
			}
			tx.OnCommit(func(context.Context) { fmt.Printf("on commit: conversation %d is in the database\n", convID) })
			return nil
		}, pgkit.WithTenant("acme"), pgkit.WithRetry(pgkit.RetryPolicy{}))
		return convID, err
	}
	if _, err := create(userID, "Getting started"); err != nil {
		return err
	}
	_, err := create(-1, "Broken")
	fmt.Printf("with a user that does not exist: %v\n", err)
	var conversations, messages, usage int
	if err := db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM conversations), (SELECT COUNT(*) FROM messages),
		(SELECT COUNT(*) FROM usage_records)`).Scan(&conversations, &messages, &usage); err != nil {
		return err
	}
	fmt.Printf("after both: %d conversation, %d message, %d usage record (the failed one left nothing)\n", conversations, messages, usage)
	return nil
}

// message is a row of messages; id and created_at are filled by the database.
type message struct {
	ID             int64     `db:"id"`
	TenantID       string    `db:"tenant_id"`
	ConversationID int64     `db:"conversation_id"`
	Role           string    `db:"role"`
	Content        string    `db:"content"`
	ClientID       *string   `db:"client_id"`
	CreatedAt      time.Time `db:"created_at,default"`
}

// usage is the part of usage_records a usage report's bulk update sets.
type usage struct {
	ID         int64 `db:"id"`
	TokensUsed int32 `db:"tokens_used"`
}

// bulkTour is bulk message creation and bulk usage updates, and
// its background message save done by a Writer that loses nothing.
func bulkTour(ctx context.Context, db *pgkit.DB) error {
	var convID int64
	if err := db.QueryRow(ctx, `SELECT id FROM conversations ORDER BY id LIMIT 1`).Scan(&convID); err != nil {
		return err
	}
	msgs := make([]message, 10_000)
	for i := range msgs {
		msgs[i] = message{TenantID: "acme", ConversationID: convID, Role: "user", Content: fmt.Sprintf("message %d", i)}
	}
	start := time.Now()
	if err := pgkit.InsertReturning(ctx, db, "messages", msgs); err != nil {
		return err
	}
	d := time.Since(start)
	fmt.Printf("InsertReturning: %d messages in %s (%.0f rows/s), ids %d..%d\n",
		len(msgs), d.Round(time.Millisecond), float64(len(msgs))/d.Seconds(), msgs[0].ID, msgs[len(msgs)-1].ID)

	if _, err := db.Exec(ctx, `INSERT INTO usage_records (tenant_id, user_id)
		SELECT 'acme', id FROM users WHERE tenant_id = 'acme'`); err != nil {
		return err
	}
	rows, err := db.Query(ctx, `SELECT id FROM usage_records`)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	updates := make([]usage, len(ids))
	for i, id := range ids {
		updates[i] = usage{ID: id, TokensUsed: int32(100 + i%50)}
	}
	start = time.Now()
	n, err := pgkit.UpdateMany(ctx, db, "usage_records", updates, []string{"id"})
	if err != nil {
		return err
	}
	d = time.Since(start)
	fmt.Printf("UpdateMany: %d usage records in %s (%.0f rows/s)\n", n, d.Round(time.Millisecond), float64(n)/d.Seconds())

	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[message]{Table: "messages", Name: "chat_messages", DedupeKey: "client_id"})
	if err != nil {
		return err
	}
	for i := range 500 {
		id := fmt.Sprintf("ws-%d", i)
		if err := w.Write(ctx, message{TenantID: "acme", ConversationID: convID, Role: "user", Content: "from a WebSocket", ClientID: &id}); err != nil {
			return err
		}
	}
	fmt.Println("Writer: 500 messages queued; Write returned at once")
	if err := w.Flush(ctx); err != nil {
		return err
	}
	var written int
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM messages WHERE client_id LIKE 'ws-%'`).Scan(&written); err != nil {
		return err
	}
	fmt.Printf("Writer.Flush: %d of them are in the database\n", written)
	return w.Close(ctx)
}

func printConfig(c pgkit.Config) {
	rows := [][2]string{
		{"URL", c.URL},
		{"MaxConns", fmt.Sprint(c.MaxConns)},
		{"MinConns", fmt.Sprint(c.MinConns)},
		{"MinIdleConns", fmt.Sprint(c.MinIdleConns)},
		{"AcquireTimeout", c.AcquireTimeout.String()},
		{"MaxConnLifetime", c.MaxConnLifetime.String()},
		{"MaxConnLifetimeJitter", c.MaxConnLifetimeJitter.String()},
		{"MaxConnIdleTime", c.MaxConnIdleTime.String()},
		{"HealthCheckPeriod", c.HealthCheckPeriod.String()},
		{"PingTimeout", c.PingTimeout.String()},
		{"ConnectTimeout", c.ConnectTimeout.String()},
		{"StatementTimeout", c.StatementTimeout.String()},
		{"IdleInTransactionTimeout", c.IdleInTransactionTimeout.String()},
		{"ApplicationName", c.ApplicationName},
		{"EnableJIT", fmt.Sprint(c.EnableJIT)},
		{"Keepalive idle/interval/count", fmt.Sprintf("%s/%s/%d", c.KeepaliveIdle, c.KeepaliveInterval, c.KeepaliveCount)},
		{"HealthTimeout", c.HealthTimeout.String()},
	}
	for _, r := range rows {
		fmt.Printf("  %-30s %s\n", r[0], r[1])
	}
}

func printJSON(v any) {
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		fmt.Println("  (cannot print:", err, ")")
		return
	}
	fmt.Println("  " + string(b))
}

func step(title string) { fmt.Printf("\n== %s\n", title) }

// withSearchPath adds search_path to a connection string in either form.
func withSearchPath(connString, schema string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		if u, err := url.Parse(connString); err == nil {
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return connString + " search_path=" + schema
}
