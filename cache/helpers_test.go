package cache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/pgkit-dev/pgkit/cache/redisstore"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// dashboardStats is a per-tenant dashboard: what
// get_dashboard_stats_cached kept in Redis under dashboard_stats:{tenant_id}.
type dashboardStats struct {
	Users         int64   `json:"users"`
	Conversations int64   `json:"conversations"`
	Messages      int64   `json:"messages"`
	TokensUsed    int64   `json:"tokens_used"`
	CostCents     float64 `json:"cost_cents"`
}

const dashboardSQL = `-- name: DashboardStats :one
SELECT u.n, c.n, m.n, r.tokens, r.cost
FROM (SELECT COUNT(*) AS n FROM users WHERE tenant_id = $1) u,
     (SELECT COUNT(*) AS n FROM conversations WHERE tenant_id = $1) c,
     (SELECT COUNT(*) AS n FROM messages WHERE tenant_id = $1) m,
     (SELECT COALESCE(SUM(tokens_used), 0) AS tokens, COALESCE(SUM(cost_cents), 0)::float8 AS cost
      FROM usage_records WHERE tenant_id = $1) r`

func queryDashboard(ctx context.Context, q pgkit.Querier, tenant string) (dashboardStats, error) {
	var s dashboardStats
	err := q.QueryRow(ctx, dashboardSQL, tenant).Scan(&s.Users, &s.Conversations, &s.Messages, &s.TokensUsed, &s.CostCents)
	return s, err
}

// fillDashboard creates tenant with users users, conversations
// conversations (one for each of the first users), perConversation messages
// in each, and a usage record per message.
func fillDashboard(t testing.TB, db *pgkit.DB, tenant string, users, conversations, perConversation int) {
	t.Helper()
	require.LessOrEqual(t, conversations, users)
	ctx := context.Background()
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO tenants (id, name) VALUES ($1, $1)`, []any{tenant}},
		{`INSERT INTO users (tenant_id, email, name) SELECT $1, 'user' || g || '@' || $1, 'User ' || g
			FROM generate_series(1, $2::int) g`, []any{tenant, users}},
		{`INSERT INTO conversations (tenant_id, user_id, title) SELECT $1, id, 'conversation ' || id
			FROM users WHERE tenant_id = $1 ORDER BY id LIMIT $2`, []any{tenant, conversations}},
		{`INSERT INTO messages (tenant_id, conversation_id, role, content, tokens)
			SELECT $1, c.id, CASE WHEN g % 2 = 0 THEN 'assistant' ELSE 'user' END, 'message ' || g, 10 + (c.id + g) % 90
			FROM conversations c, generate_series(1, $2::int) g WHERE c.tenant_id = $1`, []any{tenant, perConversation}},
		{`INSERT INTO usage_records (tenant_id, user_id, conversation_id, tokens_used, cost_cents)
			SELECT m.tenant_id, c.user_id, c.id, m.tokens, m.tokens * 0.0125
			FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.tenant_id = $1`, []any{tenant}},
		{`VACUUM ANALYZE`, nil}, // as autovacuum would have: index-only scans
	} {
		_, err := db.Exec(ctx, stmt.sql, stmt.args...)
		require.NoError(t, err, stmt.sql)
	}
}

// newRedisClient returns a client of the Redis at url, with context
// deadlines honoured (as redisstore.New requires), closed at cleanup.
func newRedisClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	opts.ContextTimeoutEnabled = true
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// newRedisStore returns a Store on the shared test Redis under a prefix of
// the test's own, whose keys are deleted at cleanup.
func newRedisStore(t testing.TB) (*redisstore.Store, *redis.Client) {
	t.Helper()
	return newRedisStoreAt(t, pgtest.RedisURL(t))
}

func newRedisStoreAt(t testing.TB, url string) (*redisstore.Store, *redis.Client) {
	t.Helper()
	client := newRedisClient(t, url)
	prefix := fmt.Sprintf("pgkit-test:%s:%x:", t.Name(), rand.Uint64())
	store, err := redisstore.New(client, prefix)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, err := client.Keys(ctx, redisGlobEscape(prefix)+"*").Result()
		if err == nil && len(keys) > 0 {
			_ = client.Del(ctx, keys...).Err()
		}
	})
	return store, client
}

// redisGlobEscape escapes the characters KEYS and SCAN patterns treat
// specially.
func redisGlobEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// newMemoryStore returns a MemoryStore closed at cleanup.
func newMemoryStore(t testing.TB, cfg cache.MemoryStoreConfig) *cache.MemoryStore {
	t.Helper()
	s, err := cache.NewMemoryStore(cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// newCache returns a Cache closed at cleanup. Unless the test sets one, the
// StoreTimeout is 10s rather than 50ms: the shared Redis serves every
// parallel test (one sends 1,000 GETs at once) on a small machine under
// -race, and a test that expects a value in Redis must not see its SET
// time out. TestCacheRedisDown is the one about StoreTimeout.
func newCache[T any](t testing.TB, store cache.Store, cfg cache.Config) *cache.Cache[T] {
	t.Helper()
	if cfg.StoreTimeout == 0 {
		cfg.StoreTimeout = 10 * time.Second
	}
	c, err := cache.New[T](store, cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// storeKind is a Store a test runs against: the in-memory one or Redis.
type storeKind struct {
	name string
	new  func(t *testing.T) cache.Store
}

var storeKinds = []storeKind{
	{"memory", func(t *testing.T) cache.Store { return newMemoryStore(t, cache.MemoryStoreConfig{}) }},
	{"redis", func(t *testing.T) cache.Store { s, _ := newRedisStore(t); return s }},
}
