package pgkit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"weak"

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
// every checkout: it sets no timer. The wait is armed at the second call of
// Done, when the checkout waits (the first call is puddle's check, without
// blocking, that the context is not over; a second is a wait: for a free
// connection, for a new one to connect, for a ping): arming notes when the
// wait is due (one atomic store) and, when the caller's context can be
// canceled, watches it. The tracer's acquireWaits ends the waits past due.
//
// Each wait has a channel of its own. A channel shared by the waits (one
// timer for all that began within a window of time) cost about 1% of the
// throughput of SELECT 1 from 16 goroutines on 8 connections, and 3% from
// 64: every waiter's select locks the shared channel twice, and its lock
// passes from core to core. A timer per wait, reset and stopped, cost 80 ns
// of the tracer's checkout, and up to 2% of the client's throughput at 64
// goroutines, in the runtime's timer heap (see docs/architecture.md).
//
// After a successful Acquire the context is reused (acquireWaits' sync.Pool),
// so the steady state allocates nothing, but context.AfterFunc's
// registration for a cancelable caller that waited.
type acquireCtx struct {
	parent  context.Context
	start   int64         // nanotime
	timeout time.Duration // AcquireTimeout; 0: behave as parent (none, or the caller's deadline is sooner)

	done       chan struct{}
	dones      atomic.Int32 // calls of Done: the second is a wait, and arms it
	state      atomic.Int32 // acquireLive, acquireTimedOut or acquireParentDone
	due        atomic.Int64 // nanotime the armed wait is due; 0: not armed; waitExpired: acquireWaits ended it
	stopParent func() bool

	connected  atomic.Bool           // a connection was opened with this context (see release)
	conns      *connectBackoff       // the pool's connection attempts; nil in benchmarks
	waits      *acquireWaits         // where c goes back for reuse
	timeoutErr atomic.Pointer[error] // Err's answer once AcquireTimeout ended the wait, set by the first Err then
}

const (
	acquireLive int32 = iota
	acquireTimedOut
	acquireParentDone
)

const waitExpired = -1

type acquireCtxKey struct{}

// acquireWaits is where a tracer's acquire contexts come from, and what ends
// their waits at AcquireTimeout: one goroutine looks every
// acquireCheckPeriod at the contexts it made, and ends the armed waits past
// due, so a wait ends within AcquireTimeout plus that period. The contexts
// are reused through a sync.Pool; the list the goroutine reads holds them
// weakly, so those the pool lets go are collected, and dropped from it.
type acquireWaits struct {
	timeout time.Duration // AcquireTimeout; 0: none, and no goroutine
	pool    sync.Pool

	mu  sync.Mutex
	all []weak.Pointer[acquireCtx]

	expiry *ticking // nil without a timeout
}

// acquireCheckPeriod is how often acquireWaits looks: a twentieth of
// AcquireTimeout, within [5ms, 100ms].
func acquireCheckPeriod(timeout time.Duration) time.Duration {
	return min(max(timeout/20, 5*time.Millisecond), 100*time.Millisecond)
}

func newAcquireWaits(timeout time.Duration) *acquireWaits {
	w := &acquireWaits{timeout: max(timeout, 0)}
	w.pool.New = func() any {
		c := &acquireCtx{done: make(chan struct{}), waits: w}
		w.mu.Lock()
		w.all = append(w.all, weak.Make(c))
		w.mu.Unlock()
		return c
	}
	if w.timeout > 0 {
		w.expiry = startTicking(acquireCheckPeriod(w.timeout), w.expire)
	}
	return w
}

// expire ends the armed waits due by now, and forgets the contexts that
// were collected.
func (w *acquireWaits) expire(now int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	live := w.all[:0]
	for _, p := range w.all {
		if c := p.Value(); c != nil {
			live = append(live, p)
			c.expire(now)
		}
	}
	clear(w.all[len(live):])
	w.all = live
}

func (w *acquireWaits) close() { w.expiry.close() }

// start begins an Acquire under parent, bounded by AcquireTimeout.
func (w *acquireWaits) start(parent context.Context, conns *connectBackoff) *acquireCtx {
	c := w.pool.Get().(*acquireCtx)
	c.parent, c.start, c.timeout, c.conns = parent, nanotime(), 0, conns
	// A reused c is live, not armed and was not connected (see release);
	// what is seldom set is loaded before it is reset: an atomic store costs
	// more than a load on the checkout path.
	if c.timeoutErr.Load() != nil {
		c.timeoutErr.Store(nil)
	}
	if w.timeout <= 0 {
		return c
	}
	if d, ok := parent.Deadline(); ok && !d.After(timeAt(c.start+int64(w.timeout))) {
		return c // the caller's deadline comes first: nothing to add
	}
	c.timeout = w.timeout
	c.dones.Store(0)
	if parent.Err() != nil {
		c.finish(acquireParentDone) // as context.WithTimeout would be: done from the start
	}
	return c
}

// expire ends c's wait when it is armed and due by now. The
// compare-and-swap makes it the wait it saw: a release meanwhile cleared
// due, and c's next wait noted its own.
func (c *acquireCtx) expire(now int64) {
	if due := c.due.Load(); due > 0 && now >= due && c.due.CompareAndSwap(due, waitExpired) {
		c.finish(acquireTimedOut)
	}
}

// arm notes when the wait is due, for acquireWaits (a wait already past due
// ends at its next look), and watches the parent when it can be canceled.
// Only the second call of Done arms, so once per Acquire.
func (c *acquireCtx) arm() {
	c.due.Store(c.start + int64(c.timeout))
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

// release ends the Acquire: it disarms the wait and stops the watch on the
// parent when they were armed, and puts c back for reuse when nothing can
// still read it. Something can when the Acquire failed (puddle's
// constructor goes on with the context after the wait gave up), when it
// opened a connection (net.Dialer's fallback racers read the context's
// values after DialContext returned), or when acquireWaits or the parent
// already ended the wait; then c is left to the garbage collector, as a
// context.WithTimeout would be.
func (c *acquireCtx) release(acquired bool) {
	stopped := true
	if c.due.Load() != 0 {
		stopped = c.due.Swap(0) != waitExpired
		if c.stopParent != nil {
			stopped = c.stopParent() && stopped
			c.stopParent = nil
		}
	}
	if acquired && stopped && !c.connected.Load() && c.state.Load() == acquireLive {
		c.parent, c.conns = nil, nil
		c.waits.pool.Put(c)
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
	c := t.waits.start(ctx, conns)
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
