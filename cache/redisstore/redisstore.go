// Package redisstore is a cache.Store (package
// github.com/pgkit-dev/pgkit/cache) in Redis, over go-redis v9. Only
// services that import this package compile go-redis: neither pgkit nor
// pgkit/cache imports it.
//
//	opts, err := redis.ParseURL(os.Getenv("REDIS_URL"))
//	if err != nil {
//		return err
//	}
//	opts.ContextTimeoutEnabled = true // so that cache.Config.StoreTimeout bounds every call
//	client := redis.NewClient(opts)
//	defer client.Close()
//	store, err := redisstore.New(client, "myapp:cache:")
//	if err != nil {
//		return err
//	}
//	stats, err := cache.New[DashboardStats](store, cache.Config{Name: "dashboard_stats"})
//
// A standalone client (redis.NewClient), a Sentinel one
// (redis.NewFailoverClient) and a Cluster one (redis.NewClusterClient) all
// work, as does anything else that implements redis.UniversalClient.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgkit-dev/pgkit/cache"
	"github.com/redis/go-redis/v9"
)

// Store is a cache.Store in Redis. It is safe for concurrent use. It does
// not own the client: close the client yourself when done.
type Store struct {
	client redis.UniversalClient
	prefix string
	// oneDEL is true when one DEL may carry every key: a client that talks
	// to one server (standalone or Sentinel). A Cluster client refuses a
	// multi-key DEL whose keys are in different hash slots (CROSSSLOT), and
	// a Ring would send it to the first key's shard only.
	oneDEL bool
}

// New returns a Store that keeps every key under prefix (for example
// "myapp:cache:"; "" for none) through client.
//
// It refuses a *redis.Client, *redis.ClusterClient or *redis.Ring created
// without ContextTimeoutEnabled: such a client ignores context deadlines on
// the socket and waits for its ReadTimeout (3s by default) instead, so a
// Redis that stops answering would hold every cache call that long instead
// of cache.Config.StoreTimeout (50ms). Other implementations of
// redis.UniversalClient must honour context deadlines the same way.
func New(client redis.UniversalClient, prefix string) (*Store, error) {
	if client == nil {
		return nil, errors.New("pgkit: redisstore.New: the client is nil")
	}
	s := &Store{client: client, prefix: prefix}
	var deadlines bool
	switch c := client.(type) {
	case *redis.Client:
		deadlines, s.oneDEL = c.Options().ContextTimeoutEnabled, true
	case *redis.ClusterClient:
		deadlines = c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		deadlines = c.Options().ContextTimeoutEnabled
	default:
		deadlines = true
	}
	if !deadlines {
		return nil, errors.New("pgkit: redisstore.New: the client was created without ContextTimeoutEnabled, " +
			"so it would wait ReadTimeout (3s by default) for a Redis that stops answering instead of cache.Config.StoreTimeout; " +
			"set ContextTimeoutEnabled: true in its options")
	}
	return s, nil
}

// Get returns the value of prefix+key, or an error matching
// cache.ErrMiss when there is none.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := s.client.Get(ctx, s.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, cache.ErrMiss
	}
	if err != nil {
		return nil, fmt.Errorf("pgkit: redisstore: GET: %w", err)
	}
	return b, nil
}

// Set writes value under prefix+key with SET key value PX ttl-in-ms (a ttl
// under a millisecond counts as 1ms); ttl 0 writes it without expiry.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	var cmd *redis.StatusCmd
	switch {
	case ttl < 0:
		return fmt.Errorf("pgkit: redisstore: Set: negative ttl %s", ttl)
	case ttl == 0:
		cmd = redis.NewStatusCmd(ctx, "set", s.prefix+key, value)
	default:
		cmd = redis.NewStatusCmd(ctx, "set", s.prefix+key, value, "px", max(ttl.Milliseconds(), 1))
	}
	_ = s.client.Process(ctx, cmd)
	if err := cmd.Err(); err != nil {
		return fmt.Errorf("pgkit: redisstore: SET: %w", err)
	}
	return nil
}

// Delete removes the keys in one round trip: one DEL with every key on a
// standalone or Sentinel client; on a Cluster client (or a Ring), a pipeline
// of one DEL per key, which go-redis sends to each node at once, since a
// multi-key DEL must keep to one hash slot there. Missing keys are fine.
func (s *Store) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = s.prefix + k
	}
	if s.oneDEL || len(full) == 1 {
		if err := s.client.Del(ctx, full...).Err(); err != nil {
			return fmt.Errorf("pgkit: redisstore: DEL: %w", err)
		}
		return nil
	}
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range full {
			p.Del(ctx, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgkit: redisstore: DEL (pipelined, %d keys): %w", len(full), err)
	}
	return nil
}

// Client returns the client the store uses.
func (s *Store) Client() redis.UniversalClient { return s.client }

// Prefix returns the prefix of every key the store writes.
func (s *Store) Prefix() string { return s.prefix }
