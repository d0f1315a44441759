package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// A remote store (Redis) is asked once per key however many callers want it
// at once: the first caller of a key starts a flight that looks the key up
// and, on a miss, loads and stores it; callers of the same key that arrive
// meanwhile wait for that flight instead of each sending its own GET. A
// stampede on one key thus costs one GET (and one SET), not one GET per
// caller queueing for the client's connections, where they would time out
// after StoreTimeout, be counted as store failures and trip StoreBackoff.

// flight is one lookup of a key, with the load and store that follow a miss.
type flight[T any] struct {
	looked  chan struct{} // closed once outcome is set
	outcome cacheResult   // how the lookup went: hit, miss or error

	done chan struct{} // closed once b and err are set
	b    []byte        // the stored bytes: found, or loaded and encoded
	err  error         // the load's error
}

// flightGroup holds the flights in progress, by store key.
type flightGroup[T any] struct {
	mu sync.Mutex
	m  map[string]*flight[T]
}

// join returns the flight of key, and whether the caller must start it.
func (g *flightGroup[T]) join(key string) (*flight[T], bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return f, false
	}
	if g.m == nil {
		g.m = make(map[string]*flight[T])
	}
	f := &flight[T]{looked: make(chan struct{}), done: make(chan struct{})}
	g.m[key] = f
	return f, true
}

// finish removes f, unless forget already did.
func (g *flightGroup[T]) finish(key string, f *flight[T]) {
	g.mu.Lock()
	if g.m[key] == f {
		delete(g.m, key)
	}
	g.mu.Unlock()
}

// forget makes later callers of key start a new flight (Delete).
func (g *flightGroup[T]) forget(key string) {
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
}

// getShared is getOrLoad on a remote store: the caller joins the flight of
// skey, or starts it and looks the key up itself. It stops waiting when ctx
// ends; the flight goes on for the others.
func (c *Cache[T]) getShared(ctx context.Context, skey string, load func(context.Context) (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, err
	}
	f, first := c.remote.join(skey)
	if first {
		return c.lead(ctx, skey, f, load)
	}
	return c.await(ctx, f)
}

// lead is the first caller's part of flight f: the lookup, on the caller's
// goroutine and under its context (bounded by StoreTimeout), so that a lone
// caller's hit costs no more than a GET and a decode. On anything but a hit
// the load runs on a goroutine of its own, and the caller waits for it like
// the others. If the caller's context ends during the lookup, the flight is
// handed to fly, which looks again for those who joined.
func (c *Cache[T]) lead(ctx context.Context, skey string, f *flight[T], load func(context.Context) (T, error)) (T, error) {
	v, verr, hit, storeOK, err := c.lookup(ctx, skey, f, true)
	switch {
	case err != nil:
		go c.fly(ctx, skey, f, load)
		return v, err
	case hit:
		c.hit(false)
		return v, verr
	}
	go c.loadFor(ctx, skey, f, load, storeOK)
	return c.await(ctx, f)
}

// lookup is flight f's GET of skey (skipped during StoreBackoff). On a hit
// it ends f and returns the value decoded. Otherwise it sets f's outcome,
// closes f.looked, and says whether the load's result may be stored. With
// mayGiveUp, a GET cut short by the end of ctx leaves f as it was and
// returns ctx's error.
func (c *Cache[T]) lookup(ctx context.Context, skey string, f *flight[T], mayGiveUp bool) (v T, verr error, hit, storeOK bool, err error) {
	defer func() {
		// A store, codec or logger that panics (always before f.looked is
		// closed): the callers that joined get an error instead of waiting
		// for ever, and the panic goes on.
		if p := recover(); p != nil {
			f.outcome, f.err = cacheError, fmt.Errorf("pgkit: cache %q: the lookup panicked: %v", c.cfg.Name, p)
			close(f.looked)
			c.remote.finish(skey, f)
			close(f.done)
			panic(p)
		}
	}()
	if c.storeDown() {
		f.outcome = cacheError
		close(f.looked)
		return v, nil, false, false, nil
	}
	b, err := c.storeGet(ctx, skey)
	switch {
	case err == nil:
		c.storeUp()
		storeOK = true
		if v, verr, ok := c.decode(b); ok {
			if c.local != nil {
				c.local.set(skey, b, c.localTTL(b))
			}
			f.outcome, f.b = cacheHit, b
			close(f.looked)
			c.remote.finish(skey, f)
			close(f.done)
			return v, verr, true, true, nil
		}
		f.outcome = cacheError
		c.logLimited("decode", errUndecodable)
	case errors.Is(err, ErrMiss):
		c.storeUp()
		storeOK = true
		f.outcome = cacheMiss
	case mayGiveUp && ctx.Err() != nil:
		return v, nil, false, false, ctx.Err()
	default:
		c.storeFailed("get", err)
		f.outcome = cacheError
	}
	close(f.looked)
	return v, nil, false, storeOK, nil
}

// await counts the caller by f's lookup and returns its own copy of f's
// result, or ctx's error when ctx ends first.
func (c *Cache[T]) await(ctx context.Context, f *flight[T]) (T, error) {
	var zero T
	select {
	case <-f.looked:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	switch f.outcome {
	case cacheHit:
		c.hit(false)
	case cacheMiss:
		c.miss()
	default:
		c.requestError()
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	if f.err != nil {
		return zero, f.err
	}
	v, err, ok := c.decode(f.b)
	if !ok {
		return zero, fmt.Errorf("pgkit: cache %q: the codec cannot decode what it encoded", c.cfg.Name)
	}
	return v, err
}

// fly runs flight f of skey when its first caller gave up during the
// lookup: the lookup again, then, on anything but a hit, the load and the
// SET. It keeps the first caller's context values but not its
// cancellation: each store call is bounded by StoreTimeout, the whole by
// LoadTimeout.
func (c *Cache[T]) fly(parent context.Context, skey string, f *flight[T], load func(context.Context) (T, error)) {
	ctx, cancel := c.loadCtx(context.WithoutCancel(parent))
	defer cancel()
	if _, _, hit, storeOK, _ := c.lookup(ctx, skey, f, false); !hit {
		c.loadFor(ctx, skey, f, load, storeOK)
	}
}

// loadFor runs the load of flight f and stores its result, detached from
// the cancellation of the caller whose context it keeps, bounded by
// LoadTimeout; then it ends f.
func (c *Cache[T]) loadFor(parent context.Context, skey string, f *flight[T], load func(context.Context) (T, error), storeOK bool) {
	ctx, cancel := c.loadCtx(context.WithoutCancel(parent))
	defer cancel()
	f.b, f.err = c.loadPut(ctx, skey, load, storeOK)
	c.remote.finish(skey, f)
	close(f.done)
}
