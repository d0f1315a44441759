package cache_test

import (
	"context"
	"fmt"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// ExampleNew is a cached per-tenant dashboard: per-tenant
// statistics cached for 5 minutes, loaded once however many requests miss
// together, and invalidated by the transaction that changes them.
func ExampleNew() {
	url, drop := pgtest.ForExample()
	defer drop()
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: url, MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	_, _ = db.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')`)
	_, _ = db.Exec(ctx, `INSERT INTO users (tenant_id, email) VALUES ('acme', 'ann@acme.test'), ('acme', 'bob@acme.test')`)

	store, err := cache.NewMemoryStore(cache.MemoryStoreConfig{}) // or redisstore.New(client, "myapp:")
	if err != nil {
		panic(err)
	}
	defer store.Close()
	c, err := cache.New[dashboardStats](store, cache.Config{Name: "dashboard_stats"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	stats := func(tenant string) dashboardStats {
		s, err := c.Tenant(tenant).GetOrLoad(ctx, "dashboard_stats", func(ctx context.Context) (dashboardStats, error) {
			fmt.Println("  (loading from PostgreSQL)")
			return queryDashboard(ctx, db, tenant)
		})
		if err != nil {
			panic(err)
		}
		return s
	}
	fmt.Println("users:", stats("acme").Users)
	fmt.Println("users:", stats("acme").Users)

	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (tenant_id, email) VALUES ('acme', 'cy@acme.test')`); err != nil {
			return err
		}
		c.Tenant("acme").InvalidateOnCommit(tx, "dashboard_stats")
		return nil
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("users:", stats("acme").Users)
	fmt.Printf("hit ratio: %.2f\n", c.Stats().HitRatio)
	// Output:
	//   (loading from PostgreSQL)
	// users: 2
	// users: 2
	//   (loading from PostgreSQL)
	// users: 3
	// hit ratio: 0.33
}
