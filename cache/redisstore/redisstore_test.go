package redisstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit/cache"
	"github.com/pgkit-dev/pgkit/cache/redisstore"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/pgkit-dev/pgkit/internal/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newClient(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(pgtest.RedisURL(t))
	require.NoError(t, err)
	opts.ContextTimeoutEnabled = true
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// newClusterClient returns a client of a three-node Redis Cluster of the
// test's own (three masters that share the hash slots).
func newClusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	client := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 pgtest.StartRedisCluster(t),
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func newStore(t testing.TB, client redis.UniversalClient) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(client, fmt.Sprintf("redisstore-test:%x:", rand.Uint64()))
	require.NoError(t, err)
	return s
}

func TestConformanceStandalone(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	storetest.Run(t, func(t *testing.T) cache.Store { return newStore(t, client) })
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	client := newClusterClient(t)
	storetest.Run(t, func(t *testing.T) cache.Store { return newStore(t, client) })
}

// TestClusterDelete: a Cluster refuses one DEL of keys in different hash
// slots (CROSSSLOT); the store's Delete removes them all, from every node
// that holds some, in one pipeline that fans out to those nodes.
func TestClusterDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := newClusterClient(t)
	s := newStore(t, client)
	keys, owners := keysOnEveryNode(t, client, func(k string) string { return s.Prefix() + k }, 2)
	require.Len(t, keys, 6, "two keys on each of the three nodes")
	for _, k := range keys {
		require.NoError(t, s.Set(ctx, k, []byte(k), time.Minute))
		got, err := owners[k].Get(ctx, s.Prefix()+k).Result()
		require.NoError(t, err, "the node that owns %q's slot holds it", k)
		require.Equal(t, k, got)
	}
	var full []string
	for _, k := range keys {
		full = append(full, s.Prefix()+k)
	}
	err := client.Do(ctx, append([]any{"DEL"}, toAny(full)...)...).Err()
	require.ErrorContains(t, err, "CROSSSLOT", "one multi-key DEL is refused on a Cluster")

	calls := countCalls(client)
	var mu sync.Mutex // ForEachMaster calls fn on each node at once
	perNode := map[string]*callCounter{}
	require.NoError(t, client.ForEachMaster(ctx, func(_ context.Context, node *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		perNode[node.Options().Addr] = countCalls(node) // the node's own client: what it sends to that node
		return nil
	}))
	require.Len(t, perNode, 3)
	require.NoError(t, s.Delete(ctx, keys...))
	require.Equal(t, callCount{pipelines: 1, pipelinedCommands: 6}, calls.get(), "one pipeline of six DELs")
	for addr, c := range perNode {
		require.Equal(t, callCount{pipelines: 1, pipelinedCommands: 2}, c.get(), "%s got a pipeline of its two DELs", addr)
	}
	for _, k := range keys {
		n, err := owners[k].Exists(ctx, s.Prefix()+k).Result()
		require.NoError(t, err)
		require.Zero(t, n, "%q is gone from the node that held it", k)
		_, err = s.Get(ctx, k)
		require.ErrorIs(t, err, cache.ErrMiss)
	}
}

// TestStandaloneDeleteIsOneDEL: on one server, Delete is a single DEL.
func TestStandaloneDeleteIsOneDEL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := newClient(t)
	s := newStore(t, client)
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, s.Set(ctx, k, []byte(k), time.Minute))
	}
	calls := countCalls(client)
	require.NoError(t, s.Delete(ctx, "a", "b", "c", "missing"))
	require.Equal(t, callCount{commands: 1, lastArgs: 5}, calls.get(), "DEL with four keys")
}

// TestSetWritesPX: the TTL is set in milliseconds, under the prefix.
func TestSetWritesPX(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := newClient(t)
	s := newStore(t, client)
	calls := countCalls(client)
	require.NoError(t, s.Set(ctx, "k", []byte("v"), 1500*time.Millisecond))
	require.Equal(t, []any{"set", s.Prefix() + "k", []byte("v"), "px", int64(1500)}, calls.lastCommand())
	pttl, err := client.PTTL(ctx, s.Prefix()+"k").Result()
	require.NoError(t, err)
	require.Greater(t, pttl, time.Second)
	require.LessOrEqual(t, pttl, 1500*time.Millisecond)

	require.NoError(t, s.Set(ctx, "forever", []byte("v"), 0))
	pttl, err = client.PTTL(ctx, s.Prefix()+"forever").Result()
	require.NoError(t, err)
	require.Equal(t, time.Duration(-1), pttl, "no expiry")
	require.NoError(t, s.Delete(ctx, "k", "forever"))

	require.NoError(t, s.Set(ctx, "tiny", []byte("v"), time.Microsecond))
	require.Equal(t, int64(1), calls.lastCommand()[4], "under a millisecond counts as one")
}

func TestNewRefusesClientsThatIgnoreDeadlines(t *testing.T) {
	t.Parallel()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = client.Close() })
	_, err := redisstore.New(client, "")
	require.ErrorContains(t, err, "pgkit: redisstore.New: the client was created without ContextTimeoutEnabled")
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = cluster.Close() })
	_, err = redisstore.New(cluster, "")
	require.Error(t, err)
	_, err = redisstore.New(nil, "")
	require.ErrorContains(t, err, "the client is nil")
}

// TestCacheOverRedis runs a cache.Cache over the store on both kinds of
// client, with a local tier.
func TestCacheOverRedis(t *testing.T) {
	t.Parallel()
	for name, client := range map[string]redis.UniversalClient{"standalone": newClient(t), "cluster": newClusterClient(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c, err := cache.New[map[string]int](newStore(t, client), cache.Config{Name: "counts", LocalTTL: time.Second, StoreTimeout: 10 * time.Second}) // a busy machine under -race
			require.NoError(t, err)
			defer c.Close()
			var loads int
			load := func(context.Context) (map[string]int, error) { loads++; return map[string]int{"n": loads}, nil }
			for _, tenant := range []string{"acme", "globex", "initech"} {
				v, err := c.Tenant(tenant).GetOrLoad(ctx, "counts", load)
				require.NoError(t, err)
				v2, err := c.Tenant(tenant).GetOrLoad(ctx, "counts", load)
				require.NoError(t, err)
				require.Equal(t, v, v2)
			}
			require.Equal(t, 3, loads)
			require.NoError(t, c.Delete(ctx, cache.Key("acme", "counts"), cache.Key("globex", "counts"), cache.Key("initech", "counts")))
			_, err = c.Tenant("acme").GetOrLoad(ctx, "counts", load)
			require.NoError(t, err)
			require.Equal(t, 4, loads)
			require.NoError(t, c.Delete(ctx, cache.Key("acme", "counts"))) // leave the shared Redis clean
			require.Zero(t, c.Stats().StoreErrors)
		})
	}
}

// TestRootAndCacheDoNotImportGoRedis: only services that import
// redisstore compile go-redis; neither pgkit nor pgkit/cache does. And the
// dependency between the two goes one way: the cache imports pgkit, never
// the reverse.
func TestRootAndCacheDoNotImportGoRedis(t *testing.T) {
	t.Parallel()
	for _, pkg := range []string{"github.com/pgkit-dev/pgkit", "github.com/pgkit-dev/pgkit/cache"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "github.com/jackc/pgx/v5\n", "go list worked")
		require.NotContains(t, string(out), "github.com/redis/go-redis", pkg)
		if pkg == "github.com/pgkit-dev/pgkit" {
			require.NotContains(t, string(out), "github.com/pgkit-dev/pgkit/cache", "the root package imports the cache")
		}
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// callCounter is a go-redis hook that counts what a client sends: a real
// client's own instrumentation point, not a stand-in for Redis.
type callCounter struct {
	mu   sync.Mutex
	n    callCount
	last []any
}

type callCount struct {
	commands, pipelines, pipelinedCommands, lastArgs int
}

// countCalls starts counting the client's calls from now on.
func countCalls(client interface{ AddHook(redis.Hook) }) *callCounter {
	c := &callCounter{}
	client.AddHook(c)
	return c
}

func (c *callCounter) get() callCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *callCounter) lastCommand() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *callCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *callCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isStoreCommand(cmd) {
			c.mu.Lock()
			c.n.commands++
			c.n.lastArgs = len(cmd.Args())
			c.last = cmd.Args()
			c.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (c *callCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		// A node's client also pipelines the set-up of a new connection
		// (CLIENT SETINFO): count only pipelines of store commands.
		n := 0
		for _, cmd := range cmds {
			if isStoreCommand(cmd) {
				n++
			}
		}
		if n > 0 {
			c.mu.Lock()
			c.n.pipelines++
			c.n.pipelinedCommands += n
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// isStoreCommand reports the commands a Store sends, leaving out those the
// client sends on its own (connection set-up, cluster slot discovery).
func isStoreCommand(cmd redis.Cmder) bool {
	switch strings.ToLower(cmd.Name()) {
	case "get", "set", "del":
		return true
	}
	return false
}
