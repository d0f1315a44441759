package pgkit

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// clientBound is ClientTimeout on one connection: when the statement in
// flight without a deadline of its caller's started, and whether the
// watcher ended it.
//
// Setting a deadline on the socket for every statement, and clearing it
// after, costs two timer updates in the runtime per statement, the largest
// part of what pgkit added to a query. Instead each statement notes when it
// started (one atomic store), and one goroutine per tracer looks every
// boundPeriod for statements past ClientTimeout and puts a deadline in the
// past on their sockets: the read or write blocked on the server fails at
// once with a timeout, as it would at its own deadline.
type clientBound struct {
	// since is the nanotime the bounded statement started; 0: none in
	// flight; boundExpired: the watcher ended it.
	since atomic.Int64
	sock  net.Conn // the connection's socket, set before the watcher sees it

	// limit, when not 0, replaces ClientTimeout on this connection until it
	// goes back to the pool: WithStatementTimeout's longer statements.
	limit atomic.Int64
}

const boundExpired = -1

// liftClientBound makes ClientTimeout d plus DefaultClientTimeoutMargin on
// conn until it goes back to the pool (TraceRelease resets it), so a
// statement_timeout of d set on the server fires first. A connection pgkit
// does not trace has no ClientTimeout to lift.
func liftClientBound(conn *pgx.Conn, d time.Duration) {
	if conn == nil {
		return // a fake pgx.Tx in a unit test
	}
	if cs, ok := conn.PgConn().CustomData()[connStateKey].(*connState); ok {
		cs.bound.limit.Store(int64(d + DefaultClientTimeoutMargin))
	}
}

// unlift ends liftClientBound's limit; on every release, so it costs one
// load when there is none.
func (b *clientBound) unlift() {
	if b.limit.Load() != 0 {
		b.limit.Store(0)
	}
}

// boundPeriod is how often the watcher looks: an eighth of ClientTimeout,
// within [5ms, 1s], so a statement ends within ClientTimeout plus that.
func boundPeriod(clientTimeout time.Duration) time.Duration {
	return min(max(clientTimeout/8, 5*time.Millisecond), time.Second)
}

// start notes a bounded statement started at now (nanotime).
func (b *clientBound) start(now int64) { b.since.Store(now) }

// end ends it and reports whether the watcher had ended it first.
func (b *clientBound) end() (expired bool) { return b.since.Swap(0) == boundExpired }

// expire ends the statement when it has run for timeout by now. The
// compare-and-swap makes it the statement it saw: one that ended meanwhile
// cleared since, and the next one noted its own. The statement's end then
// closes the socket, so a deadline set after it ended changes nothing.
func (b *clientBound) expire(now int64, timeout time.Duration) {
	if l := b.limit.Load(); l != 0 {
		timeout = time.Duration(l)
	}
	since := b.since.Load()
	if since <= 0 || now-since < int64(timeout) || !b.since.CompareAndSwap(since, boundExpired) {
		return
	}
	_ = b.sock.SetDeadline(time.Unix(0, 1)) // in the past: the blocked read or write fails now
}

// startBoundWatcher starts the goroutine that expires statements past
// ClientTimeout on a tracer's connections.
func startBoundWatcher(conns func() []*connState, timeout time.Duration) *ticking {
	return startTicking(boundPeriod(timeout), func(now int64) {
		for _, cs := range conns() {
			cs.bound.expire(now, timeout)
		}
	})
}
