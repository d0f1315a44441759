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
// every checkout, and most checkouts find an idle connection: no timer should
// be set for them. The timer (and, when the caller's context can be
// canceled, a watch on it) is armed at the second call of Done, when the
// checkout waits: the first call is puddle's check, without blocking, that
// the context is not over; a second is a wait (for a free connection, for a
// new one to connect, for a ping).
//
// Each wait has a channel of its own. A channel shared by the waits (one
// timer for all that began within a window of time) cost about 1% of the
// throughput of SELECT 1 from 16 goroutines on 8 connections, and 3% from
// 64: every waiter's select locks the shared channel twice, and its lock
// passes from core to core; a timer per wait costs less than that.
//
// After a successful Acquire the context is reused (sync.Pool), so the
// steady state allocates nothing, but context.AfterFunc's registration for a
// cancelable caller that waited.
type acquireCtx struct {
	parent  context.Context
	start   int64         // nanotime
	timeout time.Duration // AcquireTimeout; 0: behave as parent (none, or the caller's deadline is sooner)

	done       chan struct{}
	dones      atomic.Int32 // calls of Done: the second is a wait
	armed      atomic.Bool
	state      atomic.Int32 // acquireLive, acquireTimedOut or acquireParentDone
	timer      *time.Timer  // stopped while not armed
	stopParent func() bool

	connected  atomic.Bool           // a connection was opened with this context (see release)
	conns      *connectBackoff       // the pool's connection attempts; nil in benchmarks
	timeoutErr atomic.Pointer[error] // Err's answer once AcquireTimeout ended the wait, set by the first Err then
}

const (
	acquireLive int32 = iota
	acquireTimedOut
	acquireParentDone
)

type acquireCtxKey struct{}

var acquireCtxPool = sync.Pool{New: func() any {
	c := &acquireCtx{done: make(chan struct{})}
	c.timer = time.AfterFunc(time.Hour, func() { c.finish(acquireTimedOut) })
	c.timer.Stop()
	return c
}}

// newAcquireCtx starts an Acquire under parent, bounded by timeout
// (AcquireTimeout; none when not positive).
func newAcquireCtx(parent context.Context, timeout time.Duration, conns *connectBackoff) *acquireCtx {
	c := acquireCtxPool.Get().(*acquireCtx)
	c.parent, c.start, c.timeout, c.conns = parent, nanotime(), 0, conns
	// A reused c is live and was not connected (see release); what is seldom
	// set is loaded before it is reset: an atomic store costs more than a
	// load on the checkout path.
	if c.armed.Load() {
		c.armed.Store(false)
	}
	if c.timeoutErr.Load() != nil {
		c.timeoutErr.Store(nil)
	}
	if timeout <= 0 {
		return c
	}
	if d, ok := parent.Deadline(); ok && !d.After(timeAt(c.start+int64(timeout))) {
		return c // the caller's deadline comes first: nothing to add
	}
	c.timeout = timeout
	c.dones.Store(0)
	if parent.Err() != nil {
		c.finish(acquireParentDone) // as context.WithTimeout would be: done from the start
	}
	return c
}

// arm sets the timer for what is left of AcquireTimeout (ending the wait
// now when nothing is) and the watch on the parent when it can be canceled.
func (c *acquireCtx) arm() {
	if !c.armed.CompareAndSwap(false, true) {
		return
	}
	left := time.Duration(c.start + int64(c.timeout) - nanotime())
	if left <= 0 {
		c.finish(acquireTimedOut)
		return
	}
	c.timer.Reset(left)
	if c.parent.Done() != nil {
		c.stopParent = context.AfterFunc(c.parent, c.parentDone)
	}
}

func (c *acquireCtx) parentDone() { c.finish(acquireParentDone) }

// timedOutErr is the error of a wait that AcquireTimeout ended, the same on
// every call. When connection attempts were failing meanwhile, it is an
// *UnreachableError that says so (and still matches ErrAcquireTimeout): the
// database is down, not busy.
func (c *acquireCtx) timedOutErr() error {
	if p := c.timeoutErr.Load(); p != nil {
		return *p
	}
	err := error(ErrAcquireTimeout)
	if c.conns != nil {
		if e := c.conns.timeoutError(timeAt(c.start)); e != nil {
			err = e
		}
	}
	c.timeoutErr.CompareAndSwap(nil, &err)
	return *c.timeoutErr.Load()
}

func (c *acquireCtx) finish(state int32) {
	if c.state.CompareAndSwap(acquireLive, state) {
		close(c.done)
	}
}

// release ends the Acquire: it stops the timer and the watch on the parent
// when they were armed, and puts c back for reuse when nothing can still
// read it. Something can when the Acquire failed (puddle's constructor goes
// on with the context after the wait gave up), when it opened a connection
// (net.Dialer's fallback racers read the context's values after DialContext
// returned), or when the timer or the parent already fired; then c is left
// to the garbage collector, as a context.WithTimeout would be.
func (c *acquireCtx) release(acquired bool) {
	stopped := true
	if c.armed.Load() {
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
	if c.timeout == 0 {
		return pd, ok
	}
	if d := timeAt(c.start + int64(c.timeout)); !ok || !pd.Before(d) {
		return d, true
	}
	return pd, ok
}

func (c *acquireCtx) Done() <-chan struct{} {
	if c.timeout == 0 {
		return c.parent.Done()
	}
	if c.dones.Add(1) == 2 {
		c.arm()
	}
	return c.done
}

func (c *acquireCtx) Err() error {
	if c.timeout == 0 {
		return c.parent.Err()
	}
	switch c.state.Load() {
	case acquireTimedOut:
		if err := c.parent.Err(); err != nil {
			return err // the caller's deadline came at the same time: it wins
		}
		return c.timedOutErr()
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
	c := newAcquireCtx(ctx, t.cfg.AcquireTimeout, conns)
	t.obs.acquire.addExtra(1)
	return c
}

// TraceAcquireEnd implements pgxpool.AcquireTracer.
func (t *tracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, data pgxpool.TraceAcquireEndData) {
	now := nanotime()
	ac, ok := ctx.(*acquireCtx) // what TraceAcquireStart returned, unless another tracer wrapped it
	if !ok {
		ac, ok = ctx.Value(acquireCtxKey{}).(*acquireCtx)
	}
	wait := time.Duration(-1) // unknown
	if ok {
		wait = time.Duration(now - ac.start)
		ac.release(data.Err == nil)
	}
	t.obs.acquireDone(wait, data.Err != nil && isAcquireTimeout(data.Err))
	if data.Err != nil {
		return
	}
	cs := t.state(data.Conn)
	cs.acquiredAt.Store(now)
	if t.leaks != nil {
		t.leaks.acquired(cs)
	}
}
