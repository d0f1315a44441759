package pgkit

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Shutdown closes the DB as Close does, but waits only until ctx ends. If
// connections are still checked out then (Rows never closed, an Acquire
// never released, a transaction never ended, or statements still running),
// it closes every socket anyway, so each session ends on the server and
// statements in flight fail at once, and returns a *ShutdownError that
// names what held them: how long each was held and, with
// Config.LeakThreshold set, the stack that acquired it. It returns nil when
// everything was released in time.
//
// A holder that never releases its connection keeps pgxpool's own Close
// waiting in a goroutine until it does; everything of pgkit's is stopped.
func (db *DB) Shutdown(ctx context.Context) error {
	db.closed.Store(true) // before returning, whichever way it returns
	closed := make(chan struct{})
	go func() {
		db.Close()
		close(closed)
	}()
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
	}
	held := db.tracer.held()
	if db.replicas != nil {
		held = append(held, db.replicas.tracer.held()...)
	}
	db.sockets.expire(true)
	db.sockets.closeAll()
	db.tracer.close()
	db.metrics.Unregister()
	if len(held) == 0 {
		// Everything was released as ctx ended: Close is finishing.
		<-closed
		return nil
	}
	return &ShutdownError{Held: held, Err: ctx.Err()}
}

// ShutdownError is returned by DB.Shutdown when connections were still
// checked out as its context ended; it unwraps to the context's error.
type ShutdownError struct {
	// Held describes each connection still checked out.
	Held []HeldConn
	// Err is the context's error.
	Err error
}

// HeldConn is a connection that was checked out when Shutdown gave up.
type HeldConn struct {
	// For is how long it had been checked out.
	For time.Duration
	// AcquiredAt is the stack that checked it out, with Config.LeakThreshold
	// set; empty otherwise.
	AcquiredAt string
}

func (e *ShutdownError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pgkit: shutdown: %d connection(s) still checked out when the context ended; their sockets were closed", len(e.Held))
	for i, h := range e.Held {
		fmt.Fprintf(&b, "\n  [%d] held for %s", i+1, h.For.Round(time.Millisecond))
		if h.AcquiredAt != "" {
			b.WriteString(", acquired at:\n    ")
			b.WriteString(strings.ReplaceAll(strings.TrimSpace(h.AcquiredAt), "\n", "\n    "))
		}
	}
	if len(e.Held) > 0 && e.Held[0].AcquiredAt == "" {
		b.WriteString("\n  (set Config.LeakThreshold to see where each was acquired)")
	}
	return b.String()
}

func (e *ShutdownError) Unwrap() error { return e.Err }

// held describes the connections checked out now.
func (t *tracer) held() []HeldConn {
	now := nanotime()
	var out []HeldConn
	for _, cs := range t.openConns() {
		at := cs.acquiredAt.Load()
		if at == 0 {
			continue
		}
		h := HeldConn{For: time.Duration(now - at)}
		if t.leaks != nil {
			cs.leak.mu.Lock()
			if cs.leak.out {
				h.AcquiredAt = formatStack(cs.leak.stack[:cs.leak.depth])
			}
			cs.leak.mu.Unlock()
		}
		out = append(out, h)
	}
	return out
}
