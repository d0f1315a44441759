package pgkit

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Buckets of pgkit's latency histograms, in seconds: from 0.5ms (a primary-key
// lookup on a warm server) to 10s (past any sane statement_timeout for a
// request).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Buckets for how long a connection is held, acquire to release: requests
// hold one for milliseconds, a leak for minutes.
var holdBuckets = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300}

// metrics is every Prometheus metric pgkit exports for the pools of one role,
// registered on Config.Registerer with const labels pool=<Config.Name> and
// role (primary, or replica for all of Config.ReplicaURLs together). A DB
// without a Registerer has none (t.m == nil) and pays nothing for them.
type metrics struct {
	queryDuration *prometheus.HistogramVec // name, op, outcome
	queryErrors   *prometheus.CounterVec   // name, sqlstate_class
	slowQueries   *prometheus.CounterVec   // name, op
	rows          *prometheus.CounterVec   // name, op
	replans       [2]prometheus.Counter    // sqlstate: 0A000, 26000

	acquireDuration prometheus.Histogram
	acquireTimeouts prometheus.Counter
	holdDuration    prometheus.Histogram
	connectDuration *prometheus.HistogramVec // outcome
	leaks           prometheus.Counter
	pool            *poolCollector

	txTotal    [numTxOutcomes]prometheus.Counter
	txRetries  map[string]prometheus.Counter // by reason
	txDuration prometheus.Histogram
	txAttempts prometheus.Histogram

	collectorSet // for Unregister at Close
}

// The "role" label: which servers a pool's connections go to.
const (
	rolePrimary = "primary"
	roleReplica = "replica"
)

func newMetrics(reg prometheus.Registerer, pool, role string, t *tracer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pool": pool, "role": role}, reg)
	m := &metrics{
		queryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgkit_query_duration_seconds",
			Help:    "Time from sending a statement (query, batch, copy or prepare) to its end, by query name, op and outcome (ok, error, canceled).",
			Buckets: latencyBuckets,
		}, []string{"name", "op", "outcome"}),
		queryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgkit_query_errors_total",
			Help: "Statements that failed, by query name and SQLSTATE class (the code's first two characters; 'client' for errors without one).",
		}, []string{"name", "sqlstate_class"}),
		slowQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgkit_slow_queries_total",
			Help: "Statements slower than Config.SlowQueryThreshold, by query name and op.",
		}, []string{"name", "op"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgkit_query_rows_total",
			Help: "Rows affected or returned as reported by the command tag, by query name and op.",
		}, []string{"name", "op"}),
		acquireDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgkit_pool_acquire_duration_seconds",
			Help:    "Time callers waited for a pool connection, successful or not.",
			Buckets: latencyBuckets,
		}),
		acquireTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgkit_pool_acquire_timeouts_total",
			Help: "Waits for a connection that ended at Config.AcquireTimeout.",
		}),
		holdDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgkit_pool_connection_hold_seconds",
			Help:    "Time a connection stayed checked out, acquire to release.",
			Buckets: holdBuckets,
		}),
		connectDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgkit_pool_connect_duration_seconds",
			Help:    "Time to open a new server connection, by outcome (ok, error).",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		leaks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgkit_pool_leaks_total",
			Help: "Connections held longer than Config.LeakThreshold.",
		}),
		txDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgkit_tx_duration_seconds",
			Help:    "Time of InTx on a DB, from the first BEGIN to the end of the last attempt.",
			Buckets: latencyBuckets,
		}),
		txAttempts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgkit_tx_attempts",
			Help:    "Attempts an InTx call made (1 unless WithRetry retried).",
			Buckets: []float64{1, 2, 3, 4, 5, 7, 10},
		}),
		pool: &poolCollector{},
	}
	txTotal := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgkit_tx_total",
		Help: "InTx calls on a DB by outcome: commit, rollback (fn returned an error or panicked) or error (BEGIN or COMMIT failed).",
	}, []string{"outcome"})
	for o := range numTxOutcomes {
		m.txTotal[o] = txTotal.WithLabelValues(txOutcomeNames[o])
	}
	replans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgkit_query_replans_total",
		Help: "Statements outside a transaction run a second time, on the same connection, because the server refused the connection's cached prepared statement before running it, by SQLSTATE: 0A000 (cached plan must not change result type: its result columns changed, as after ALTER TABLE) or 26000 (prepared statement does not exist).",
	}, []string{"sqlstate"})
	m.replans[0] = replans.WithLabelValues(sqlstateResultTypeChanged)
	m.replans[1] = replans.WithLabelValues(sqlstateNoStatement)
	txRetries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgkit_tx_retries_total",
		Help: "Transactions WithRetry ran again, by reason: serialization (40001), deadlock (40P01), connection (lost before COMMIT), plan (a cached prepared statement refused: 0A000 cached plan must not change result type, or 26000).",
	}, []string{"reason"})
	m.txRetries = map[string]prometheus.Counter{}
	for _, r := range []string{"serialization", "deadlock", "connection", "plan"} {
		m.txRetries[r] = txRetries.WithLabelValues(r)
	}
	err := m.register(reg,
		m.queryDuration, m.queryErrors, m.slowQueries, m.rows, replans,
		m.acquireDuration, m.acquireTimeouts, m.holdDuration, m.connectDuration, m.leaks,
		txTotal, txRetries, m.txDuration, m.txAttempts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pgkit_pool_waiting",
			Help: "Callers waiting for a pool connection right now.",
		}, func() float64 { return float64(t.waiting.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pgkit_pool_leaked_connections",
			Help: "Connections checked out for longer than Config.LeakThreshold right now.",
		}, func() float64 { return float64(t.leaked.Load()) }),
		m.pool,
	)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil, &ConfigError{Field: "Name", Reason: fmt.Sprintf(
			"metrics of a pool named %q are already registered on this Registerer; give each DB its own Name", pool)}
	}
	if err != nil {
		return nil, fmt.Errorf("pgkit: registering metrics: %w", err)
	}
	return m, nil
}

// unregister removes the metrics, so a DB of the same Name can be opened
// again after Close.
func (m *metrics) unregister() {
	if m != nil {
		m.collectorSet.unregister()
	}
}

// collectorSet is collectors registered together on one Registerer and
// unregistered together when their owner closes (a DB, a Writer, a Cache),
// so that its name can be used again.
type collectorSet struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector
}

// register registers every collector, or none: on the first error it
// unregisters those already registered and returns the error.
func (s *collectorSet) register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	s.reg, s.collectors = reg, cs
	return nil
}

func (s *collectorSet) unregister() {
	for _, c := range s.collectors {
		s.reg.Unregister(c)
	}
}

// poolCollector reads pgxpool's statistics at scrape time, like
// client_golang's collectors.NewDBStatsCollector does for database/sql, and
// asks its source whether the database is up (DB.Health for the primary).
type poolCollector struct {
	src atomic.Pointer[poolSource] // set by Open once the pools exist
}

// poolSource is what a poolCollector reads: the pools of its role, summed,
// and whether the role's servers are up.
type poolSource struct {
	pools func() []*pgxpool.Pool
	up    func() bool
}

var (
	descMaxConns     = poolDesc("max_connections", "MaxConns: the most connections the pool opens.")
	descTotalConns   = poolDesc("total_connections", "Open connections: idle, acquired and being opened.")
	descIdleConns    = poolDesc("idle_connections", "Connections ready in the pool.")
	descAcquired     = poolDesc("acquired_connections", "Connections checked out.")
	descConstructing = poolDesc("constructing_connections", "Connections being opened.")
	descUtilization  = poolDesc("utilization_ratio", "Acquired connections divided by MaxConns.")
	descAcquires     = poolDesc("acquires_total", "Successful connection checkouts.")
	descEmpty        = poolDesc("empty_acquires_total", "Checkouts that had to wait because no connection was idle.")
	descCanceled     = poolDesc("canceled_acquires_total", "Checkouts abandoned by their context (AcquireTimeout included).")
	descAcquireWait  = poolDesc("acquire_wait_seconds_total", "Total time spent in successful checkouts.")
	descEmptyWait    = poolDesc("empty_acquire_wait_seconds_total", "Total time spent in checkouts that had to wait.")
	descNewConns     = poolDesc("new_connections_total", "Connections opened.")
	descClosed       = prometheus.NewDesc("pgkit_pool_closed_connections_total",
		"Connections closed by the pool, by reason (lifetime: MaxConnLifetime; idle: MaxConnIdleTime).", []string{"reason"}, nil)
	descUp = prometheus.NewDesc("pgkit_database_up",
		"Primary: 1 when DB.Health, run at scrape time within Config.HealthTimeout, finds the database up or degraded, 0 when down; the check takes a connection like any caller. Replica: 1 when at least one replica passed its latest check.", nil, nil)
)

func poolDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("pgkit_pool_"+name, help, nil, nil)
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMaxConns, descTotalConns, descIdleConns, descAcquired, descConstructing,
		descUtilization, descAcquires, descEmpty, descCanceled, descAcquireWait, descEmptyWait, descNewConns, descClosed, descUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil { // registered during Open, before the pools exist
		return
	}
	var s poolStat
	for _, p := range src.pools() {
		s.add(p.Stat())
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descMaxConns, float64(s.max))
	gauge(descTotalConns, float64(s.total))
	gauge(descIdleConns, float64(s.idle))
	gauge(descAcquired, float64(s.acquired))
	gauge(descConstructing, float64(s.constructing))
	gauge(descUtilization, float64(s.acquired)/float64(max(s.max, 1)))
	counter(descAcquires, float64(s.acquires))
	counter(descEmpty, float64(s.empty))
	counter(descCanceled, float64(s.canceled))
	counter(descAcquireWait, s.acquireWait.Seconds())
	counter(descEmptyWait, s.emptyWait.Seconds())
	counter(descNewConns, float64(s.newConns))
	counter(descClosed, float64(s.closedLifetime), "lifetime")
	counter(descClosed, float64(s.closedIdle), "idle")
	up := 0.0
	if src.up() {
		up = 1
	}
	gauge(descUp, up)
}

// poolStat is pgxpool.Stat summed over the pools of a role.
type poolStat struct {
	max, total, idle, acquired, constructing                        int32
	acquires, empty, canceled, newConns, closedLifetime, closedIdle int64
	acquireWait, emptyWait                                          time.Duration
}

func (s *poolStat) add(p *pgxpool.Stat) {
	s.max += p.MaxConns()
	s.total += p.TotalConns()
	s.idle += p.IdleConns()
	s.acquired += p.AcquiredConns()
	s.constructing += p.ConstructingConns()
	s.acquires += p.AcquireCount()
	s.empty += p.EmptyAcquireCount()
	s.canceled += p.CanceledAcquireCount()
	s.newConns += p.NewConnsCount()
	s.closedLifetime += p.MaxLifetimeDestroyCount()
	s.closedIdle += p.MaxIdleDestroyCount()
	s.acquireWait += p.AcquireDuration()
	s.emptyWait += p.EmptyAcquireWaitTime()
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

// nameMetrics holds one query name's metric children, bound on first use
// (so a name has series only for the ops and outcomes it had) and then read
// without locking or allocating.
type nameMetrics struct {
	name     string
	m        *metrics
	duration [numOps][numOutcomes]atomic.Pointer[observerRef]
	rows     [numOps]atomic.Pointer[counterRef]
}

type observerRef struct{ prometheus.Observer }
type counterRef struct{ prometheus.Counter }

func newNameMetrics(m *metrics, name string) *nameMetrics {
	return &nameMetrics{name: name, m: m}
}

func (nm *nameMetrics) observe(o op, out outcome, d time.Duration, rows int64) {
	if nm.m == nil {
		return
	}
	ref := nm.duration[o][out].Load()
	if ref == nil {
		ref = &observerRef{nm.m.queryDuration.WithLabelValues(nm.name, opNames[o], outcomeNames[out])}
		nm.duration[o][out].Store(ref)
	}
	ref.Observe(d.Seconds())
	if rows > 0 {
		c := nm.rows[o].Load()
		if c == nil {
			c = &counterRef{nm.m.rows.WithLabelValues(nm.name, opNames[o])}
			nm.rows[o].Store(c)
		}
		c.Add(float64(rows))
	}
}

// slow and failed are rare paths: binding the child on each call is fine.
func (nm *nameMetrics) slow(o op) {
	if nm.m != nil {
		nm.m.slowQueries.WithLabelValues(nm.name, opNames[o]).Inc()
	}
}

func (nm *nameMetrics) failed(class string) {
	if nm.m != nil {
		nm.m.queryErrors.WithLabelValues(nm.name, class).Inc()
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

func (m *metrics) txDone(o txOutcome, attempts int, d time.Duration) {
	if m == nil {
		return
	}
	m.txTotal[o].Inc()
	m.txAttempts.Observe(float64(attempts))
	m.txDuration.Observe(d.Seconds())
}

// replan counts a statement run again after the server refused its cached
// prepared statement with code (replanCode).
func (m *metrics) replan(code string) {
	if m == nil {
		return
	}
	if code == sqlstateResultTypeChanged {
		m.replans[0].Inc()
	} else {
		m.replans[1].Inc()
	}
}

func (m *metrics) txRetry(reason string) {
	if m != nil {
		m.txRetries[reason].Inc()
	}
}
