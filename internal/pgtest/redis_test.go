package pgtest

import (
	"net"
	"testing"

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
