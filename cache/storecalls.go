package cache

import (
	"context"
	"time"
)

// The cache's calls to its store: bounded by StoreTimeout, skipped for
// StoreBackoff after a failure, failures counted and logged at most once per
// ErrorLogInterval.

// storeCtx bounds a store call by StoreTimeout, unless ctx already ends
// sooner.
func (c *Cache[T]) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.StoreTimeout > 0 {
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > c.cfg.StoreTimeout {
			return context.WithTimeout(ctx, c.cfg.StoreTimeout)
		}
	}
	return ctx, noCancel
}

func noCancel() {}

func (c *Cache[T]) storeGet(ctx context.Context, skey string) ([]byte, error) {
	if c.mem != nil {
		return c.mem.Get(ctx, skey)
	}
	ctx, cancel := c.storeCtx(ctx)
	defer cancel()
	return c.store.Get(ctx, skey)
}

func (c *Cache[T]) storeSet(ctx context.Context, skey string, b []byte, ttl time.Duration) error {
	if c.mem != nil {
		c.mem.set(skey, b, ttl) // b is this cache's own and never modified
		return nil
	}
	ctx, cancel := c.storeCtx(ctx)
	defer cancel()
	return c.store.Set(ctx, skey, b, ttl)
}

func (c *Cache[T]) storeDelete(ctx context.Context, skeys ...string) error {
	ctx, cancel := c.storeCtx(ctx)
	defer cancel()
	return c.store.Delete(ctx, skeys...)
}

func (c *Cache[T]) storeFailed(op string, err error) {
	c.storeErrs.Add(1)
	c.m.storeError()
	if c.cfg.StoreBackoff > 0 {
		c.downUntil.Store(time.Now().Add(c.cfg.StoreBackoff).UnixNano())
	}
	c.logLimited(op, err)
}

// storeDown reports whether a store failure less than StoreBackoff ago
// keeps GetOrLoad away from the store. A hit pays one atomic load.
func (c *Cache[T]) storeDown() bool {
	u := c.downUntil.Load()
	return u != 0 && time.Now().UnixNano() < u
}

func (c *Cache[T]) storeUp() {
	if c.downUntil.Load() != 0 {
		c.downUntil.Store(0)
	}
}

// logLimited logs a store failure (or an undecodable entry) unless one was
// logged less than ErrorLogInterval ago; the line carries the number of
// failures since the last line.
func (c *Cache[T]) logLimited(op string, err error) {
	c.unlogged.Add(1)
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if last != 0 && now-last < int64(c.cfg.ErrorLogInterval) || !c.lastLog.CompareAndSwap(last, now) {
		return
	}
	msg := "pgkit: cache store error; loading from the database meanwhile"
	if op == "decode" {
		msg = "pgkit: cache entry could not be decoded; loading it again"
	}
	c.log.Warn(msg, "cache", c.cfg.Name, "op", op, "error", err, "failures", c.unlogged.Swap(0),
		"interval", c.cfg.ErrorLogInterval)
}
