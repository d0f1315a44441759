package pgkit

import (
	"sync"
	"sync/atomic"
	"time"
)

// observer is the one seam of pgkit's instrumentation. The tracer and the
// features report to it (a checkout, a release, a statement, a connect, a
// transaction, a leak, a replan), each with a few atomic adds; everything
// that reads (PoolStats, Health, the dashboard, the Prometheus adapter)
// takes a snapshot. It knows nothing of Prometheus or HTTP, and it counts
// whether or not a Registerer was given, so the dashboard works without one.
//
// A DB has one observer per role: its primary pool's, and its replicas'.
type observer struct {
	names *nameRegistry

	unknownWaits    atomic.Int64 // Acquires done whose wait is unknown
	acquireTimeouts atomic.Int64
	leaked          atomic.Int64 // connections held past LeakThreshold now
	leaks           atomic.Uint64

	acquire histogram // seconds: the wait for a connection, successful or not; its extra: the Acquires begun
	hold    histogram // seconds: acquire to release
	connect [2]histogram

	replans    [numReplanCodes]atomic.Uint64
	tx         [numTxOutcomes]atomic.Uint64
	txRetries  [numRetryReasons]atomic.Uint64
	txDuration histogram
	txAttempts histogram

	// The primary's server: the address the primary pool's latest new
	// connection to a non-standby reached, and how often it changed.
	primaryAddr atomic.Pointer[string]
	failovers   atomic.Uint64
}

// primaryAt records that a new connection of the primary's pool reached a
// primary at addr, and returns the address before when it moved there.
func (o *observer) primaryAt(addr string) (was string, moved bool) {
	for {
		old := o.primaryAddr.Load()
		if old != nil && *old == addr {
			return "", false
		}
		if o.primaryAddr.CompareAndSwap(old, &addr) {
			if old == nil {
				return "", false
			}
			o.failovers.Add(1)
			return *old, true
		}
	}
}

func newObserver(maxNames int, overflow func(first string)) *observer {
	o := &observer{}
	for _, h := range []*histogram{&o.acquire, &o.connect[0], &o.connect[1], &o.txDuration} {
		h.init(latencyBuckets, time.Second)
	}
	o.hold.init(holdBuckets, time.Second)
	o.txAttempts.init(attemptBuckets, 1)
	o.names = newNameRegistry(maxNames, overflow)
	return o
}

// Buckets of pgkit's latency histograms, in seconds: from 0.5ms (a primary-key
// lookup on a warm server) to 10s (past any sane statement_timeout for a
// request).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Buckets for how long a connection is held, acquire to release: requests
// hold one for milliseconds, a leak for minutes.
var holdBuckets = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300}

// Buckets for the attempts of one InTx call.
var attemptBuckets = []float64{1, 2, 3, 4, 5, 7, 10}

// acquireDone records one Acquire's wait (negative: unknown); timedOut
// when AcquireTimeout ended it.
func (o *observer) acquireDone(wait time.Duration, timedOut bool) {
	if wait >= 0 {
		o.acquire.observe(int64(wait), 0)
	} else {
		o.unknownWaits.Add(1)
	}
	if timedOut {
		o.acquireTimeouts.Add(1)
	}
}

// pool is the observer's part of PoolStats: callers waiting for a
// connection now (the Acquires begun and not done: one add per Acquire
// instead of two), and the waits AcquireTimeout ended.
func (o *observer) pool() (waiting, acquireTimeouts int64) {
	done := int64(o.acquire.count()) + o.unknownWaits.Load() // first: an Acquire begins before it is done
	return max(int64(o.acquire.extra())-done, 0), o.acquireTimeouts.Load()
}

func (o *observer) released(held time.Duration) { o.hold.observe(int64(held), 0) }

func (o *observer) connected(d time.Duration, failed bool) {
	i := 0
	if failed {
		i = 1
	}
	o.connect[i].observe(int64(d), 0)
}

func (o *observer) leakFound()    { o.leaked.Add(1); o.leaks.Add(1) }
func (o *observer) leakReturned() { o.leaked.Add(-1) }

// statement records a finished statement under its name's stats.
func (o *observer) statement(ns *nameStats, op op, out outcome, d time.Duration, rows int64, slow bool, class string) {
	ns.duration[op][out].observe(int64(d), uint64(max(rows, 0)))
	if slow {
		ns.slow[op].Add(1)
	}
	if out == outcomeError {
		ns.failed(class)
	}
}

// The SQLSTATEs of a replan: the "sqlstate" label.
const (
	replanResultType  = iota // 0A000
	replanNoStatement        // 26000
	numReplanCodes
)

func (o *observer) replan(code string) {
	if code == sqlstateResultTypeChanged {
		o.replans[replanResultType].Add(1)
	} else {
		o.replans[replanNoStatement].Add(1)
	}
}

// txOutcome is how an InTx call on a DB ended: the "outcome" label.
type txOutcome uint8

const (
	txCommit txOutcome = iota
	txRollback
	txError
	numTxOutcomes
)

var txOutcomeNames = [numTxOutcomes]string{"commit", "rollback", "error"}

// The reasons WithRetry runs a transaction again: the "reason" label.
var retryReasons = [numRetryReasons]string{"serialization", "deadlock", "connection", "plan"}

const numRetryReasons = 4

func (o *observer) txDone(out txOutcome, attempts int, d time.Duration) {
	o.tx[out].Add(1)
	o.txAttempts.observe(int64(attempts), 0)
	o.txDuration.observe(int64(d), 0)
}

func (o *observer) txRetry(reason string) {
	for i, r := range retryReasons {
		if r == reason {
			o.txRetries[i].Add(1)
			return
		}
	}
}

// nameStats is one query name's counters, by op and outcome.
type nameStats struct {
	name     string
	duration [numOps][numOutcomes]histogram // each keeps its statements' rows as its extra
	slow     [numOps]atomic.Uint64
	nplusone atomic.Uint64          // units of work in which it ran in a loop
	sql      atomic.Pointer[string] // the first SQL run under the name, for DB.ServerView

	mu     sync.Mutex
	errors map[string]uint64 // by SQLSTATE class; failures are rare
}

func newNameStats(name string) *nameStats {
	ns := &nameStats{name: name}
	for o := range ns.duration {
		for out := range ns.duration[o] {
			ns.duration[o][out].init(latencyBuckets, time.Second)
		}
	}
	return ns
}

// rows is the rows the name's statements of op returned or affected.
func (ns *nameStats) rows(op op) uint64 {
	var n uint64
	for out := range ns.duration[op] {
		n += ns.duration[op][out].extra()
	}
	return n
}

func (ns *nameStats) failed(class string) {
	ns.mu.Lock()
	if ns.errors == nil {
		ns.errors = map[string]uint64{}
	}
	ns.errors[class]++
	ns.mu.Unlock()
}

func (ns *nameStats) errorsByClass() map[string]uint64 {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	out := make(map[string]uint64, len(ns.errors))
	for k, v := range ns.errors {
		out[k] = v
	}
	return out
}

// op is what pgx traced: the "op" label.
type op uint8

const (
	opQuery op = iota
	opBatch
	opCopy
	opPrepare
	numOps
)

var opNames = [numOps]string{"query", "batch", "copy", "prepare"}

// outcome is how a statement ended: the "outcome" label.
type outcome uint8

const (
	outcomeOK outcome = iota
	outcomeError
	outcomeCanceled
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "error", "canceled"}

// queriesSnapshot sums every name's statements but prepares (a prepare is
// part of a query, not one of its own): the dashboard's totals.
type queriesSnapshot struct {
	Latency  histSnapshot
	Errors   uint64
	Canceled uint64
}

func (o *observer) queries() queriesSnapshot {
	var q queriesSnapshot
	for _, ns := range o.names.all() {
		for p := range opPrepare {
			for out := range numOutcomes {
				s := ns.duration[p][out].snapshot()
				q.Latency.add(s)
				switch out {
				case outcomeError:
					q.Errors += s.Count
				case outcomeCanceled:
					q.Canceled += s.Count
				}
			}
		}
	}
	if q.Latency.Bounds == nil { // no name yet: cannot happen, "other" is built in
		q.Latency = histSnapshot{Bounds: latencyBuckets, Cumulative: make([]uint64, len(latencyBuckets))}
	}
	return q
}

// writerObs is what a Writer reports beyond the counts its Stats gives:
// the size of each batch, the time to write it, and the retries.
type writerObs struct {
	batch   histogram // items per batch taken off the queue
	flush   histogram // nanoseconds to write a batch, retries and splits included
	retries atomic.Uint64
}

func (o *writerObs) init() {
	o.batch.init(batchBuckets, 1)
	o.flush.init(latencyBuckets, time.Second)
}

// batchBuckets bound a Writer's batch sizes: 1, 4, 16, … 16384.
var batchBuckets = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384}

// sqlNames maps the SQL first run under each name (as statementKey gives
// it) to the name.
func (r *nameRegistry) sqlNames() map[string]string {
	m := map[string]string{}
	for _, ns := range r.all() {
		if sql := ns.sql.Load(); sql != nil {
			m[statementKey(*sql)] = ns.name
		}
	}
	return m
}
