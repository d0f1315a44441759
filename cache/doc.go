// Package cache is a cache-aside cache for the results of frequent,
// expensive reads, over a Store: the in-memory MemoryStore, or Redis
// through package redisstore (github.com/pgkit-dev/pgkit/cache/redisstore).
//
// On a miss, Cache.GetOrLoad runs the load function once per key however
// many callers wait for it, and stores the result for Config.TTL plus
// jitter. A store that fails or does not answer within Config.StoreTimeout
// is treated as a miss: the store never makes a call fail.
//
//	store, err := cache.NewMemoryStore(cache.MemoryStoreConfig{}) // or redisstore.New(client, "myapp:")
//	summaries, err := cache.New[TenantSummary](store, cache.Config{Name: "tenant_summary"})
//	defer summaries.Close()
//	s, err := summaries.Tenant(tenantID).GetOrLoad(ctx, "summary", func(ctx context.Context) (TenantSummary, error) {
//		return loadTenantSummary(ctx, db, tenantID) // on a miss only
//	})
//
// Keys are built with Key (tenant first), and Cache.Tenant scopes a cache
// to one tenant. Cache.InvalidateOnCommit deletes keys once a pgkit
// transaction commits, and Cache.DashboardStats is a source for
// pgkit.WithDashboardSource. The package imports pgkit (for
// pgkit.ConfigError, pgkit.Disabled and pgkit.ErrEmptyTenant); pgkit does
// not import it.
package cache
