package pgkit

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAcquireWaitsEndDueWaits: a wait armed without a caller's deadline ends
// with ErrAcquireTimeout no sooner than AcquireTimeout and within a few of
// the watcher's periods after it; a wait released before it is due is left
// alone, and its context goes back for reuse.
func TestAcquireWaitsEndDueWaits(t *testing.T) {
	t.Parallel()
	const timeout = 60 * time.Millisecond
	w := newAcquireWaits(timeout)
	defer w.close()

	start := time.Now()
	c := w.start(context.Background(), nil)
	c.Done()         // puddle's check
	done := c.Done() // the wait: armed
	require.NoError(t, c.Err())
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("the wait was not ended")
	}
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, timeout)
	require.Less(t, elapsed, timeout+10*acquireCheckPeriod(timeout), "room for a busy machine")
	require.ErrorIs(t, c.Err(), ErrAcquireTimeout)
	require.ErrorIs(t, c.Err(), context.DeadlineExceeded)
	c.release(false)

	early := w.start(context.Background(), nil)
	early.Done()
	early.Done()
	early.release(true)
	require.Zero(t, early.due.Load(), "released: nothing left for the watcher")
	<-time.After(timeout + 3*acquireCheckPeriod(timeout)) // past when it would have been due
	require.Equal(t, acquireLive, early.state.Load(), "a released wait is never ended")
}

// TestAcquireWaitsForgetCollected: the watcher's list holds the contexts
// weakly, so those no one holds (the sync.Pool lets its contexts go at
// garbage collection) are collected and dropped from it.
func TestAcquireWaitsForgetCollected(t *testing.T) {
	w := newAcquireWaits(time.Minute)
	defer w.close()
	kept := w.pool.New().(*acquireCtx)
	for range 100 {
		_ = w.pool.New()
	}
	runtime.GC()
	runtime.GC()
	w.expire(nanotime())
	w.mu.Lock()
	n := len(w.all)
	w.mu.Unlock()
	require.Less(t, n, 10, "the unreachable contexts are forgotten")
	require.GreaterOrEqual(t, n, 1, "a context in use stays")
	runtime.KeepAlive(kept)
}
