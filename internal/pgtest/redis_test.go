package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestStartRedis(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	r := StartRedis(t)
	require.Equal(t, "redis://"+r.Addr()+"/0", r.URL())

	// No retries: the Ping to the stopped server should fail at once.
	client := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = client.Close() })
	require.NoError(t, client.Ping(ctx).Err())
	require.NoError(t, client.Set(ctx, "k", "v", 0).Err())
	got, err := client.Get(ctx, "k").Result()
	require.NoError(t, err)
	require.Equal(t, "v", got)

	require.NoError(t, r.Stop())
	require.NoError(t, r.Stop(), "a second Stop does nothing")
	require.Error(t, client.Ping(ctx).Err(), "a stopped server does not answer")
	l, err := net.Listen("tcp", r.Addr())
	require.NoError(t, err, "Stop frees the port")
	require.NoError(t, l.Close())

	require.NoError(t, r.Start())
	require.NoError(t, client.Ping(ctx).Err(), "the server answers again on the same port")
	require.ErrorIs(t, client.Get(ctx, "k").Err(), redis.Nil, "the server keeps no data")
}

func TestRedisURL(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	opts, err := redis.ParseURL(RedisURL(t))
	require.NoError(t, err)
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	key := "pgtest:" + t.Name()
	t.Cleanup(func() { _ = client.Del(ctx, key).Err() })
	require.NoError(t, client.Set(ctx, key, "v", 0).Err())
	got, err := client.Get(ctx, key).Result()
	require.NoError(t, err)
	require.Equal(t, "v", got)
}

// TestStartRedisCluster: three masters that share the 16384 slots, keys
// that land on different servers, and no process left after the cleanup.
func TestStartRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var addrs []string
	t.Run("cluster", func(t *testing.T) { // its cleanup runs when it ends
		addrs = StartRedisCluster(t)
		require.Len(t, addrs, 3)
		require.Len(t, map[string]bool{addrs[0]: true, addrs[1]: true, addrs[2]: true}, 3, "three different nodes: %v", addrs)

		nodes := make(map[string]*redis.Client, len(addrs))
		for _, addr := range addrs {
			host, port, err := net.SplitHostPort(addr)
			require.NoError(t, err)
			require.Equal(t, "127.0.0.1", host)
			p, err := strconv.Atoi(port)
			require.NoError(t, err)

			node := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { _ = node.Close() })
			nodes[addr] = node
			info, err := node.ClusterInfo(ctx).Result()
			require.NoError(t, err)
			for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3", "cluster_size:3"} {
				require.Contains(t, info, want+"\r\n", "CLUSTER INFO on %s", addr)
			}
			list, err := node.ClusterNodes(ctx).Result()
			require.NoError(t, err)
			require.Contains(t, list, fmt.Sprintf(" %s@%d myself,master ", addr, p+10000), "the cluster bus is on port+10000")
			require.Equal(t, 3, strings.Count(list, "master"), "three masters, no replicas:\n%s", list)
			require.NotContains(t, list, "slave")
		}

		// The slots: three ranges that cover 0-16383 once, one per node,
		// each with no replica.
		slots, err := nodes[addrs[0]].ClusterSlots(ctx).Result()
		require.NoError(t, err)
		require.Len(t, slots, 3)
		sort.Slice(slots, func(i, j int) bool { return slots[i].Start < slots[j].Start })
		owners := map[string]bool{}
		next := 0
		for _, s := range slots {
			require.Equal(t, next, s.Start, "the ranges leave no gap")
			require.Len(t, s.Nodes, 1, "no replicas")
			owners[s.Nodes[0].Addr] = true
			next = s.End + 1
		}
		require.Equal(t, 16384, next, "the ranges end at slot 16383")
		require.Len(t, owners, 3, "each node owns a range")
		for _, addr := range addrs {
			require.True(t, owners[addr], "%s owns no slots", addr)
		}

		// Keys land on different nodes: each is stored on the node that owns
		// its slot, which the other nodes redirect to.
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { _ = client.Close() })
		byNode := map[string]string{} // node address -> a key it holds
		for i := 0; len(byNode) < 3; i++ {
			require.Less(t, i, 1000, "1,000 keys all landed on %d node(s)", len(byNode))
			key := fmt.Sprintf("k%d", i)
			require.NoError(t, client.Set(ctx, key, key, 0).Err())
			master, err := client.MasterForKey(ctx, key)
			require.NoError(t, err)
			if _, seen := byNode[master.Options().Addr]; !seen {
				byNode[master.Options().Addr] = key
			}
		}
		for owner, key := range byNode {
			got, err := nodes[owner].Get(ctx, key).Result()
			require.NoError(t, err, "%s holds %s", owner, key)
			require.Equal(t, key, got)
			for _, other := range addrs {
				if other != owner {
					require.ErrorContains(t, nodes[other].Get(ctx, key).Err(), "MOVED", "%s does not hold %s", other, key)
				}
			}
		}
		require.ErrorContains(t, client.Do(ctx, "MGET", byNode[addrs[0]], byNode[addrs[1]]).Err(), "CROSSSLOT")
	})
	require.Len(t, addrs, 3)
	for _, addr := range addrs {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.Close()
		}
		require.Error(t, err, "the cleanup stopped the node on %s", addr)
	}
}

// TestStartRedisClusterNeedsBinaries: without redis-server or redis-cli
// the test fails, naming the program; it is not skipped.
func TestStartRedisClusterNeedsBinaries(t *testing.T) {
	t.Parallel()
	server, err := exec.LookPath("redis-server")
	require.NoError(t, err)
	onlyServer := t.TempDir()
	require.NoError(t, os.Symlink(server, filepath.Join(onlyServer, "redis-server")))
	for name, tc := range map[string]struct{ path, want string }{
		"no redis-server": {t.TempDir(), "pgtest: a Redis Cluster needs a redis-server binary: redis-server not found on PATH"},
		"no redis-cli":    {onlyServer, "pgtest: a Redis Cluster needs redis-cli, to join its nodes: redis-cli not found on PATH"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := &fatalRecorder{TB: t}
			done := make(chan []string)
			go func() {
				defer close(done)
				done <- startRedisCluster(r, tc.path)
			}()
			addrs, returned := <-done
			require.False(t, returned, "startRedisCluster returned %v", addrs)
			require.False(t, r.skipped, "skipped instead of failing")
			require.Equal(t, tc.want, r.fatal)
		})
	}
}

// fatalRecorder is a testing.TB whose Fatal and Skip record the message
// and end the goroutine, as a test's would, without failing the test.
type fatalRecorder struct {
	testing.TB
	fatal   string
	skipped bool
}

func (r *fatalRecorder) Fatal(args ...any) { r.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *fatalRecorder) FailNow()             { r.fatal = "FailNow"; runtime.Goexit() }
func (r *fatalRecorder) Skip(...any)          { r.skipped = true; runtime.Goexit() }
func (r *fatalRecorder) Skipf(string, ...any) { r.skipped = true; runtime.Goexit() }
func (r *fatalRecorder) SkipNow()             { r.skipped = true; runtime.Goexit() }
