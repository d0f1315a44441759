// Package storetest is the conformance suite every cache.Store passes: the
// in-memory store (package cache's tests) and the Redis store (redisstore's tests)
// run the same function against real backends.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit/cache"
	"github.com/stretchr/testify/require"
)

// Run runs the suite. newStore returns a store for one subtest; stores may
// share a backend, since every subtest keeps to keys of its own.
func Run(t *testing.T, newStore func(t *testing.T) cache.Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s cache.Store, k *keys)
	}{
		{"GetMiss", testGetMiss},
		{"SetGet", testSetGet},
		{"Overwrite", testOverwrite},
		{"TTLExpiry", testTTLExpiry},
		{"DeleteSeveral", testDeleteSeveral},
		{"DeleteMissing", testDeleteMissing},
		{"BinaryValues", testBinaryValues},
		{"KeysWithAnyBytes", testKeysWithAnyBytes},
		{"SetCopiesValue", testSetCopiesValue},
		{"NegativeTTL", testNegativeTTL},
		{"Concurrent", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			k := keys{prefix: fmt.Sprintf("storetest:%s:%x:", t.Name(), rand.Uint64())}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				require.NoError(t, s.Delete(ctx, k.used...))
			})
			tc.fn(t, s, &k)
		})
	}
}

// keys hands out keys unique to a subtest and remembers them, so the
// subtest can delete them at the end from a shared Redis.
type keys struct {
	mu     sync.Mutex
	prefix string
	used   []string
}

func (k *keys) key(name string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := k.prefix + name
	k.used = append(k.used, key)
	return key
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func requireMiss(t *testing.T, s cache.Store, key string) {
	t.Helper()
	v, err := s.Get(ctx(t), key)
	require.ErrorIs(t, err, cache.ErrMiss, "got %q", v)
}

func requireValue(t *testing.T, s cache.Store, key string, want []byte) {
	t.Helper()
	got, err := s.Get(ctx(t), key)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "want %q, got %q", want, got)
}

func testGetMiss(t *testing.T, s cache.Store, k *keys) {
	requireMiss(t, s, k.key("never-set"))
}

func testSetGet(t *testing.T, s cache.Store, k *keys) {
	key := k.key("a")
	require.NoError(t, s.Set(ctx(t), key, []byte(`{"users":1000}`), time.Minute))
	requireValue(t, s, key, []byte(`{"users":1000}`))
	requireMiss(t, s, k.key("b"))
}

func testOverwrite(t *testing.T, s cache.Store, k *keys) {
	key := k.key("a")
	require.NoError(t, s.Set(ctx(t), key, []byte("first"), time.Minute))
	require.NoError(t, s.Set(ctx(t), key, []byte("second, longer"), time.Minute))
	requireValue(t, s, key, []byte("second, longer"))
	require.NoError(t, s.Set(ctx(t), key, []byte("3"), time.Minute))
	requireValue(t, s, key, []byte("3"))
}

func testTTLExpiry(t *testing.T, s cache.Store, k *keys) {
	short, forever, long := k.key("short"), k.key("forever"), k.key("long")
	require.NoError(t, s.Set(ctx(t), short, []byte("x"), 50*time.Millisecond))
	require.NoError(t, s.Set(ctx(t), forever, []byte("y"), 0))
	require.NoError(t, s.Set(ctx(t), long, []byte("z"), time.Hour))
	require.Eventually(t, func() bool {
		_, err := s.Get(ctx(t), short)
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "an entry with a 50ms TTL never expired")
	requireMiss(t, s, short)
	requireValue(t, s, forever, []byte("y"))
	requireValue(t, s, long, []byte("z"))
	// A new Set gives the key a new lifetime.
	require.NoError(t, s.Set(ctx(t), short, []byte("again"), time.Hour))
	requireValue(t, s, short, []byte("again"))
}

func testDeleteSeveral(t *testing.T, s cache.Store, k *keys) {
	var all []string
	for i := range 10 {
		key := k.key(fmt.Sprintf("k%d", i)) // different hash slots on a Cluster
		all = append(all, key)
		require.NoError(t, s.Set(ctx(t), key, []byte{byte(i)}, time.Minute))
	}
	require.NoError(t, s.Delete(ctx(t), all[:7]...))
	for _, key := range all[:7] {
		requireMiss(t, s, key)
	}
	for i, key := range all[7:] {
		requireValue(t, s, key, []byte{byte(7 + i)})
	}
	require.NoError(t, s.Delete(ctx(t), all[9]))
	requireMiss(t, s, all[9])
}

func testDeleteMissing(t *testing.T, s cache.Store, k *keys) {
	require.NoError(t, s.Delete(ctx(t)))
	require.NoError(t, s.Delete(ctx(t), k.key("missing")))
	present := k.key("present")
	require.NoError(t, s.Set(ctx(t), present, []byte("v"), time.Minute))
	require.NoError(t, s.Delete(ctx(t), k.key("missing-1"), present, k.key("missing-2")))
	requireMiss(t, s, present)
}

func testBinaryValues(t *testing.T, s cache.Store, k *keys) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte("\x00\r\n\xff"), 1<<16) // 256 KiB
	for name, v := range map[string][]byte{"every-byte": all, "crlf-nul": []byte("a\r\nb\x00c"), "big": big} {
		key := k.key(name)
		require.NoError(t, s.Set(ctx(t), key, v, time.Minute))
		requireValue(t, s, key, v)
	}
	empty := k.key("empty")
	require.NoError(t, s.Set(ctx(t), empty, []byte{}, time.Minute))
	got, err := s.Get(ctx(t), empty)
	require.NoError(t, err, "an empty value is a value, not a miss")
	require.Empty(t, got)
}

func testKeysWithAnyBytes(t *testing.T, s cache.Store, k *keys) {
	names := []string{"a:b", `a\b`, "with space", "ünïcödé", "*?[glob]", "{hash}tag", "nul\x00byte", "line\nbreak"}
	for i, name := range names {
		require.NoError(t, s.Set(ctx(t), k.key(name), []byte{byte(i)}, time.Minute))
	}
	for i, name := range names {
		requireValue(t, s, k.key(name), []byte{byte(i)})
	}
}

func testSetCopiesValue(t *testing.T, s cache.Store, k *keys) {
	key := k.key("a")
	buf := []byte("original")
	require.NoError(t, s.Set(ctx(t), key, buf, time.Minute))
	copy(buf, "XXXXXXXX")
	requireValue(t, s, key, []byte("original"))
}

func testNegativeTTL(t *testing.T, s cache.Store, k *keys) {
	key := k.key("a")
	require.Error(t, s.Set(ctx(t), key, []byte("v"), -time.Second))
	requireMiss(t, s, key)
}

// testConcurrent runs gets, sets and deletes of a few keys from many
// goroutines (under -race in `make test`). Each value names its key, so a
// get that returns another key's value, or a torn one, is caught.
func testConcurrent(t *testing.T, s cache.Store, k *keys) {
	const goroutines, ops, nkeys = 16, 300, 8
	var ks []string
	for i := range nkeys {
		ks = append(ks, k.key(fmt.Sprintf("c%d", i)))
	}
	value := func(key string, n int) []byte { return fmt.Appendf(nil, "%s=%d", key, n) }
	c := ctx(t)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range ops {
				key := ks[r.IntN(nkeys)]
				var err error
				switch r.IntN(4) {
				case 0:
					err = s.Set(c, key, value(key, i), time.Minute)
				case 1:
					err = s.Delete(c, key, ks[r.IntN(nkeys)])
				default:
					var got []byte
					got, err = s.Get(c, key)
					if err == nil && !bytes.HasPrefix(got, []byte(key+"=")) {
						err = fmt.Errorf("get %q returned %q", key, got)
					} else if errors.Is(err, cache.ErrMiss) {
						err = nil
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
