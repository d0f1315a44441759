package pgkit

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// clientBound is ClientTimeout on one connection: the statement in flight
// without a deadline of its caller's, and whether the watcher ended it.
//
// Setting a deadline on the socket for every statement, and clearing it
// after, costs two timer updates in the runtime per statement, the largest
// part of what pgkit added to a query. Instead each statement notes when it
// started (a mutex, uncontended), and one goroutine per tracer looks every
// boundPeriod for statements past ClientTimeout and puts a deadline in the
// past on their sockets: the read or write blocked on the server fails at
// once with a timeout, as it would at its own deadline.
type clientBound struct {
	mu      sync.Mutex
	since   int64    // UnixNano the bounded statement started; 0: none in flight
	sock    net.Conn // its socket
	expired bool     // the watcher ended it

	// limit, when not 0, replaces ClientTimeout on this connection until it
	// goes back to the pool: WithStatementTimeout's longer statements.
	limit atomic.Int64
}

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

// start notes a bounded statement on sock.
func (b *clientBound) start(sock net.Conn, now time.Time) {
	b.mu.Lock()
	b.since, b.sock = now.UnixNano(), sock
	b.mu.Unlock()
}

// end ends it and reports whether the watcher had ended it first.
func (b *clientBound) end() (expired bool) {
	b.mu.Lock()
	expired = b.expired
	b.since, b.sock, b.expired = 0, nil, false
	b.mu.Unlock()
	return expired
}

// expire ends the statement when it has run for timeout by now. Under the
// mutex, so that it can only be the statement it saw start: a statement that
// ended meanwhile cleared since, and the next one noted its own.
func (b *clientBound) expire(now time.Time, timeout time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.limit.Load(); l != 0 {
		timeout = time.Duration(l)
	}
	if b.since == 0 || b.expired || now.UnixNano()-b.since < int64(timeout) {
		return
	}
	b.expired = true
	_ = b.sock.SetDeadline(time.Unix(0, 1)) // in the past: the blocked read or write fails now
}

// boundWatcher is the goroutine that expires statements past ClientTimeout
// on a tracer's connections.
type boundWatcher struct {
	stop, done chan struct{}
}

func startBoundWatcher(conns func() []*connState, timeout time.Duration) *boundWatcher {
	w := &boundWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(boundPeriod(timeout))
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case now := <-tick.C:
				for _, cs := range conns() {
					cs.bound.expire(now, timeout)
				}
			}
		}
	}()
	return w
}

func (w *boundWatcher) close() {
	if w != nil {
		close(w.stop)
		<-w.done
	}
}
