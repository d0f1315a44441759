package pgkit

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit/internal/promset"
	"github.com/prometheus/client_golang/prometheus"
)

// promCollector is the Prometheus adapter over one role's observer: at
// scrape time it reads the observer's counters, and the pools' pgxpool.Stat,
// and writes them as metrics with const labels pool=<Config.Name> and role
// (primary, or replica for all of Config.ReplicaURLs together). Nothing is
// written to Prometheus on the statement path.
type promCollector struct {
	obs   *observer
	pools func() []*pgxpool.Pool // the role's pools, summed
	up    func() bool            // whether the role's servers are up
}

// registerMetrics registers obs and the pools on reg (nothing when reg is
// nil); the returned set unregisters them at Close.
func registerMetrics(reg prometheus.Registerer, pool, role string, obs *observer, pools func() []*pgxpool.Pool, up func() bool) (*promset.Set, error) {
	var set promset.Set
	if reg == nil {
		return &set, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pool": pool, "role": role}, reg)
	err := set.Register(reg, &promCollector{obs: obs, pools: pools, up: up})
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil, &ConfigError{Struct: "Config", Field: "Name", Reason: fmt.Sprintf(
			"metrics of a pool named %q are already registered on this Registerer; give each DB its own Name", pool)}
	}
	if err != nil {
		return nil, fmt.Errorf("pgkit: registering metrics: %w", err)
	}
	return &set, nil
}

var (
	descQueryDuration = prometheus.NewDesc("pgkit_query_duration_seconds",
		"Time from sending a statement (query, batch, copy or prepare) to its end, by query name, op and outcome (ok, error, canceled).",
		[]string{"name", "op", "outcome"}, nil)
	descQueryErrors = prometheus.NewDesc("pgkit_query_errors_total",
		"Statements that failed, by query name and SQLSTATE class (the code's first two characters; 'client' for errors without one).",
		[]string{"name", "sqlstate_class"}, nil)
	descSlowQueries = prometheus.NewDesc("pgkit_slow_queries_total",
		"Statements slower than Config.SlowQueryThreshold, by query name and op.", []string{"name", "op"}, nil)
	descNPlusOne = prometheus.NewDesc("pgkit_nplusone_total",
		"Units of work (requests) in which one statement ran more than Config.NPlusOneThreshold times: a query in a loop, by query name.", []string{"name"}, nil)
	descRows = prometheus.NewDesc("pgkit_query_rows_total",
		"Rows affected or returned as reported by the command tag, by query name and op.", []string{"name", "op"}, nil)
	descReplans = prometheus.NewDesc("pgkit_query_replans_total",
		"Statements outside a transaction run a second time, on the same connection, because the server refused the connection's cached prepared statement before running it, by SQLSTATE: 0A000 (cached plan must not change result type: its result columns changed, as after ALTER TABLE) or 26000 (prepared statement does not exist).",
		[]string{"sqlstate"}, nil)

	descAcquireDuration = prometheus.NewDesc("pgkit_pool_acquire_duration_seconds",
		"Time callers waited for a pool connection, successful or not.", nil, nil)
	descAcquireTimeouts = prometheus.NewDesc("pgkit_pool_acquire_timeouts_total",
		"Waits for a connection that ended at Config.AcquireTimeout.", nil, nil)
	descHoldDuration = prometheus.NewDesc("pgkit_pool_connection_hold_seconds",
		"Time a connection stayed checked out, acquire to release.", nil, nil)
	descConnectDuration = prometheus.NewDesc("pgkit_pool_connect_duration_seconds",
		"Time to open a new server connection, by outcome (ok, error).", []string{"outcome"}, nil)
	descLeaks = prometheus.NewDesc("pgkit_pool_leaks_total",
		"Connections held longer than Config.LeakThreshold.", nil, nil)
	descWaiting = prometheus.NewDesc("pgkit_pool_waiting",
		"Callers waiting for a pool connection right now.", nil, nil)
	descLeaked = prometheus.NewDesc("pgkit_pool_leaked_connections",
		"Connections checked out for longer than Config.LeakThreshold right now.", nil, nil)

	descTxTotal = prometheus.NewDesc("pgkit_tx_total",
		"InTx calls on a DB by outcome: commit, rollback (fn returned an error or panicked) or error (BEGIN or COMMIT failed).",
		[]string{"outcome"}, nil)
	descTxRetries = prometheus.NewDesc("pgkit_tx_retries_total",
		"Transactions WithRetry ran again, by reason: serialization (40001), deadlock (40P01), connection (lost before COMMIT), plan (a cached prepared statement refused: 0A000 cached plan must not change result type, or 26000).",
		[]string{"reason"}, nil)
	descTxDuration = prometheus.NewDesc("pgkit_tx_duration_seconds",
		"Time of InTx on a DB, from the first BEGIN to the end of the last attempt.", nil, nil)
	descTxAttempts = prometheus.NewDesc("pgkit_tx_attempts",
		"Attempts an InTx call made (1 unless WithRetry retried).", nil, nil)

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
	descFailovers = prometheus.NewDesc("pgkit_failovers_total",
		"Times the primary's new connections reached a primary at another address than before: a failover or switchover seen through a multi-host URL.", nil, nil)
	descPrimary = prometheus.NewDesc("pgkit_primary_info",
		"1, labelled with the address (host:port) of the primary the primary pool's latest new connection reached.", []string{"addr"}, nil)
	descUp = prometheus.NewDesc("pgkit_database_up",
		"Primary: 1 when DB.Health, run at scrape time within Config.HealthTimeout, finds the database up or degraded, 0 when down; the check takes a connection like any caller. Replica: 1 when at least one replica passed its latest check.", nil, nil)

	promDescs = []*prometheus.Desc{descQueryDuration, descQueryErrors, descSlowQueries, descRows, descReplans, descNPlusOne,
		descAcquireDuration, descAcquireTimeouts, descHoldDuration, descConnectDuration, descLeaks, descWaiting, descLeaked,
		descTxTotal, descTxRetries, descTxDuration, descTxAttempts,
		descMaxConns, descTotalConns, descIdleConns, descAcquired, descConstructing, descUtilization, descAcquires,
		descEmpty, descCanceled, descAcquireWait, descEmptyWait, descNewConns, descClosed, descUp, descFailovers, descPrimary}
)

func poolDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("pgkit_pool_"+name, help, nil, nil)
}

// Describe implements prometheus.Collector.
func (c *promCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range promDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *promCollector) Collect(ch chan<- prometheus.Metric) {
	o := c.obs
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	hist := func(d *prometheus.Desc, h *histogram, labels ...string) {
		ch <- constHistogram(d, h.snapshot(), labels...)
	}

	// A name has series only for the ops and outcomes it had.
	for _, ns := range o.names.all() {
		for p := range numOps {
			for out := range numOutcomes {
				if s := ns.duration[p][out].snapshot(); s.Count > 0 {
					ch <- constHistogram(descQueryDuration, s, ns.name, opNames[p], outcomeNames[out])
				}
			}
			if n := ns.rows(p); n > 0 {
				counter(descRows, float64(n), ns.name, opNames[p])
			}
			if n := ns.slow[p].Load(); n > 0 {
				counter(descSlowQueries, float64(n), ns.name, opNames[p])
			}
		}
		if n := ns.nplusone.Load(); n > 0 {
			counter(descNPlusOne, float64(n), ns.name)
		}
		for class, n := range ns.errorsByClass() {
			counter(descQueryErrors, float64(n), ns.name, class)
		}
	}
	counter(descReplans, float64(o.replans[replanResultType].Load()), sqlstateResultTypeChanged)
	counter(descReplans, float64(o.replans[replanNoStatement].Load()), sqlstateNoStatement)

	hist(descAcquireDuration, &o.acquire)
	counter(descAcquireTimeouts, float64(o.acquireTimeouts.Load()))
	hist(descHoldDuration, &o.hold)
	hist(descConnectDuration, &o.connect[0], "ok")
	hist(descConnectDuration, &o.connect[1], "error")
	counter(descLeaks, float64(o.leaks.Load()))
	waiting, _ := o.pool()
	gauge(descWaiting, float64(waiting))
	gauge(descLeaked, float64(o.leaked.Load()))

	for out := range numTxOutcomes {
		counter(descTxTotal, float64(o.tx[out].Load()), txOutcomeNames[out])
	}
	for i, r := range retryReasons {
		counter(descTxRetries, float64(o.txRetries[i].Load()), r)
	}
	hist(descTxDuration, &o.txDuration)
	hist(descTxAttempts, &o.txAttempts)

	s := statOf(c.pools()...)
	gauge(descMaxConns, float64(s.Max))
	gauge(descTotalConns, float64(s.Size))
	gauge(descIdleConns, float64(s.Idle))
	gauge(descAcquired, float64(s.Acquired))
	gauge(descConstructing, float64(s.Constructing))
	gauge(descUtilization, s.Utilization)
	counter(descAcquires, float64(s.AcquireCount))
	counter(descEmpty, float64(s.EmptyAcquireCount))
	counter(descCanceled, float64(s.CanceledAcquireCount))
	counter(descAcquireWait, s.AcquireWait.Seconds())
	counter(descEmptyWait, s.EmptyAcquireWait.Seconds())
	counter(descNewConns, float64(s.NewConns))
	counter(descClosed, float64(s.ClosedForLifetime), "lifetime")
	counter(descClosed, float64(s.ClosedForIdle), "idle")
	if addr := o.primaryAddr.Load(); addr != nil { // the primary's role only
		counter(descFailovers, float64(o.failovers.Load()))
		ch <- prometheus.MustNewConstMetric(descPrimary, prometheus.GaugeValue, 1, *addr)
	}
	up := 0.0
	if c.up() {
		up = 1
	}
	gauge(descUp, up)
}

var (
	descWriterItems = prometheus.NewDesc("pgkit_writer_items_total",
		"Items the writer finished, by outcome: written, failed (handed to OnError) or ambiguous (handed to OnAmbiguous).",
		[]string{"outcome"}, nil)
	descWriterFlush = prometheus.NewDesc("pgkit_writer_flush_duration_seconds",
		"Time to write one batch, retries and splits included.", nil, nil)
	descWriterBatch = prometheus.NewDesc("pgkit_writer_batch_size",
		"Items per batch taken off the queue.", nil, nil)
	descWriterRetries = prometheus.NewDesc("pgkit_writer_retries_total",
		"Batch writes retried after a transient failure.", nil, nil)
	descWriterDepth = prometheus.NewDesc("pgkit_writer_queue_depth",
		"Items queued and not yet taken into a batch.", nil, nil)
	descWriterCapacity = prometheus.NewDesc("pgkit_writer_queue_capacity",
		"WriterConfig.QueueSize: the most items accepted and not yet written (queued or in the batch being written).", nil, nil)
)

// writerCollector is the Prometheus adapter over one Writer: its Stats and
// what it reported to its writerObs, read at scrape time, with const labels
// pool and writer.
type writerCollector struct {
	stats func() WriterStats
	obs   *writerObs
}

// registerWriterMetrics registers a Writer's metrics on reg (nothing when
// reg is nil); the returned set unregisters them at the Writer's Close.
func registerWriterMetrics(reg prometheus.Registerer, pool, name string, stats func() WriterStats, obs *writerObs) (*promset.Set, error) {
	var set promset.Set
	if reg == nil {
		return &set, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pool": pool, "writer": name}, reg)
	if err := set.Register(reg, &writerCollector{stats, obs}); err != nil {
		return nil, fmt.Errorf("pgkit: registering the metrics of writer %q (give each writer its own Name): %w", name, err)
	}
	return &set, nil
}

// Describe implements prometheus.Collector.
func (c *writerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWriterItems, descWriterFlush, descWriterBatch, descWriterRetries, descWriterDepth, descWriterCapacity} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *writerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	counter(descWriterItems, float64(s.Written), "written")
	counter(descWriterItems, float64(s.Failed), "failed")
	counter(descWriterItems, float64(s.Ambiguous), "ambiguous")
	counter(descWriterRetries, float64(c.obs.retries.Load()))
	ch <- constHistogram(descWriterFlush, c.obs.flush.snapshot())
	ch <- constHistogram(descWriterBatch, c.obs.batch.snapshot())
	ch <- prometheus.MustNewConstMetric(descWriterDepth, prometheus.GaugeValue, float64(s.Queued))
	ch <- prometheus.MustNewConstMetric(descWriterCapacity, prometheus.GaugeValue, float64(s.Capacity))
}

var (
	descReplicaUp = prometheus.NewDesc("pgkit_replica_up",
		"1 when the replica passed its latest check and its lag is within Config.MaxReplicaLag, so reads go to it.", []string{"replica"}, nil)
	descReplicaLag = prometheus.NewDesc("pgkit_replica_lag_seconds",
		"Replay lag of the replica at its latest check: 0 when it replayed all it received, else the age of the last transaction it replayed.", []string{"replica"}, nil)
	descReplicaFallbacks = prometheus.NewDesc("pgkit_replica_fallbacks_total",
		"Reads (DB.Reader, OnReplica) that went to the primary because no replica was usable.", nil, nil)
)

// replicaCollector is the Prometheus adapter over the replica checks: each
// replica's latest status, and the reads that fell back to the primary.
type replicaCollector struct {
	statuses  func() []ReplicaStatus
	fallbacks func() int64
}

// registerReplicaMetrics registers the replica checks' metrics on reg with
// the const label pool (nothing when reg is nil).
func registerReplicaMetrics(reg prometheus.Registerer, pool string, statuses func() []ReplicaStatus, fallbacks func() int64) (*promset.Set, error) {
	var set promset.Set
	if reg == nil {
		return &set, nil
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"pool": pool}, reg)
	if err := set.Register(reg, &replicaCollector{statuses, fallbacks}); err != nil {
		return nil, fmt.Errorf("pgkit: registering replica metrics: %w", err)
	}
	return &set, nil
}

// Describe implements prometheus.Collector.
func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReplicaUp
	ch <- descReplicaLag
	ch <- descReplicaFallbacks
}

// Collect implements prometheus.Collector.
func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.statuses() {
		up := 0.0
		if st.Usable {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descReplicaUp, prometheus.GaugeValue, up, st.Addr)
		ch <- prometheus.MustNewConstMetric(descReplicaLag, prometheus.GaugeValue, st.Lag.Seconds(), st.Addr)
	}
	ch <- prometheus.MustNewConstMetric(descReplicaFallbacks, prometheus.CounterValue, float64(c.fallbacks()))
}

func constHistogram(d *prometheus.Desc, s histSnapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(s.Bounds))
	for i, b := range s.Bounds {
		buckets[b] = s.Cumulative[i]
	}
	return prometheus.MustNewConstHistogram(d, s.Count, s.Sum, buckets, labels...)
}
