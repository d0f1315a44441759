package pgkit

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tracer is installed on every connection of a DB. It bounds the wait for a
// connection (AcquireTimeout) and counts what pgxpool's Stat does not.
type tracer struct {
	acquireTimeout time.Duration

	waiting         atomic.Int64 // callers inside Acquire right now
	acquireTimeouts atomic.Int64
}

func newTracer(cfg Config) *tracer {
	return &tracer{acquireTimeout: max(cfg.AcquireTimeout, 0)}
}

// acquireCtx is the context pgxpool uses for one Acquire when AcquireTimeout
// is set: the caller's context with the timeout added. Its Err reports
// ErrAcquireTimeout when the timeout, not the caller, ended the wait, which is
// what puddle and pgxpool then return from every pool method.
type acquireCtx struct {
	context.Context // the caller's context plus the timeout
	parent          context.Context
	cancel          context.CancelFunc
}

type acquireCtxKey struct{}

func (c *acquireCtx) Err() error {
	err := c.Context.Err()
	if err == context.DeadlineExceeded && c.parent.Err() == nil {
		return ErrAcquireTimeout
	}
	return err
}

func (c *acquireCtx) Value(key any) any {
	if key == (acquireCtxKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// TraceQueryStart implements pgx.QueryTracer.
func (t *tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *tracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceAcquireStart implements pgxpool.AcquireTracer.
func (t *tracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	t.waiting.Add(1)
	if t.acquireTimeout <= 0 {
		return ctx
	}
	tctx, cancel := context.WithTimeout(ctx, t.acquireTimeout)
	return &acquireCtx{Context: tctx, parent: ctx, cancel: cancel}
}

// TraceAcquireEnd implements pgxpool.AcquireTracer.
func (t *tracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, data pgxpool.TraceAcquireEndData) {
	t.waiting.Add(-1)
	if ac, ok := ctx.Value(acquireCtxKey{}).(*acquireCtx); ok {
		ac.cancel()
	}
	if data.Err != nil && isAcquireTimeout(data.Err) {
		t.acquireTimeouts.Add(1)
	}
}
