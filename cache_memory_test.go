package pgkit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/storetest"
	"github.com/stretchr/testify/require"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) pgkit.Store { return newMemoryStore(t, pgkit.MemoryStoreConfig{}) })
}

func TestMemoryStoreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	value := make([]byte, 1000)
	for name, cfg := range map[string]pgkit.MemoryStoreConfig{
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
	for _, cfg := range []pgkit.MemoryStoreConfig{{MaxEntries: -1}, {MaxBytes: -1}, {MaxEntries: 1, MaxBytes: 1}} {
		_, err := pgkit.NewMemoryStore(cfg)
		require.ErrorContains(t, err, "pgkit: invalid MemoryStoreConfig", "%+v", cfg)
	}
}

func TestMemoryStoreClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := pgkit.NewMemoryStore(pgkit.MemoryStoreConfig{})
	require.NoError(t, err)
	require.NoError(t, s.Set(ctx, "k", []byte("v"), time.Minute))
	s.Close()
	s.Close() // twice is fine
	v, err := s.Get(ctx, "k")
	require.NoError(t, err, "still usable, without a background goroutine")
	require.Equal(t, "v", string(v))
}
