package cache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/pgkit-dev/pgkit/internal/storetest"
	"github.com/stretchr/testify/require"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) cache.Store { return newMemoryStore(t, cache.MemoryStoreConfig{}) })
}

func TestMemoryStoreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	value := make([]byte, 1000)
	for name, cfg := range map[string]cache.MemoryStoreConfig{
		"entries": {MaxEntries: 100},
		"bytes":   {MaxBytes: 100 * (1000 + 96 + 8)}, // about 100 entries of 1,000 bytes
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newMemoryStore(t, cfg)
			for i := range 5000 {
				require.NoError(t, s.Set(ctx, fmt.Sprintf("key-%04d", i), value, time.Hour))
			}
			require.Eventually(t, func() bool { return s.Len() <= 100 }, 10*time.Second, time.Millisecond,
				"the store holds %d entries", s.Len())
			require.Greater(t, s.Len(), 50, "but not much fewer")
		})
	}
}

func TestMemoryStoreConfigRefused(t *testing.T) {
	t.Parallel()
	for _, cfg := range []cache.MemoryStoreConfig{{MaxEntries: -1}, {MaxBytes: -1}, {MaxEntries: 1, MaxBytes: 1}} {
		_, err := cache.NewMemoryStore(cfg)
		var cfgErr *pgkit.ConfigError
		require.ErrorAs(t, err, &cfgErr, "%+v", cfg)
		require.Equal(t, "cache.MemoryStoreConfig", cfgErr.Struct)
		require.ErrorContains(t, err, "pgkit: invalid cache.MemoryStoreConfig.", "%+v", cfg)
	}
}

func TestMemoryStoreClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := cache.NewMemoryStore(cache.MemoryStoreConfig{})
	require.NoError(t, err)
	require.NoError(t, s.Set(ctx, "k", []byte("v"), time.Minute))
	s.Close()
	s.Close() // twice is fine
	v, err := s.Get(ctx, "k")
	require.NoError(t, err, "still usable, without a background goroutine")
	require.Equal(t, "v", string(v))
}
