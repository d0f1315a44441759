package cache_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
)

// TeamSummary is what a per-tenant dashboard shows.
type TeamSummary struct {
	Users int64 `json:"users"`
}

// ExampleNew caches per-tenant statistics for 5 minutes, loads them once
// however many requests miss together, and lets the transaction that
// changes them invalidate them. DATABASE_URL names a database with the chat
// schema of testdata/schema.sql.
func ExampleNew() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	tenant := fmt.Sprint("acme-", time.Now().UnixNano()) // a tenant of this run's own
	if _, err := db.Exec(ctx, `WITH t AS (INSERT INTO tenants (id, name) VALUES ($1, 'Acme') RETURNING id)
		INSERT INTO users (tenant_id, email) SELECT id, e FROM t, unnest(ARRAY['ann@acme.test', 'bob@acme.test']) e`, tenant); err != nil {
		panic(err)
	}

	store, err := cache.NewMemoryStore(cache.MemoryStoreConfig{}) // or redisstore.New(client, "myapp:")
	if err != nil {
		panic(err)
	}
	defer store.Close()
	summaries, err := cache.New[TeamSummary](store, cache.Config{Name: "team_summary", TTL: 5 * time.Minute})
	if err != nil {
		panic(err)
	}
	defer summaries.Close()

	summary := func(tenant string) TeamSummary {
		s, err := summaries.Tenant(tenant).GetOrLoad(ctx, "summary", func(ctx context.Context) (TeamSummary, error) {
			fmt.Println("  (loading from PostgreSQL)")
			var s TeamSummary
			err := db.QueryRow(ctx, `SELECT count(*) FROM users WHERE tenant_id = $1`, tenant).Scan(&s.Users)
			return s, err
		})
		if err != nil {
			panic(err)
		}
		return s
	}
	fmt.Println("users:", summary(tenant).Users)
	fmt.Println("users:", summary(tenant).Users)

	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (tenant_id, email) VALUES ($1, 'cy@acme.test')`, tenant); err != nil {
			return err
		}
		summaries.Tenant(tenant).InvalidateOnCommit(tx, "summary")
		return nil
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("users:", summary(tenant).Users)
	fmt.Printf("hit ratio: %.2f\n", summaries.Stats().HitRatio)
	// Output:
	//   (loading from PostgreSQL)
	// users: 2
	// users: 2
	//   (loading from PostgreSQL)
	// users: 3
	// hit ratio: 0.33
}
