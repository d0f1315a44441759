// Command quickstart is a service on pgkit: a pool from DATABASE_URL, its
// metrics on /metrics, its health on /healthz, and a handler whose database
// time is measured.
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/pgkit-dev/pgkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = ":8080"
	}
	log.Fatal(run(context.Background(), addr))
}

// run serves on addr until ctx ends.
func run(ctx context.Context, addr string) error {
	db, err := pgkit.Open(ctx, pgkit.Config{
		URL:        os.Getenv("DATABASE_URL"),
		Registerer: prometheus.DefaultRegisterer, // the pgkit_* series
		Logger:     slog.Default(),               // slow and failed statements
	})
	if err != nil {
		return err // names the bad Config field, never the password
	}
	defer db.Close()

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.Handle("GET /healthz", pgkit.HealthHandler(db)) // 503 when the database is down
	mux.Handle("GET /now", pgkit.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var now string
		ctx := pgkit.WithQueryName(r.Context(), "now") // the name label of its metrics
		if err := db.QueryRow(ctx, "SELECT now()::text").Scan(&now); err != nil {
			http.Error(w, "database error", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, now) // with a Server-Timing: db;dur=… header
	})))

	srv := &http.Server{Addr: addr, Handler: mux}
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return srv.ListenAndServe()
}
