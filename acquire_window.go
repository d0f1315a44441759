package pgkit

import (
	"sync"
	"sync/atomic"
	"time"
)

// waitWindows gives the waits for a connection whose caller's context
// cannot be canceled their AcquireTimeout without a timer each: the waits
// that begin within one window share a deadline, AcquireTimeout after the
// window closes, and one timer ends them all. A wait so ends between
// AcquireTimeout and AcquireTimeout plus a window (a sixteenth of it, at
// most 250ms) after it began.
type waitWindows struct {
	timeout time.Duration // AcquireTimeout
	width   time.Duration
	cur     atomic.Pointer[waitWindow]
	mu      sync.Mutex // opening a window
}

// waitWindow is one window of waits.
type waitWindow struct {
	done     chan struct{} // closed at deadline
	deadline atomic.Int64  // nanotime; until the window closes, the earliest it can be
	open     atomic.Bool   // waits still join it
}

// newWaitWindows is a tracer's, for AcquireTimeout timeout; nil when it
// has none.
func newWaitWindows(timeout time.Duration) *waitWindows {
	if timeout <= 0 {
		return nil
	}
	return &waitWindows{timeout: timeout, width: min(max(timeout/16, time.Millisecond), 250*time.Millisecond)}
}

// current is the window a wait beginning now joins. The window's deadline
// is set when it closes, so that a close later than planned (a late timer)
// still leaves every wait in it its whole AcquireTimeout.
func (w *waitWindows) current() *waitWindow {
	if win := w.cur.Load(); win != nil && win.open.Load() {
		return win
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if win := w.cur.Load(); win != nil && win.open.Load() {
		return win
	}
	now := nanotime()
	win := &waitWindow{done: make(chan struct{})}
	win.deadline.Store(now + int64(w.width+w.timeout))
	win.open.Store(true)
	time.AfterFunc(w.width, func() {
		win.open.Store(false)
		win.deadline.Store(nanotime() + int64(w.timeout))
		time.AfterFunc(w.timeout, func() { close(win.done) })
	})
	w.cur.Store(win)
	return win
}
