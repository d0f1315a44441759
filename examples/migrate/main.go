// Command migrate applies the SQL migrations in migrations/ with goose, over
// pgkit's database/sql bridge (DB.SQLDB): the migrations' statements are
// traced and bounded like the service's own.
//
//	DATABASE_URL=postgres://localhost:5432/app go run ./migrate
package main

import (
	"context"
	"embed"
	"io/fs"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var embedded embed.FS

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Getenv("DATABASE_URL")); err != nil {
		log.Fatal(err)
	}
}

// run applies every migration not yet applied and logs each one.
func run(ctx context.Context, url string) error {
	// A DB of the migrations' own: a statement_timeout that fits the longest
	// migration (the service's 60s default would end a long index build),
	// and two connections, one for goose's lock and one for the work.
	db, err := pgkit.Open(ctx, pgkit.Config{URL: url, Name: "migrate", MaxConns: 2, StatementTimeout: 30 * time.Minute})
	if err != nil {
		return err
	}
	defer db.Close()

	migrations, err := fs.Sub(embedded, "migrations")
	if err != nil {
		return err
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db.SQLDB(), migrations)
	if err != nil {
		return err
	}
	results, err := provider.Up(ctx)
	for _, r := range results {
		log.Printf("migrated %s in %s", r.Source.Path, r.Duration)
	}
	return err
}
