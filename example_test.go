package pgkit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/prometheus/client_golang/prometheus"
)

// DATABASE_URL names the database in every Example: set it to yours to run
// them.

func ExampleOpen() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{
		URL:        os.Getenv("DATABASE_URL"),
		Name:       "example-open", // the "pool" label of its metrics
		MaxConns:   4,
		Registerer: prometheus.NewRegistry(), // yours, e.g. prometheus.DefaultRegisterer
	})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	var one int
	if err := db.QueryRow(pgkit.WithQueryName(ctx, "ping"), "SELECT 1").Scan(&one); err != nil {
		panic(err)
	}
	fmt.Println("one:", one)
	fmt.Println("max connections:", db.PoolStats().Max)
	// Output:
	// one: 1
	// max connections: 4
}

// PageView is a row the background writer saves.
type PageView struct {
	Path string `db:"path"`
	Run  string `db:"run"`
}

// ExampleNewWriter saves rows in the background, batched into COPY: Write
// returns at once, and Close writes what is queued.
func ExampleNewWriter() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS page_views (path text NOT NULL, run text NOT NULL, at timestamptz NOT NULL DEFAULT now())`); err != nil {
		panic(err)
	}

	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[PageView]{Table: "page_views", Overflow: pgkit.OverflowFail})
	if err != nil {
		panic(err)
	}
	run := fmt.Sprint(time.Now().UnixNano()) // this run's rows
	for _, path := range []string{"/", "/pricing", "/docs"} {
		if err := w.Write(ctx, PageView{Path: path, Run: run}); err != nil {
			panic(err) // ErrQueueFull: the queue is full, shed the item
		}
	}
	if err := w.Close(ctx); err != nil {
		panic(err)
	}
	var n int
	_ = db.QueryRow(ctx, `SELECT count(*) FROM page_views WHERE run = $1`, run).Scan(&n)
	fmt.Println("written:", w.Stats().Written, "in the table:", n)
	// Output:
	// written: 3 in the table: 3
}

// ExampleMiddleware reports each request's database time to the client
// as a Server-Timing header.
func ExampleMiddleware() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	handler := pgkit.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int
		for range 2 {
			if err := db.QueryRow(r.Context(), "SELECT 1").Scan(&n); err != nil {
				http.Error(w, "database error", http.StatusInternalServerError)
				return
			}
		}
		stats, _ := pgkit.StatsFrom(r.Context())
		fmt.Println("queries in this request:", stats.Queries)
		w.WriteHeader(http.StatusNoContent)
	}))
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	timing := regexp.MustCompile(`^db;dur=[0-9.]+;desc="2 queries"$`)
	fmt.Println("Server-Timing as expected:", timing.MatchString(rec.Header().Get("Server-Timing")))
	// Output:
	// queries in this request: 2
	// Server-Timing as expected: true
}

// ExampleHealthHandler serves the database's health to load balancers and
// probes: 200 when up or degraded, 503 when down.
func ExampleHealthHandler() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	mux := http.NewServeMux()
	mux.Handle("/healthz", pgkit.HealthHandler(db))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var body struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		panic(err)
	}
	fmt.Println(rec.Code, body.Status)
	// Output:
	// 200 up
}

// ExampleDB_SQLDB hands database/sql code (a migration tool, sqlx) a
// *sql.DB whose connections are the pool's: traced, bounded, and back in the
// pool after each use.
func ExampleDB_SQLDB() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close() // closes the *sql.DB too

	var version int
	if err := db.SQLDB().QueryRowContext(ctx, `SELECT current_setting('server_version_num')::int / 10000`).Scan(&version); err != nil {
		panic(err)
	}
	fmt.Println("server 12 or newer:", version >= 12, "connections held:", db.PoolStats().Acquired)
	// Output:
	// server 12 or newer: true connections held: 0
}
