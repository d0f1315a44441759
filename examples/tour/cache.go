package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/pgkit-dev/pgkit/cache/redisstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// dashboardStats is the per-tenant dashboard, cached in
// Redis under dashboard_stats:{tenant_id} for 5 minutes.
type dashboardStats struct {
	Users         int64   `json:"users"`
	Conversations int64   `json:"conversations"`
	Messages      int64   `json:"messages"`
	TokensUsed    int64   `json:"tokens_used"`
	CostCents     float64 `json:"cost_cents"`
}

func loadDashboardStats(ctx context.Context, q pgkit.Querier, tenant string) (dashboardStats, error) {
	var s dashboardStats
	err := q.QueryRow(pgkit.WithQueryName(ctx, "dashboard_stats"), `
		SELECT u.n, c.n, m.n, r.tokens, r.cost
		FROM (SELECT COUNT(*) AS n FROM users WHERE tenant_id = $1) u,
		     (SELECT COUNT(*) AS n FROM conversations WHERE tenant_id = $1) c,
		     (SELECT COUNT(*) AS n FROM messages WHERE tenant_id = $1) m,
		     (SELECT COALESCE(SUM(tokens_used), 0) AS tokens, COALESCE(SUM(cost_cents), 0)::float8 AS cost
		      FROM usage_records WHERE tenant_id = $1) r`, tenant).
		Scan(&s.Users, &s.Conversations, &s.Messages, &s.TokensUsed, &s.CostCents)
	return s, err
}

// cacheTour shows the cache on the dashboard statistics: a miss that
// loads from PostgreSQL, a hit, the hit ratio, and an insert committed with
// InvalidateOnCommit, after which the stats are fresh. It uses Redis at
// PGKIT_REDIS_URL when set, else the in-memory store.
func cacheTour(ctx context.Context, db *pgkit.DB) error {
	store, closeStore, err := tourStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()

	registry := prometheus.NewRegistry()
	statsCache, err := cache.New[dashboardStats](store, cache.Config{
		Name:       "dashboard_stats",
		TTL:        5 * time.Minute, // each entry gets up to 30s more (TTLJitter's default, TTL/10)
		Registerer: registry,
	})
	if err != nil {
		return err
	}
	defer statsCache.Close()
	acme := statsCache.Tenant("acme") // every key becomes cache.Key("acme", key)
	defer func() { _ = acme.Delete(context.WithoutCancel(ctx), "dashboard_stats") }()

	loads := 0
	get := func(what string) (dashboardStats, error) {
		start := time.Now()
		before := loads
		s, err := acme.GetOrLoad(ctx, "dashboard_stats", func(ctx context.Context) (dashboardStats, error) {
			loads++
			return loadDashboardStats(ctx, db, "acme")
		})
		if err != nil {
			return s, err
		}
		source := "hit, from the cache"
		if loads > before {
			source = "miss, loaded from PostgreSQL"
		}
		fmt.Printf("%s: %s in %s: %+v\n", what, source, time.Since(start).Round(time.Microsecond), s)
		return s, nil
	}

	first, err := get("acme's dashboard, first request")
	if err != nil {
		return err
	}
	if _, err := get("acme's dashboard, second request"); err != nil {
		return err
	}
	printCacheStats(statsCache)

	fmt.Println("a new conversation for acme, in a transaction that invalidates the entry on commit:")
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		var userID, convID int64
		if err := tx.QueryRow(ctx, `SELECT id FROM users WHERE tenant_id = 'acme' ORDER BY id LIMIT 1`).Scan(&userID); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO conversations (tenant_id, user_id, title) VALUES ('acme', $1, 'Cached stats')
			RETURNING id`, userID).Scan(&convID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO messages (tenant_id, conversation_id, role, content, tokens)
			VALUES ('acme', $1, 'user', 'How many tokens did we use?', 1200)`, convID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO usage_records (tenant_id, user_id, conversation_id, tokens_used, cost_cents)
			VALUES ('acme', $1, $2, 1200, 1.5)`, userID, convID); err != nil {
			return err
		}
		acme.InvalidateOnCommit(tx, "dashboard_stats") // deleted after COMMIT; a rollback would keep it
		s, err := get("  inside the transaction, before COMMIT")
		if err == nil && s != first {
			err = errors.New("the cached stats changed before the commit")
		}
		return err
	}, pgkit.WithTenant("acme"))
	if err != nil {
		return err
	}
	fmt.Println("  committed: the entry is gone")
	after, err := get("acme's dashboard, after the commit")
	if err != nil {
		return err
	}
	fmt.Printf("conversations %d -> %d, messages %d -> %d, tokens %d -> %d: fresh, not 5 minutes stale\n",
		first.Conversations, after.Conversations, first.Messages, after.Messages, first.TokensUsed, after.TokensUsed)
	if _, err := get("acme's dashboard, once more"); err != nil {
		return err
	}
	printCacheStats(statsCache)
	return printCacheMetrics(registry)
}

// tourStore returns Redis at PGKIT_REDIS_URL if set, else an in-memory
// store, and how to close it.
func tourStore(ctx context.Context) (cache.Store, func(), error) {
	if url := os.Getenv("PGKIT_REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, fmt.Errorf("PGKIT_REDIS_URL: %w", err)
		}
		opts.ContextTimeoutEnabled = true // lets cache.Config.StoreTimeout bound each call
		client := redis.NewClient(opts)
		store, err := redisstore.New(client, "pgkit-tour:")
		if err != nil {
			_ = client.Close()
			return nil, nil, err
		}
		pingCtx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := client.Ping(pingCtx).Err(); err != nil {
			fmt.Printf("store: Redis from $PGKIT_REDIS_URL does not answer (%v): the cache fails open, every request loads from PostgreSQL\n", err)
		} else {
			fmt.Println("store: Redis from $PGKIT_REDIS_URL")
		}
		return store, func() { _ = client.Close() }, nil
	}
	store, err := cache.NewMemoryStore(cache.MemoryStoreConfig{MaxEntries: 10_000})
	if err != nil {
		return nil, nil, err
	}
	fmt.Println("store: in memory, at most 10,000 entries (set PGKIT_REDIS_URL to use Redis)")
	return store, store.Close, nil
}

func printCacheStats(c *cache.Cache[dashboardStats]) {
	s := c.Stats()
	fmt.Printf("cache.Stats(): %d hits, %d misses, %d loads, %d store errors: hit ratio %.2f\n",
		s.Hits, s.Misses, s.Loads, s.StoreErrors, s.HitRatio)
}

// printCacheMetrics prints the cache's counters as Prometheus has them.
func printCacheMetrics(registry *prometheus.Registry) error {
	families, err := registry.Gather()
	if err != nil {
		return err
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			var v float64
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				v = float64(m.GetHistogram().GetSampleCount())
				labels = append(labels, "(count)")
			}
			fmt.Printf("  %s{%s} %g\n", f.GetName(), strings.Join(labels, ","), v)
		}
	}
	return nil
}
