package pgkit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// acquireCtx is the context pgxpool uses for one Acquire: the caller's, plus
// AcquireTimeout. Its Err reports ErrAcquireTimeout when the timeout, not the
// caller, ended the wait (an *UnreachableError, which matches it, when
// connection attempts were failing meanwhile); puddle and pgxpool return
// ctx.Err(), so every pool method reports it without pgkit wrapping rows,
// batches or transactions.
//
// It is a context of its own rather than context.WithTimeout because it is on
// every checkout: after a successful Acquire, its channel and timer are
// reused (sync.Pool), so the steady state allocates nothing for a caller
// whose context cannot be canceled, and only context.AfterFunc's
// registration for one that can.
type acquireCtx struct {
	parent   context.Context
	start    time.Time
	deadline time.Time // zero: no AcquireTimeout, behave as parent

	done       chan struct{}
	state      atomic.Int32 // acquireLive, acquireTimedOut or acquireParentDone
	connected  atomic.Bool  // a connection was opened with this context (see release)
	timer      *time.Timer
	stopParent func() bool

	conns      *connectBackoff // the pool's connection attempts; nil in benchmarks
	timeoutErr error           // set by timedOut before the state says so: Err's answer then, when not nil
}

const (
	acquireLive int32 = iota
	acquireTimedOut
	acquireParentDone
)

type acquireCtxKey struct{}

var acquireCtxPool = sync.Pool{New: func() any { return &acquireCtx{} }}

func newAcquireCtx(parent context.Context, timeout time.Duration, conns *connectBackoff) *acquireCtx {
	c := acquireCtxPool.Get().(*acquireCtx)
	c.parent = parent
	c.start = time.Now()
	c.deadline = time.Time{}
	c.connected.Store(false)
	c.conns, c.timeoutErr = conns, nil
	if timeout <= 0 {
		return c
	}
	if d, ok := parent.Deadline(); ok && !d.After(c.start.Add(timeout)) {
		return c // the caller's deadline comes first: no timer to set
	}
	c.deadline = c.start.Add(timeout)
	if c.done == nil {
		c.done = make(chan struct{})
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(timeout, c.timedOut)
	} else {
		c.timer.Reset(timeout)
	}
	if parent.Done() != nil {
		c.stopParent = context.AfterFunc(parent, c.parentDone)
	}
	return c
}

func (c *acquireCtx) parentDone() { c.finish(acquireParentDone) }

// timedOut ends the wait at AcquireTimeout. When connection attempts were
// failing meanwhile, the wait ends with an *UnreachableError that says so
// (and still matches ErrAcquireTimeout): the database is down, not busy.
// It is written before finish publishes the state that Err reads.
func (c *acquireCtx) timedOut() {
	if c.conns != nil {
		if err := c.conns.timeoutError(c.start); err != nil {
			c.timeoutErr = err
		}
	}
	c.finish(acquireTimedOut)
}

func (c *acquireCtx) finish(state int32) {
	if c.state.CompareAndSwap(acquireLive, state) {
		close(c.done)
	}
}

// release ends the Acquire: it stops the timer and the watch on the parent
// and puts c back for reuse when nothing can still read it. Something can
// when the Acquire failed (puddle's constructor goes on with the context
// after the wait gave up), when it opened a connection (net.Dialer's
// fallback racers read the context's values after DialContext returned), or
// when the timer or the parent already fired; then c is left to the garbage
// collector, as a context.WithTimeout would be.
func (c *acquireCtx) release(acquired bool) {
	stopped := true
	if !c.deadline.IsZero() {
		stopped = c.timer.Stop()
		if c.stopParent != nil {
			stopped = c.stopParent() && stopped
			c.stopParent = nil
		}
	}
	if acquired && stopped && !c.connected.Load() && c.state.Load() == acquireLive {
		c.parent, c.conns = nil, nil
		acquireCtxPool.Put(c)
	}
}

func (c *acquireCtx) Deadline() (time.Time, bool) {
	pd, ok := c.parent.Deadline()
	if c.deadline.IsZero() || ok && pd.Before(c.deadline) {
		return pd, ok
	}
	return c.deadline, true
}

func (c *acquireCtx) Done() <-chan struct{} {
	if c.deadline.IsZero() {
		return c.parent.Done()
	}
	return c.done
}

func (c *acquireCtx) Err() error {
	if c.deadline.IsZero() {
		return c.parent.Err()
	}
	switch c.state.Load() {
	case acquireTimedOut:
		if err := c.parent.Err(); err != nil {
			return err // the caller's deadline came at the same time: it wins
		}
		if c.timeoutErr != nil {
			return c.timeoutErr
		}
		return ErrAcquireTimeout
	case acquireParentDone:
		return c.parent.Err()
	}
	return nil
}

func (c *acquireCtx) Value(key any) any {
	if key == (acquireCtxKey{}) {
		return c
	}
	return c.parent.Value(key)
}

// TraceAcquireStart implements pgxpool.AcquireTracer; a pool's poolTracer
// adds its connection attempts.
func (t *tracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	return t.acquireStart(ctx, nil)
}

func (t *tracer) acquireStart(ctx context.Context, conns *connectBackoff) context.Context {
	t.obs.waiting.Add(1)
	return newAcquireCtx(ctx, t.cfg.AcquireTimeout, conns)
}

// TraceAcquireEnd implements pgxpool.AcquireTracer.
func (t *tracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, data pgxpool.TraceAcquireEndData) {
	now := time.Now()
	ac, ok := ctx.(*acquireCtx) // what TraceAcquireStart returned, unless another tracer wrapped it
	if !ok {
		ac, ok = ctx.Value(acquireCtxKey{}).(*acquireCtx)
	}
	wait := time.Duration(-1) // unknown
	if ok {
		wait = now.Sub(ac.start)
		ac.release(data.Err == nil)
	}
	t.obs.acquireDone(wait, data.Err != nil && isAcquireTimeout(data.Err))
	if data.Err != nil {
		return
	}
	cs := t.state(data.Conn)
	cs.acquiredAt.Store(now.UnixNano())
	if t.leaks != nil {
		t.leaks.acquired(cs)
	}
}
