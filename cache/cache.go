package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Cache is a cache-aside cache of values of type T over a Store, for the
// results of frequent queries. It is safe for concurrent use. Make one per
// kind of value with New, and Close it when done.
type Cache[T any] struct {
	cfg    Config
	store  Store
	mem    *MemoryStore   // store, when it is a MemoryStore (no timeout, no copy)
	local  *MemoryStore   // the local tier; nil without LocalTTL
	memo   *decodeMemo[T] // values decoded last; nil when T is not copyable
	prefix string         // escaped Name and ':'

	flights singleflight.Group // the memory store's loads
	remote  flightGroup[T]     // a remote store's lookups and loads
	slotKey maphash.Seed       // hashes store keys to epoch slots
	// epochs counts deletions per slot of keys (by hash), so that a load
	// that was running when its key was invalidated does not store what it
	// read before the change.
	epochs [epochSlots]atomic.Uint64

	m   *cacheMetrics
	log *slog.Logger

	hits, localHits, misses, errs, loads, loadErrs, storeErrs atomic.Uint64
	lastLog                                                   atomic.Int64 // UnixNano of the last log line
	unlogged                                                  atomic.Uint64
	// downUntil is when GetOrLoad may try the store again after a failure
	// (UnixNano); 0 when the last store call succeeded.
	downUntil atomic.Int64

	closeOnce sync.Once
}

const epochSlots = 256

// The first byte of every stored value says what follows.
const (
	kindValue    byte = 'v' // the codec's encoding of a value
	kindNotFound byte = 'n' // a "not found" marker; nothing follows
)

var notFoundMarker = []byte{kindNotFound}

// New returns a Cache of T over store. It refuses a bad config with a
// *pgkit.ConfigError whose Struct is "cache.Config" and whose Field names
// the field.
func New[T any](store Store, cfg Config) (*Cache[T], error) {
	if store == nil {
		return nil, errors.New("pgkit: cache.New: the store is nil")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Cache[T]{
		cfg:     cfg,
		store:   store,
		prefix:  Key(cfg.Name) + ":",
		slotKey: maphash.MakeSeed(),
		memo:    newDecodeMemo[T](),
		log:     cfg.Logger,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.mem, _ = store.(*MemoryStore)
	m, err := newCacheMetrics(cfg.Registerer, cfg.Name)
	if err != nil {
		return nil, err
	}
	c.m = m
	if cfg.LocalTTL > 0 {
		c.local, err = NewMemoryStore(MemoryStoreConfig{MaxEntries: cfg.LocalMaxEntries})
		if err != nil {
			m.unregister()
			return nil, err
		}
	}
	return c, nil
}

// GetOrLoad returns the value cached under key, or runs load, caches what
// it returns for TTL plus jitter, and returns it.
//
// However many callers ask for a missing key at once, load runs once (in
// this process) and they all get its result. With a remote store they also
// share one lookup: the callers of a key that arrive while its GET (or its
// load) is in progress wait for that one instead of sending their own. load
// gets a context that keeps the first caller's values but not its
// cancellation, bounded by LoadTimeout. An error from load is returned to
// every waiting caller and not cached, unless it matches
// Config.NotFound.
//
// The store never makes GetOrLoad fail: a store that errors or does not
// answer within StoreTimeout is treated as a miss, and left alone for
// StoreBackoff. The error GetOrLoad returns is load's error, the caller's
// context's error, or the codec's.
//
// Every caller gets its own copy of the value, decoded from the stored bytes
// (a miss included), so it may be modified freely. When a plain copy of a T
// shares no memory with the original (no slice, map, pointer or interface
// inside; strings and time.Time are fine), the cache keeps the last values
// it decoded (128, each encoded in up to 4 KiB) by their bytes, and a hit
// that fetches the same bytes copies the value instead of decoding it:
// the round trip stays, the decode goes. A type whose UnmarshalJSON reads
// anything but its bytes (the clock, say) gets what its first decode gave.
func (c *Cache[T]) GetOrLoad(ctx context.Context, key string, load func(ctx context.Context) (T, error)) (T, error) {
	return c.getOrLoad(ctx, c.prefix+key, load)
}

// getOrLoad is GetOrLoad of the store key skey.
func (c *Cache[T]) getOrLoad(ctx context.Context, skey string, load func(ctx context.Context) (T, error)) (T, error) {
	if c.local != nil {
		if b, ok := c.local.get(skey); ok {
			if v, err, ok := c.decode(b); ok {
				c.hit(true)
				return v, err
			}
		}
	}
	if c.mem == nil {
		return c.getShared(ctx, skey, load)
	}
	if c.storeDown() {
		c.requestError()
		return c.fill(ctx, skey, load, false)
	}
	storeOK := true
	b, err := c.storeGet(ctx, skey)
	if err == nil || errors.Is(err, ErrMiss) {
		c.storeUp()
	}
	switch {
	case err == nil:
		if v, derr, ok := c.decode(b); ok {
			c.hit(false)
			if c.local != nil {
				c.local.set(skey, b, c.localTTL(b))
			}
			return v, derr
		}
		c.requestError()
		c.logLimited("decode", errUndecodable)
	case errors.Is(err, ErrMiss):
		c.miss()
	default:
		if ctx.Err() != nil {
			var zero T
			return zero, ctx.Err()
		}
		c.requestError()
		c.storeFailed("get", err)
		storeOK = false
	}
	return c.fill(ctx, skey, load, storeOK)
}

var errUndecodable = errors.New("pgkit: a stored entry could not be decoded (written by another version?); loading it again")

// fill waits for the one load of skey, starting it if none runs (the
// memory store's path, whose lookups cost no round trip).
func (c *Cache[T]) fill(ctx context.Context, skey string, load func(context.Context) (T, error), storeOK bool) (T, error) {
	var zero T
	ch := c.flights.DoChan(skey, func() (any, error) {
		return c.loadAndStore(ctx, skey, load, storeOK)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return zero, r.Err
		}
		v, err, ok := c.decode(r.Val.([]byte))
		if !ok {
			return zero, fmt.Errorf("pgkit: cache %q: the codec cannot decode what it encoded", c.cfg.Name)
		}
		return v, err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// loadAndStore is one flight of the memory path: it runs load and stores
// its result, and returns the stored bytes for every waiting caller to
// decode.
func (c *Cache[T]) loadAndStore(parent context.Context, skey string, load func(context.Context) (T, error), storeOK bool) ([]byte, error) {
	ctx, cancel := c.loadCtx(context.WithoutCancel(parent))
	defer cancel()
	if storeOK {
		// A flight that ended after this caller's Get may have stored it.
		b, err := c.storeGet(ctx, skey)
		switch {
		case err == nil:
			if _, _, ok := c.decode(b); ok {
				return b, nil
			}
		case !errors.Is(err, ErrMiss):
			c.storeFailed("get", err)
			storeOK = false
		}
	}
	return c.loadPut(ctx, skey, load, storeOK)
}

// loadCtx bounds ctx by LoadTimeout.
func (c *Cache[T]) loadCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.LoadTimeout > 0 {
		return context.WithTimeout(ctx, c.cfg.LoadTimeout)
	}
	return ctx, noCancel
}

// loadPut runs load and stores its result (or a "not found" marker) unless
// the key was invalidated meanwhile, and returns the stored bytes.
func (c *Cache[T]) loadPut(ctx context.Context, skey string, load func(context.Context) (T, error), storeOK bool) ([]byte, error) {
	epoch := c.epoch(skey)
	start := time.Now()
	v, err := c.runLoad(ctx, load)
	c.loads.Add(1)
	c.m.observeLoad(time.Since(start))
	if err != nil {
		c.loadErrs.Add(1)
		if c.cfg.NotFound != nil && errors.Is(err, c.cfg.NotFound) {
			c.put(ctx, skey, notFoundMarker, c.cfg.NegativeTTL, storeOK, epoch)
		}
		return nil, err
	}
	b, err := c.encode(v)
	if err != nil {
		return nil, err
	}
	ttl := c.cfg.TTL
	if j := c.cfg.TTLJitter; j > 0 {
		ttl += rand.N(j + 1)
	}
	c.put(ctx, skey, b, ttl, storeOK, epoch)
	return b, nil
}

// runLoad calls load and turns a panic into an error for every waiting
// caller: the flight runs on a goroutine of its own, where a panic would
// end the process.
// The stack goes to the log once (the Logger, else slog.Default()), not into
// the error every waiting caller gets.
func (c *Cache[T]) runLoad(ctx context.Context, load func(context.Context) (T, error)) (v T, err error) {
	if load == nil {
		return v, fmt.Errorf("pgkit: cache %q: GetOrLoad: load is nil", c.cfg.Name)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("pgkit: cache %q: load panicked: %v", c.cfg.Name, p)
			panicLogger(c.cfg.Logger).LogAttrs(ctx, slog.LevelError, "pgkit: cache load panicked", slog.String("cache", c.cfg.Name),
				slog.String("panic", fmt.Sprint(p)), slog.String("stack", string(debug.Stack())))
		}
	}()
	return load(ctx)
}

// put stores b under skey unless the key was invalidated since the load
// began (epoch), and takes it out again if it was invalidated meanwhile.
func (c *Cache[T]) put(ctx context.Context, skey string, b []byte, ttl time.Duration, storeOK bool, epoch uint64) {
	if c.epoch(skey) != epoch {
		return
	}
	if storeOK {
		if err := c.storeSet(ctx, skey, b, ttl); err != nil {
			c.storeFailed("set", err)
		}
	}
	if c.local != nil {
		c.local.set(skey, b, min(ttl, c.cfg.LocalTTL))
	}
	if c.epoch(skey) != epoch { // a Delete ran between the check and the Set
		if c.local != nil {
			c.local.remove(skey)
		}
		if err := c.storeDelete(ctx, skey); err != nil {
			c.storeFailed("delete", err)
		}
	}
}

// Delete removes the keys from the store (in one round trip) and from this
// process's local tier. A load of one of the keys running meanwhile still
// returns its value to its callers but does not store it, and later callers
// do not wait for it. A failed store call is counted, logged and returned.
func (c *Cache[T]) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	skeys := make([]string, len(keys))
	for i, k := range keys {
		skeys[i] = c.prefix + k
		c.epochs[c.slot(skeys[i])].Add(1)
		c.flights.Forget(skeys[i])
		c.remote.forget(skeys[i])
		if c.local != nil {
			c.local.remove(skeys[i])
		}
	}
	if err := c.storeDelete(ctx, skeys...); err != nil {
		c.storeFailed("delete", err)
		return fmt.Errorf("pgkit: cache %q: delete: %w", c.cfg.Name, err)
	}
	return nil
}

// OnCommitter is what InvalidateOnCommit needs of a transaction: a pgkit.Tx
// is one.
type OnCommitter interface {
	// OnCommit registers fn to run after the outermost transaction commits.
	OnCommit(fn func(ctx context.Context))
}

// InvalidateOnCommit deletes the keys after tx's outermost transaction
// commits (through tx.OnCommit): with a pgkit.Tx, before pgkit.InTx returns;
// never after a rollback, nor when tx is a savepoint that rolled back. The
// delete gets the transaction's context without its cancellation, bounded
// by StoreTimeout; a failure is counted and logged.
func (c *Cache[T]) InvalidateOnCommit(tx OnCommitter, keys ...string) {
	if tx == nil {
		c.log.Error("pgkit: Cache.InvalidateOnCommit called with a nil transaction; nothing will be invalidated", "cache", c.cfg.Name)
		return
	}
	keys = slices.Clone(keys)
	tx.OnCommit(func(ctx context.Context) {
		_ = c.Delete(context.WithoutCancel(ctx), keys...)
	})
}

// Close releases the local tier and unregisters the metrics, so a cache of
// the same Name can be made again. It does not close the store, which may
// be shared. The cache should not be used after Close. Closing twice is
// fine.
func (c *Cache[T]) Close() {
	c.closeOnce.Do(func() {
		if c.local != nil {
			c.local.Close()
		}
		c.m.unregister()
	})
}

func (c *Cache[T]) encode(v T) ([]byte, error) {
	enc, err := c.cfg.Codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("pgkit: cache %q: encoding the loaded value: %w", c.cfg.Name, err)
	}
	b := make([]byte, 1+len(enc))
	b[0] = kindValue
	copy(b[1:], enc)
	return b, nil
}

// decode turns stored bytes into the value (or the NotFound error of a
// marker); ok is false when they are not something this cache wrote.
func (c *Cache[T]) decode(b []byte) (v T, err error, ok bool) {
	if len(b) == 0 {
		return v, nil, false
	}
	switch b[0] {
	case kindValue:
		var hash uint64
		if c.memo != nil {
			if v, hash, ok = c.memo.get(b); ok {
				return v, nil, true
			}
		}
		if c.cfg.Codec.Unmarshal(b[1:], &v) != nil {
			var zero T // not what a failed decode left half-filled
			return zero, nil, false
		}
		if c.memo != nil {
			c.memo.put(hash, b, v)
		}
		return v, nil, true
	case kindNotFound:
		if len(b) == 1 && c.cfg.NotFound != nil {
			return v, c.cfg.NotFound, true
		}
	}
	return v, nil, false
}

func (c *Cache[T]) localTTL(b []byte) time.Duration {
	if b[0] == kindNotFound {
		return min(c.cfg.LocalTTL, c.cfg.NegativeTTL)
	}
	return c.cfg.LocalTTL
}

func (c *Cache[T]) slot(skey string) int {
	return int(maphash.String(c.slotKey, skey) % epochSlots)
}

func (c *Cache[T]) epoch(skey string) uint64 { return c.epochs[c.slot(skey)].Load() }

func (c *Cache[T]) hit(local bool) {
	c.hits.Add(1)
	if local {
		c.localHits.Add(1)
	}
	c.m.request(cacheHit)
}

func (c *Cache[T]) miss() {
	c.misses.Add(1)
	c.m.request(cacheMiss)
}

func (c *Cache[T]) requestError() {
	c.errs.Add(1)
	c.m.request(cacheError)
}

// panicLogger is where a panicking load's stack goes: logger, else
// slog.Default() as it is now.
func panicLogger(logger *slog.Logger) *slog.Logger {
	if logger != nil {
		return logger
	}
	return slog.Default()
}
