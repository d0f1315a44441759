package redisstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit/cache"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// keysOnEveryNode returns keys k0, k1, ... chosen so that each master of
// the cluster owns the slots of perNode of them once fullKey is applied
// (the store's prefix, a cache's Name), and the client of the node that
// owns each key's slot.
func keysOnEveryNode(t testing.TB, client *redis.ClusterClient, fullKey func(string) string, perNode int) ([]string, map[string]*redis.Client) {
	t.Helper()
	ctx := context.Background()
	var masters atomic.Int64
	require.NoError(t, client.ForEachMaster(ctx, func(context.Context, *redis.Client) error { masters.Add(1); return nil }))
	require.Equal(t, int64(3), masters.Load(), "a three-node cluster")
	var keys []string
	owners := map[string]*redis.Client{}
	count := map[string]int{} // node address -> keys chosen on it
	for i := 0; len(keys) < 3*perNode; i++ {
		require.Less(t, i, 10_000, "10,000 keys, and still not %d on every node: %v", perNode, count)
		k := fmt.Sprintf("k%d", i)
		slot, err := client.ClusterKeySlot(ctx, fullKey(k)).Result()
		require.NoError(t, err)
		node, err := client.MasterForKey(ctx, fullKey(k))
		require.NoError(t, err)
		if addr := node.Options().Addr; count[addr] < perNode {
			// The node's own view of its slots agrees with the client's.
			n, err := node.ClusterCountKeysInSlot(ctx, int(slot)).Result()
			require.NoError(t, err, "%s does not serve slot %d of %q", addr, slot, fullKey(k))
			require.Zero(t, n, "slot %d holds keys before the test wrote any", slot)
			count[addr]++
			keys = append(keys, k)
			owners[k] = node
		}
	}
	require.Len(t, count, 3)
	return keys, owners
}

type clusterValue struct {
	Key   string `json:"key"`
	Users int    `json:"users"`
}

// TestCacheStampedeCluster: a cache.Cache over a redis.ClusterClient on
// the three-node cluster. Many callers ask at once for keys that are not
// there, one key on each node; each key's load runs once, every caller gets
// its key's value, and the value is stored on the node that owns the key.
func TestCacheStampedeCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const callersPerKey = 400
	client := newClusterClient(t)
	s := newStore(t, client)
	c, err := cache.New[clusterValue](s, cache.Config{
		Name:         "stampede",
		StoreTimeout: 30 * time.Second, // 1,200 concurrent GETs under -race
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	storeKey := func(k string) string { return s.Prefix() + "stampede:" + k } // prefix, Name, key
	keys, owners := keysOnEveryNode(t, client, storeKey, 1)
	for _, k := range keys {
		n, err := owners[k].Exists(ctx, storeKey(k)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "%q is missing before the stampede", k)
	}

	release := make(chan struct{})
	loads := map[string]*atomic.Int64{}
	for _, k := range keys {
		loads[k] = &atomic.Int64{}
	}
	loadFor := func(k string) func(context.Context) (clusterValue, error) {
		return func(ctx context.Context) (clusterValue, error) {
			loads[k].Add(1)
			select {
			case <-release:
				return clusterValue{Key: k, Users: 1000}, nil
			case <-ctx.Done():
				return clusterValue{}, ctx.Err()
			}
		}
	}
	type result struct {
		key string
		v   clusterValue
		err error
	}
	total := callersPerKey * len(keys)
	results := make(chan result, total)
	var wg sync.WaitGroup
	for range callersPerKey {
		for _, k := range keys {
			wg.Go(func() {
				v, err := c.GetOrLoad(context.Background(), k, loadFor(k))
				results <- result{k, v, err}
			})
		}
	}
	// Every caller has missed (and waits for, or is about to join, its
	// key's one load, which is blocked until release): let the loads finish.
	require.Eventually(t, func() bool { return c.Stats().Misses == uint64(total) }, 60*time.Second, time.Millisecond,
		"every caller misses")
	close(release)
	wg.Wait()
	close(results)
	got := map[string]int{}
	for r := range results {
		require.NoError(t, r.err, "caller of %q", r.key)
		require.Equal(t, clusterValue{Key: r.key, Users: 1000}, r.v, "caller of %q", r.key)
		got[r.key]++
	}
	for _, k := range keys {
		require.Equal(t, callersPerKey, got[k], "every caller of %q got its value", k)
		require.Equal(t, int64(1), loads[k].Load(), "the load of %q ran once for %d callers", k, callersPerKey)
	}
	st := c.Stats()
	require.Equal(t, uint64(len(keys)), st.Loads)
	require.Equal(t, uint64(total), st.Misses)
	require.Zero(t, st.Errors)
	require.Zero(t, st.StoreErrors)

	// The one load's value is on the node that owns its key, and the next
	// callers read it from there without loading.
	for _, k := range keys {
		raw, err := owners[k].Get(ctx, storeKey(k)).Result()
		require.NoError(t, err, "%s holds %q", owners[k].Options().Addr, k)
		require.Equal(t, fmt.Sprintf(`v{"key":%q,"users":1000}`, k), raw)
		v, err := c.GetOrLoad(ctx, k, func(context.Context) (clusterValue, error) {
			return clusterValue{}, fmt.Errorf("loaded %q again", k)
		})
		require.NoError(t, err)
		require.Equal(t, clusterValue{Key: k, Users: 1000}, v)
	}
	require.Equal(t, uint64(len(keys)), c.Stats().Hits)
}
