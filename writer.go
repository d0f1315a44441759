package pgkit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pgkit-dev/pgkit/internal/promset"
)

// ErrWriterClosed is returned by Write after Close.
var ErrWriterClosed = errors.New("pgkit: writer is closed")

// ErrQueueFull is returned by Write with OverflowFail when QueueSize items
// are accepted and not yet written.
var ErrQueueFull = errors.New("pgkit: writer queue is full")

// Writer batches non-critical writes (a chat service's fire-and-forget message
// save) into COPY or INSERT statements from one background goroutine.
//
// The guarantee: every item whose Write returned nil is, by the time Close
// returns, either in the database or handed to OnError. Nothing is dropped
// silently. Write returns as soon as the item is queued; Flush waits until
// everything queued before it is written.
type Writer[T any] struct {
	db  *DB
	cfg WriterConfig[T]
	obs writerObs
	m   *promset.Set // its metrics, when the DB has a Registerer

	mu        sync.Mutex
	queue     []T
	accepted  uint64        // items ever queued
	finished  uint64        // items written or handed to OnError
	failed    uint64        // of finished, those handed to OnError
	ambiguous uint64        // of finished, those handed to OnAmbiguous
	changed   chan struct{} // closed and replaced whenever queue or finished change (Write waits on finished)
	closing   bool
	lastError error

	// abortCtx ends in-flight writes and retries when Close's context ends.
	abortCtx context.Context
	abort    context.CancelFunc

	kick chan struct{}
	done chan struct{}

	// The current run of transient failures (run's goroutine only): since
	// when, its last error, and when the last attempt ended.
	failingSince time.Time
	outageErr    error
	lastAttempt  time.Time
}

// NewWriter starts a writer of items of T (a db-tagged struct, as for
// CopyInsert) into cfg.Table. Close it to flush and stop.
func NewWriter[T any](db *DB, cfg WriterConfig[T]) (*Writer[T], error) {
	if db == nil {
		return nil, errors.New("pgkit: NewWriter: nil *DB")
	}
	if err := cfg.setDefaults(db); err != nil {
		return nil, err
	}
	t, sm, err := rowStruct[T]()
	if err != nil {
		return nil, err
	}
	if _, ok := sm.byColumn[cfg.DedupeKey]; cfg.DedupeKey != "" && !ok {
		return nil, writerConfigError("DedupeKey", fmt.Sprintf("%s has no field tagged db:%q", t, cfg.DedupeKey))
	}
	if err := checkWriterTable[T](db, cfg.Table); err != nil {
		return nil, err
	}
	w := &Writer[T]{db: db, cfg: cfg, changed: make(chan struct{}), kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.abortCtx, w.abort = context.WithCancel(context.Background())
	w.obs.init()
	m, err := registerWriterMetrics(db.cfg.Registerer, db.cfg.Name, cfg.Name, w.Stats, &w.obs)
	if err != nil {
		w.abort()
		return nil, err
	}
	w.m = m
	go w.run()
	return w, nil
}

// Write queues item and returns; it is written within FlushInterval, or
// sooner when a batch fills. With QueueSize items accepted and not yet
// finished (queued or in the batch being written) it waits for one to finish
// (OverflowBlock, honouring ctx) or returns ErrQueueFull (OverflowFail). After Close it
// returns ErrWriterClosed.
func (w *Writer[T]) Write(ctx context.Context, item T) error {
	w.mu.Lock()
	for {
		if w.closing {
			w.mu.Unlock()
			return ErrWriterClosed
		}
		// Items leave the queue when a batch takes them, but they count
		// until their batch is finished; writeBatch signals then.
		if w.accepted-w.finished < uint64(w.cfg.QueueSize) {
			break
		}
		if w.cfg.Overflow == OverflowFail {
			w.mu.Unlock()
			return ErrQueueFull
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
		w.mu.Lock()
	}
	w.queue = append(w.queue, item)
	w.accepted++
	full := len(w.queue) >= w.cfg.BatchSize
	w.mu.Unlock()
	if full {
		w.poke()
	}
	return nil
}

// Flush waits until every item queued before it was written (or handed to
// OnError: then it returns an error saying how many). It honours ctx.
func (w *Writer[T]) Flush(ctx context.Context) error {
	w.mu.Lock()
	target, failedBefore, ambiguousBefore := w.accepted, w.failed, w.ambiguous
	w.mu.Unlock()
	w.poke()
	for {
		w.mu.Lock()
		finished, failed, ambiguous, changed, lastErr := w.finished, w.failed, w.ambiguous, w.changed, w.lastError
		w.mu.Unlock()
		if finished >= target {
			return w.handedOff(failed-failedBefore, ambiguous-ambiguousBefore, lastErr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.done:
			// Close ended the writer; finished is final.
			w.mu.Lock()
			finished = w.finished
			w.mu.Unlock()
			if finished < target {
				return ErrWriterClosed
			}
		case <-changed:
		}
	}
}

// Close stops accepting items, writes what is queued and stops the writer's
// goroutine. If ctx ends first, retrying stops and every unwritten item goes
// to OnError. It returns an error when any item went to OnError since the
// writer started (the last such error). Calling it again waits for the first
// call's end. Its metrics are unregistered when it returns: read Stats for
// the final counts.
func (w *Writer[T]) Close(ctx context.Context) error {
	w.mu.Lock()
	first := !w.closing
	if first {
		w.closing = true
		w.signal()
	}
	w.mu.Unlock()
	if first {
		stop := context.AfterFunc(ctx, w.abort)
		defer stop()
	}
	w.poke()
	<-w.done
	w.abort()
	w.m.Unregister()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.handedOff(w.failed, w.ambiguous, w.lastError)
}

// handedOff is Flush's and Close's error when items went to OnError or
// OnAmbiguous.
func (w *Writer[T]) handedOff(failed, ambiguous uint64, last error) error {
	switch {
	case failed > 0 && ambiguous > 0:
		return fmt.Errorf("pgkit: writer %s: %d items went to OnError and %d to OnAmbiguous: %w", w.cfg.Name, failed, ambiguous, last)
	case failed > 0:
		return fmt.Errorf("pgkit: writer %s: %d items went to OnError: %w", w.cfg.Name, failed, last)
	case ambiguous > 0:
		return fmt.Errorf("pgkit: writer %s: %d items went to OnAmbiguous: %w", w.cfg.Name, ambiguous, last)
	}
	return nil
}

// WriterStats is a snapshot of a Writer, for dashboards.
type WriterStats struct {
	Name     string `json:"name"`
	Queued   int    `json:"queued"`   // items waiting, not yet in a batch
	Capacity int    `json:"capacity"` // QueueSize
	Accepted uint64 `json:"accepted"` // items Write accepted
	Written  uint64 `json:"written"`  // items in the database
	Failed   uint64 `json:"failed"`   // items handed to OnError
	// Ambiguous counts items handed to OnAmbiguous: in the table or not.
	Ambiguous uint64 `json:"ambiguous"`
}

// Stats returns the writer's counts now.
func (w *Writer[T]) Stats() WriterStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WriterStats{Name: w.cfg.Name, Queued: len(w.queue), Capacity: w.cfg.QueueSize,
		Accepted: w.accepted, Written: w.finished - w.failed - w.ambiguous, Failed: w.failed, Ambiguous: w.ambiguous}
}

func (w *Writer[T]) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// signal wakes whoever waits on a change (call with mu held).
func (w *Writer[T]) signal() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// run is the writer's goroutine: it takes batches off the queue when one is
// full, FlushInterval has passed, or someone flushes or closes, and writes
// them.
func (w *Writer[T]) run() {
	defer close(w.done)
	tick := time.NewTicker(w.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-w.kick:
		case <-tick.C:
		}
		for {
			w.mu.Lock()
			n := min(len(w.queue), w.cfg.BatchSize)
			closing := w.closing
			if n == 0 {
				w.mu.Unlock()
				if closing {
					return
				}
				break
			}
			batch := make([]T, n)
			copy(batch, w.queue)
			w.queue = w.queue[n:]
			if len(w.queue) == 0 {
				w.queue = nil // let the backing array go
			}
			w.signal()
			w.mu.Unlock()

			w.writeBatch(batch)
		}
	}
}

// writeBatch writes one batch: retried while failures are transient, split
// to isolate the items the database refuses. Every item of it ends written,
// handed to OnError, or (its COMMIT's answer lost and not settled in time)
// handed to OnAmbiguous.
func (w *Writer[T]) writeBatch(batch []T) {
	start := time.Now()
	w.obs.batch.observe(int64(len(batch)), 0)
	var r writeResult
	w.writeSplit(batch, &r)
	w.obs.flush.observe(int64(time.Since(start)), 0)
	w.mu.Lock()
	w.finished += uint64(len(batch))
	w.signal()
	w.mu.Unlock()
}

// writeResult counts a batch's items by outcome.
type writeResult struct{ written, failed, ambiguous int }

// writeSplit writes items, halving the batch around permanent errors.
func (w *Writer[T]) writeSplit(items []T, r *writeResult) {
	err, unknown := w.writeRetrying(items)
	switch {
	case err == nil:
		r.written += len(items)
		return
	case unknown:
		r.ambiguous += len(items)
		w.handOff(items, err, true)
		return
	case transient(err) || len(items) == 1 || w.abortCtx.Err() != nil:
		r.failed += len(items)
		w.handOff(items, err, false)
		return
	}
	half := len(items) / 2
	w.writeSplit(items[:half], r)
	w.writeSplit(items[half:], r)
}

// writeRetrying writes items in one transaction, retrying transient
// failures with backoff until the failures have lasted RetryFor (an outage,
// counted across batches, so that batches queued behind it fail fast) or
// Close's context ends. Each attempt has a deadline at the end of that
// budget, so a server that stops answering cannot hold it longer. A COMMIT
// whose answer was lost is settled with the server (RetryFor more at most):
// committed is success, aborted is retried; unknown reports the error with
// unknown set, and the items must not be called unwritten. With DedupeKey
// the write is idempotent: an unknown outcome is simply written again, and
// is unknown only if retrying ends before a write succeeds.
func (w *Writer[T]) writeRetrying(items []T) (err error, unknown bool) {
	for attempt := 1; ; attempt++ {
		start := time.Now()
		deadline := start.Add(w.cfg.RetryFor)
		if !w.failingSince.IsZero() {
			deadline = w.failingSince.Add(w.cfg.RetryFor)
		}
		if !deadline.After(start) {
			// The outage has outlived RetryFor: one attempt per
			// writerProbeEvery tries the server; the batches between fail at
			// once rather than each waiting on a server that may not answer.
			if start.Sub(w.lastAttempt) < writerProbeEvery {
				return fmt.Errorf("pgkit: writer %s: the database has been failing for %s: %w",
					w.cfg.Name, start.Sub(w.failingSince).Round(time.Millisecond), w.outageErr), false
			}
			deadline = start.Add(min(w.cfg.RetryFor, writerProbe))
		}
		ctx, cancel := context.WithDeadline(w.abortCtx, deadline)
		pending, err := w.writeOnce(ctx, items)
		cancel()
		w.lastAttempt = time.Now()
		switch {
		case pending != nil && pending.xid == "":
			// DedupeKey: the write is idempotent, so running it again
			// settles it; only giving up leaves the outcome unknown.
			unknown = true
		case pending != nil:
			committed, known := w.settle(pending, time.Now().Add(w.cfg.RetryFor))
			switch {
			case !known:
				return &AmbiguousCommitError{Err: pending.err}, true
			case committed:
				err = nil
			}
			// aborted: nothing was written; retried like any transient failure
		}
		if err == nil || !transient(err) {
			w.failingSince = time.Time{}
			return err, unknown && err != nil
		}
		if w.failingSince.IsZero() {
			w.failingSince = start
		}
		w.outageErr = err
		if time.Since(w.failingSince) >= w.cfg.RetryFor || w.abortCtx.Err() != nil {
			return err, unknown
		}
		w.obs.retries.Add(1)
		sleepCtx(w.abortCtx, rand.N(min(10*time.Millisecond<<min(attempt, 10), 2*time.Second))+time.Millisecond)
	}
}

// handOff gives items up: to OnError (unwritten), or to OnAmbiguous (their
// COMMIT's outcome is unknown).
func (w *Writer[T]) handOff(items []T, err error, ambiguous bool) {
	w.mu.Lock()
	if ambiguous {
		w.ambiguous += uint64(len(items))
	} else {
		w.failed += uint64(len(items))
	}
	w.lastError = err
	w.mu.Unlock()
	if ambiguous {
		w.cfg.OnAmbiguous(items, err)
	} else {
		w.cfg.OnError(items, err)
	}
}
