package cache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit/cache"
	"github.com/stretchr/testify/require"
)

// countingCodec is JSONCodec counting its Unmarshal calls.
type countingCodec struct {
	cache.JSONCodec
	decodes *atomic.Int64
}

func (c countingCodec) Unmarshal(data []byte, v any) error {
	c.decodes.Add(1)
	return c.JSONCodec.Unmarshal(data, v)
}

// account is a value a plain copy makes independent: no slice, map or
// pointer in it (a time.Time's location is shared and never changes).
type account struct {
	ID      int64     `json:"id"`
	Plan    string    `json:"plan"`
	Created time.Time `json:"created"`
	Limits  [2]int    `json:"limits"`
}

// storeRaw writes bytes under a cache key behind the cache's back, as
// another process (or version) of the service would.
func storeRaw(t *testing.T, s cache.Store, name, key, raw string) {
	t.Helper()
	require.NoError(t, s.Set(context.Background(), storeKey(name, key), []byte(raw), time.Hour))
}

// storeKey is where the cache named name keeps key in its store.
func storeKey(name, key string) string { return cache.Key(name) + ":" + key }

// TestCacheDecodesStoredBytesOnce: hits that fetch the bytes a hit before
// them decoded copy that value instead of decoding again, and every caller
// still gets the stored value as it is now, its own copy, whoever changed
// it: the cache remembers bytes, not keys.
func TestCacheDecodesStoredBytesOnce(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			store := kind.new(t)
			var decodes atomic.Int64
			c := newCache[account](t, store, cache.Config{Name: "accounts", Codec: countingCodec{decodes: &decodes}})
			want := account{ID: 1, Plan: "team", Created: created, Limits: [2]int{10, 20}}
			noLoad := func(context.Context) (account, error) { return account{}, errors.New("loaded on a hit") }

			v, err := c.GetOrLoad(ctx, "1", func(context.Context) (account, error) { return want, nil })
			require.NoError(t, err)
			require.True(t, want.Created.Equal(v.Created))
			require.Equal(t, int64(1), decodes.Load(), "a miss returns the value decoded from what it stored")
			for range 50 {
				v, err := c.GetOrLoad(ctx, "1", noLoad)
				require.NoError(t, err)
				require.Equal(t, want.ID, v.ID)
				require.Equal(t, want.Plan, v.Plan)
				require.Equal(t, want.Limits, v.Limits)
				require.True(t, want.Created.Equal(v.Created), "%v", v.Created)
				_, offset := v.Created.Zone()
				require.Equal(t, 3600, offset)
				v.Plan, v.Limits[0] = "changed by a caller", -1 // the next caller's copy is not this one
			}
			require.Equal(t, int64(1), decodes.Load(), "50 hits of the same bytes decode none")

			// Another key with the same bytes: the value is the same, so it
			// is not decoded either.
			v, err = c.GetOrLoad(ctx, "1-again", func(context.Context) (account, error) { return want, nil })
			require.NoError(t, err)
			require.Equal(t, want.Limits, v.Limits)
			require.Equal(t, int64(1), decodes.Load())

			// New bytes under the key, written by someone else: the next hit
			// decodes them and returns the new value, and then copies it.
			storeRaw(t, store, "accounts", "1", `v{"id":1,"plan":"enterprise","created":"2026-01-02T03:04:05Z","limits":[30,40]}`)
			for i := range 3 {
				v, err := c.GetOrLoad(ctx, "1", noLoad)
				require.NoError(t, err)
				require.Equal(t, "enterprise", v.Plan)
				require.Equal(t, [2]int{30, 40}, v.Limits)
				require.Equal(t, time.UTC, v.Created.Location(), "hit %d", i)
			}
			require.Equal(t, int64(2), decodes.Load(), "the changed bytes decode once")

			// And back: the bytes of before decode again, to the value of
			// before, or are still remembered; either way the value is right.
			storeRaw(t, store, "accounts", "1", fmt.Sprintf("v%s", mustJSON(t, want)))
			v, err = c.GetOrLoad(ctx, "1", noLoad)
			require.NoError(t, err)
			require.Equal(t, "team", v.Plan)
			require.Equal(t, [2]int{10, 20}, v.Limits)
			require.LessOrEqual(t, decodes.Load(), int64(3))
		})
	}
}

// TestCacheDecodesEveryHitOfSharedMemory: a value whose copy would share
// memory with the original (a slice, a map, a pointer) is decoded on every
// hit, so that a caller who modifies its value cannot change another's;
// and so is a value encoded in more than 4 KiB.
func TestCacheDecodesEveryHitOfSharedMemory(t *testing.T) {
	t.Parallel()
	type tagged struct {
		ID   int64    `json:"id"`
		Tags []string `json:"tags"`
	}
	type settings struct {
		Flags map[string]bool `json:"flags"`
	}
	type large struct {
		Body string `json:"body"`
	}
	ctx := context.Background()
	run := func(t *testing.T, name string, hit func(c countingCodec) func() error) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var decodes atomic.Int64
			h := hit(countingCodec{decodes: &decodes})
			for range 5 {
				require.NoError(t, h())
			}
			require.Equal(t, int64(5), decodes.Load(), "every call decodes")
		})
	}
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			run(t, "slice", func(codec countingCodec) func() error {
				c := newCache[tagged](t, kind.new(t), cache.Config{Name: "tagged", Codec: codec})
				return func() error {
					v, err := c.GetOrLoad(ctx, "k", func(context.Context) (tagged, error) {
						return tagged{ID: 1, Tags: []string{"a", "b"}}, nil
					})
					if err == nil && (len(v.Tags) != 2 || v.Tags[0] != "a") {
						err = fmt.Errorf("got %+v: a caller's change reached another's copy", v)
					}
					if err == nil {
						v.Tags[0] = "changed by a caller"
					}
					return err
				}
			})
			run(t, "map", func(codec countingCodec) func() error {
				c := newCache[settings](t, kind.new(t), cache.Config{Name: "settings", Codec: codec})
				return func() error {
					v, err := c.GetOrLoad(ctx, "k", func(context.Context) (settings, error) {
						return settings{Flags: map[string]bool{"beta": true}}, nil
					})
					if err == nil && (len(v.Flags) != 1 || !v.Flags["beta"]) {
						err = fmt.Errorf("got %+v: a caller's change reached another's copy", v)
					}
					if err == nil {
						v.Flags["beta"], v.Flags["added"] = false, true
					}
					return err
				}
			})
			run(t, "pointer", func(codec countingCodec) func() error {
				c := newCache[*account](t, kind.new(t), cache.Config{Name: "pointer", Codec: codec})
				return func() error {
					v, err := c.GetOrLoad(ctx, "k", func(context.Context) (*account, error) { return &account{Plan: "team"}, nil })
					if err == nil && v.Plan != "team" {
						err = fmt.Errorf("got %+v: a caller's change reached another's copy", v)
					}
					if err == nil {
						v.Plan = "changed by a caller"
					}
					return err
				}
			})
			run(t, "over 4 KiB", func(codec countingCodec) func() error {
				c := newCache[large](t, kind.new(t), cache.Config{Name: "large", Codec: codec})
				body := strings.Repeat("x", 4<<10-len(`{"body":""}`)+1) // JSON of 4 KiB and 1 byte
				return func() error {
					v, err := c.GetOrLoad(ctx, "k", func(context.Context) (large, error) { return large{Body: body}, nil })
					if err == nil && v.Body != body {
						err = errors.New("the large value came back different")
					}
					return err
				}
			})
		})
	}
}

// TestCacheRemembersHotValues: a few hot keys read in turn are each
// decoded once, however their bytes hash; and a value whose JSON is 4 KiB
// is remembered.
func TestCacheRemembersHotValues(t *testing.T) {
	t.Parallel()
	type large struct {
		ID   int    `json:"id"`
		Body string `json:"body"`
	}
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			var decodes atomic.Int64
			c := newCache[large](t, kind.new(t), cache.Config{Name: "hot", Codec: countingCodec{decodes: &decodes}})
			const hot = 8
			body := strings.Repeat("x", 4<<10-len(`{"id":0,"body":""}`)) // JSON of 4 KiB
			require.Len(t, mustJSON(t, large{Body: body}), 4<<10)
			for round := range 20 {
				for i := range hot {
					v, err := c.GetOrLoad(ctx, fmt.Sprint(i), func(context.Context) (large, error) { return large{ID: i, Body: body}, nil })
					require.NoError(t, err)
					require.Equal(t, i, v.ID, "round %d", round)
				}
			}
			require.Equal(t, int64(hot), decodes.Load(), "each of %d hot values decoded once in 20 rounds", hot)
		})
	}
}

// TestCacheDecodesWhileValuesChange: many callers read keys whose bytes
// other goroutines keep replacing (run with -race). Every value a caller
// gets is one that was stored under its key, whole: never another key's,
// and never a mix of two.
func TestCacheDecodesWhileValuesChange(t *testing.T) {
	t.Parallel()
	type versioned struct {
		Key     string `json:"key"`
		Version int64  `json:"version"`
		Check   string `json:"check"` // Key and Version again
	}
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			store := kind.new(t)
			c := newCache[versioned](t, store, cache.Config{Name: "versioned"})
			keys := make([]string, 300) // more than the cache remembers decoded values of
			for i := range keys {
				keys[i] = fmt.Sprint("k", i)
			}
			encode := func(key string, version int64) string {
				return string(append([]byte{'v'}, mustJSON(t, versioned{Key: key, Version: version, Check: fmt.Sprint(key, "/", version)})...))
			}
			for _, k := range keys {
				storeRaw(t, store, "versioned", k, encode(k, 0))
			}
			errs := make(chan error, 10)
			var stop atomic.Bool
			var writers, readers sync.WaitGroup
			for w := range 2 {
				writers.Go(func() {
					for v := int64(1); !stop.Load(); v++ {
						k := keys[(int(v)*7+w)%len(keys)]
						if err := store.Set(ctx, storeKey("versioned", k), []byte(encode(k, v%4)), time.Hour); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			for r := range 8 {
				readers.Go(func() {
					for i := range 2000 {
						k := keys[(i*13+r)%len(keys)]
						v, err := c.GetOrLoad(ctx, k, func(context.Context) (versioned, error) {
							return versioned{}, fmt.Errorf("%q was loaded: every key is stored", k)
						})
						if err == nil && (v.Key != k || v.Check != fmt.Sprint(k, "/", v.Version)) {
							err = fmt.Errorf("asked for %q, got %+v", k, v)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			readers.Wait()
			stop.Store(true)
			writers.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			require.Equal(t, uint64(8*2000), c.Stats().Hits)
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
