package cache

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/pgkit-dev/pgkit"
)

// DefaultMemoryStoreMaxEntries bounds a MemoryStore whose config sets
// neither MaxEntries nor MaxBytes.
const DefaultMemoryStoreMaxEntries = 10_000

// memEntryOverhead is what an entry costs beyond its key and value bytes
// when MemoryStoreConfig.MaxBytes bounds the store: otter's node, the entry
// header and the two slice and string headers, rounded up.
const memEntryOverhead = 96

// MemoryStoreConfig configures NewMemoryStore. The zero value is a store of
// at most DefaultMemoryStoreMaxEntries (10,000) entries.
type MemoryStoreConfig struct {
	// MaxEntries bounds the number of entries. Default 10,000 when MaxBytes
	// is not set either. Only one of MaxEntries and MaxBytes may be set.
	MaxEntries int
	// MaxBytes bounds the memory the entries take: the length of each key and
	// value plus about 96 bytes of bookkeeping per entry. Default: not used.
	MaxBytes int64
}

// MemoryStore is a Store in this process's memory: bounded by entries or
// bytes, with a TTL per entry, built on otter (W-TinyLFU eviction, so a burst
// of one-off keys does not flush the hot ones). It is safe for concurrent use.
// Close stops its background clean-up goroutine.
type MemoryStore struct {
	c         *otter.Cache[string, memEntry]
	closeOnce sync.Once
}

// memEntry is a stored value and the TTL it was written with (0: none),
// which the expiry calculator reads.
type memEntry struct {
	data []byte
	ttl  time.Duration
}

// NewMemoryStore returns an in-memory Store. Call Close when done with it.
// It refuses a bad config with a *pgkit.ConfigError whose Struct is
// "cache.MemoryStoreConfig".
func NewMemoryStore(cfg MemoryStoreConfig) (*MemoryStore, error) {
	switch {
	case cfg.MaxEntries < 0:
		return nil, memoryConfigError("MaxEntries", fmt.Sprintf("must not be negative (got %d)", cfg.MaxEntries))
	case cfg.MaxBytes < 0:
		return nil, memoryConfigError("MaxBytes", fmt.Sprintf("must not be negative (got %d)", cfg.MaxBytes))
	case cfg.MaxEntries > 0 && cfg.MaxBytes > 0:
		return nil, memoryConfigError("MaxBytes", "set with MaxEntries: set one of them, not both")
	}
	opts := &otter.Options[string, memEntry]{
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, memEntry]) time.Duration {
			if e.Value.ttl <= 0 {
				return math.MaxInt64 // no expiry; otter saturates the deadline
			}
			return e.Value.ttl
		}),
		Logger: &otter.NoopLogger{}, // otter logs only loader and refresh errors, which are not used here
	}
	if cfg.MaxBytes > 0 {
		opts.MaximumWeight = uint64(cfg.MaxBytes)
		opts.Weigher = func(key string, e memEntry) uint32 {
			return uint32(min(int64(len(key))+int64(len(e.data))+memEntryOverhead, math.MaxUint32))
		}
	} else {
		opts.MaximumSize = cfg.MaxEntries
		if opts.MaximumSize == 0 {
			opts.MaximumSize = DefaultMemoryStoreMaxEntries
		}
	}
	c, err := otter.New(opts)
	if err != nil {
		return nil, fmt.Errorf("pgkit: cache.NewMemoryStore: %w", err)
	}
	return &MemoryStore{c: c}, nil
}

// Get returns the value stored under key, or ErrMiss. The returned
// slice is the stored one: the caller must not modify it.
func (s *MemoryStore) Get(_ context.Context, key string) ([]byte, error) {
	e, ok := s.c.GetIfPresent(key)
	if !ok {
		return nil, ErrMiss
	}
	return e.data, nil
}

// Set stores a copy of value under key for ttl (0: until evicted).
func (s *MemoryStore) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("pgkit: cache.MemoryStore.Set: negative ttl %s", ttl)
	}
	s.set(key, append(make([]byte, 0, len(value)), value...), ttl)
	return nil
}

// The cache's own calls: no context, no error, no copy.

// get returns the value stored under key, the store's own slice.
func (s *MemoryStore) get(key string) ([]byte, bool) {
	e, ok := s.c.GetIfPresent(key)
	return e.data, ok
}

// set stores value itself, which the caller gives up.
func (s *MemoryStore) set(key string, value []byte, ttl time.Duration) {
	s.c.Set(key, memEntry{data: value, ttl: ttl})
}

// remove removes key.
func (s *MemoryStore) remove(key string) { s.c.Invalidate(key) }

// Delete removes the keys; a key that is not there is not an error.
func (s *MemoryStore) Delete(_ context.Context, keys ...string) error {
	for _, k := range keys {
		s.c.Invalidate(k)
	}
	return nil
}

// Len is the number of entries, expired ones not yet cleaned up included.
func (s *MemoryStore) Len() int { return s.c.EstimatedSize() }

// Close stops the store's background clean-up goroutine. The store keeps
// working after Close (expired entries stay invisible and are removed as
// the store is used), but nothing runs in the background any more. Closing
// twice is fine.
func (s *MemoryStore) Close() {
	s.closeOnce.Do(func() { s.c.StopAllGoroutines() })
}

// memoryConfigError is the *pgkit.ConfigError for a MemoryStoreConfig
// field.
func memoryConfigError(field, reason string) error {
	return &pgkit.ConfigError{Struct: "cache.MemoryStoreConfig", Field: field, Reason: reason}
}
