package cache

import (
	"context"
	"errors"
	"time"
)

// ErrMiss is what a Store's Get returns when it holds nothing for the key
// (match it with errors.Is).
var ErrMiss = errors.New("pgkit: cache miss")

// Store is where a Cache keeps its encoded values: NewMemoryStore in this
// process, redisstore.New in Redis. Every method must honour ctx's deadline,
// which is how Config.StoreTimeout bounds a store that stops answering, and
// must be safe for concurrent use.
type Store interface {
	// Get returns the value stored under key, or an error matching ErrMiss
	// when there is none (or it expired). The caller must not modify the
	// returned slice.
	Get(ctx context.Context, key string) ([]byte, error)
	// Set stores value under key for ttl; ttl 0 means no expiry. It must
	// not keep value after it returns: the caller may reuse it.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes the keys, in one round trip where the store has round
	// trips. Keys that are not there are not an error.
	Delete(ctx context.Context, keys ...string) error
}
