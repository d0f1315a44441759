package pgkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit/internal/promset"
)

// ReplicaStatus is the latest check of one of Config.ReplicaURLs.
type ReplicaStatus struct {
	// Addr is the replica's host:port.
	Addr string `json:"addr"`
	// Healthy: the replica answered the latest check within HealthTimeout.
	Healthy bool `json:"healthy"`
	// InRecovery is pg_is_in_recovery(): false once a replica was promoted.
	InRecovery bool `json:"in_recovery"`
	// Lag is how far replay was behind the primary when checked: the age of
	// the oldest WAL position read on the primary at a check that the replica
	// has not replayed yet (zero when it has replayed all the primary had).
	// So a standby cut off from its primary ages. When the primary cannot
	// be read, the standby's own view: zero when it replayed all it
	// received, else now() − pg_last_xact_replay_timestamp().
	Lag time.Duration `json:"-"`
	// Usable: healthy, a standby (not promoted), and Lag within
	// Config.MaxReplicaLag, so DB.Reader and OnReplica send it work.
	Usable bool `json:"usable"`
	// Reason says why it is not usable, in the public terms of
	// HealthReport.Reason; empty when it is.
	Reason string `json:"reason,omitempty"`
	// Detail is the error behind Reason, for operators (the log,
	// StatsHandler), as in HealthReport.Detail. HealthHandler's body leaves
	// it out, with Addr.
	Detail string `json:"detail,omitempty"`
	// CheckedAt is when the status was last set (zero before the first
	// check).
	CheckedAt time.Time `json:"-"`
}

// MarshalJSON writes the status with the lag in seconds (lag_seconds) and
// checked_at in RFC 3339 (UTC), null before the first check.
func (s ReplicaStatus) MarshalJSON() ([]byte, error) {
	type plain ReplicaStatus
	return json.Marshal(struct {
		plain
		LagSeconds float64 `json:"lag_seconds"`
		CheckedAt  *string `json:"checked_at"`
	}{plain(s), s.Lag.Seconds(), jsonTimeOrNull(s.CheckedAt)})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *ReplicaStatus) UnmarshalJSON(b []byte) error {
	type plain ReplicaStatus
	in := struct {
		*plain
		LagSeconds float64 `json:"lag_seconds"`
		CheckedAt  *string `json:"checked_at"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	at, err := parseJSONTime(in.CheckedAt)
	if err != nil {
		return err
	}
	s.Lag, s.CheckedAt = seconds(in.LagSeconds), at
	return nil
}

// Reader returns the Querier for read-only work that may see data a moment
// old: each call goes to the next usable replica in turn (round robin), or to
// the primary when none is usable or there is no Config.ReplicaURLs. A
// replica is usable when its latest check (every ReplicaCheckPeriod) passed
// and its lag is within MaxReplicaLag; one whose connection fails under
// Exec, Query or QueryRow is set aside at once until a check passes again. Writes
// sent through it fail on a replica (SQLSTATE 25006): they belong on the DB.
//
// Its Exec, Query and QueryRow run a statement once more after the errors
// DB.Exec retries. After Close every method returns ErrClosed.
func (db *DB) Reader() Querier {
	if db.replicas == nil || db.closed.Load() {
		return db
	}
	return db.replicas
}

// Replicas returns the latest status of each of Config.ReplicaURLs, in
// their order; nil without replicas.
func (db *DB) Replicas() []ReplicaStatus {
	if db.replicas == nil {
		return nil
	}
	return db.replicas.statuses()
}

// statuses is each replica's latest check, in Config.ReplicaURLs order.
func (s *replicaSet) statuses() []ReplicaStatus {
	out := make([]ReplicaStatus, len(s.members))
	for i, r := range s.members {
		out[i] = *r.status.Load()
	}
	return out
}

// notStandbyReason is a replica's Reason when its server is not a standby.
const notStandbyReason = "not a standby: the server was promoted to primary"

// replicaSet is a DB's replicas: their pools, their latest checks, and the
// round robin that Reader and OnReplica pick from.
type replicaSet struct {
	primary   *DB
	members   []*replica
	tracer    *tracer // role replica, shared by the members' pools
	replan    replanner
	next      atomic.Uint64
	fallbacks atomic.Int64 // picks that found no usable replica
	metrics   *promset.Set // the replica role's pool and statement metrics
	status    *promset.Set // each replica's latest check and the fallbacks (replicaCollector)

	stop context.CancelFunc
	done chan struct{}
}

type replica struct {
	set    *replicaSet
	lag    lagTracker // used by check alone
	addr   string
	pool   *pgxpool.Pool
	usable atomic.Bool
	status atomic.Pointer[ReplicaStatus]
	mu     sync.Mutex // serializes status updates, so transitions log once
}

// newReplicaSet builds a pool per replica config; nothing connects yet.
func newReplicaSet(db *DB, cfgs []*pgxpool.Config) (*replicaSet, error) {
	t := newTracer(db.cfg, roleReplica, db.slow)
	t.sink = &db.sink
	t.explain = db.explain // plans are made on the primary
	s := &replicaSet{primary: db, tracer: t, done: make(chan struct{}),
		replan: replanner{mode: db.replan.mode, tracer: t}}
	for _, pcfg := range cfgs {
		db.cfg.trace(pcfg, t, db.sockets.isClosing)
		pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
		if err != nil {
			s.closePools()
			return nil, fmt.Errorf("pgkit: open replica %s: %w", redactedURL(pcfg), err)
		}
		r := &replica{set: s, pool: pool,
			addr: net.JoinHostPort(pcfg.ConnConfig.Host, strconv.Itoa(int(pcfg.ConnConfig.Port)))}
		r.status.Store(&ReplicaStatus{Addr: r.addr, Reason: "not checked yet"})
		s.members = append(s.members, r)
	}
	var err error
	if s.metrics, err = registerMetrics(db.cfg.Registerer, db.cfg.Name, roleReplica, t.obs, s.pools, s.anyUsable); err != nil {
		s.closePools()
		return nil, err
	}
	if s.status, err = registerReplicaMetrics(db.cfg.Registerer, db.cfg.Name, s.statuses, s.fallbacks.Load); err != nil {
		s.metrics.Unregister()
		s.closePools()
		return nil, err
	}
	return s, nil
}

// start checks every replica now when checkNow is set, then every
// ReplicaCheckPeriod in a goroutine of its own until close.
func (s *replicaSet) start(ctx context.Context, checkNow bool) {
	if checkNow {
		s.checkAll(ctx)
	}
	loopCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go func() {
		defer close(s.done)
		if !checkNow {
			s.checkAll(loopCtx)
		}
		tick := time.NewTicker(s.primary.cfg.ReplicaCheckPeriod)
		defer tick.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-tick.C:
				s.checkAll(loopCtx)
			}
		}
	}()
}

func (s *replicaSet) close() {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	s.closePools()
	s.metrics.Unregister()
	s.status.Unregister()
}

func (s *replicaSet) closePools() {
	for _, r := range s.members {
		r.pool.Close()
	}
	s.tracer.close()
}

// reset closes every replica's connections (DB.Reset).
func (s *replicaSet) reset() {
	for _, r := range s.members {
		r.pool.Reset()
	}
}

func (s *replicaSet) pools() []*pgxpool.Pool {
	out := make([]*pgxpool.Pool, len(s.members))
	for i, r := range s.members {
		out[i] = r.pool
	}
	return out
}

func (s *replicaSet) anyUsable() bool {
	for _, r := range s.members {
		if r.usable.Load() {
			return true
		}
	}
	return false
}

// pick returns the pool of the next usable replica, round robin, or the
// primary's (and a nil replica) when none is usable.
func (s *replicaSet) pick() (*pgxpool.Pool, *replica) {
	n := uint64(len(s.members))
	start := s.next.Add(1)
	for i := range n {
		if r := s.members[(start+i)%n]; r.usable.Load() {
			return r.pool, r
		}
	}
	s.fallbacks.Add(1)
	return s.primary.pool, nil
}

// replicaCheckSQL reads whether the server is a standby, how far it has
// replayed the WAL, and its lag by its own view: zero when it replayed all
// the WAL it received, else the age of the last transaction it replayed. A
// standby cut off from its primary receives nothing and so reads as caught
// up by its own view; lagTracker measures it against the primary instead,
// and the own view serves only when the primary cannot be read.
const replicaCheckSQL = `SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, ''),
  CASE WHEN NOT pg_is_in_recovery() THEN 0
       WHEN pg_last_wal_receive_lsn() IS NOT NULL AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
       ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
  END::float8`

// primaryLSNSQL reads the primary's WAL position, for lagTracker.
const primaryLSNSQL = `SELECT pg_current_wal_lsn()::text`

func (s *replicaSet) checkAll(ctx context.Context) {
	// The primary's position first: a replica that then has replayed less
	// is behind it.
	pctx, cancel := context.WithTimeout(ctx, s.primary.cfg.HealthTimeout)
	var text string
	var primary walAt
	if _, _, err := probe(pctx, s.primary.pool, &s.primary.cfg, primaryLSNSQL, &text); err == nil {
		primary = walAt{at: time.Now(), lsn: parseLSN(text)}
	}
	cancel()
	var wg sync.WaitGroup
	for _, r := range s.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.check(ctx, primary)
		}()
	}
	wg.Wait()
}

// check runs replicaCheckSQL within HealthTimeout and records the result.
// A server that is not in recovery is no replica: it was promoted (a
// failover), and reads go elsewhere until it is a standby again.
// Like DB.Health, it gives the pool half the time to lend a connection; when
// none comes because every one is in use, a connection of its own tells a
// busy replica (still usable) from one that stopped answering.
func (r *replica) check(ctx context.Context, primary walAt) {
	ctx, cancel := context.WithTimeout(ctx, r.set.primary.cfg.HealthTimeout)
	defer cancel()
	st := ReplicaStatus{Addr: r.addr}
	var ownLag float64
	var replay string
	_, _, err := probe(ctx, r.pool, &r.set.primary.cfg, replicaCheckSQL, &st.InRecovery, &replay, &ownLag)
	st.Lag = r.lag.lag(time.Now(), primary, parseLSN(replay), time.Duration(ownLag*float64(time.Second)))
	maxLag := r.set.primary.cfg.MaxReplicaLag
	switch {
	case err != nil:
		st.Reason, st.Detail = r.set.primary.reason(err, r.pool)
	case !st.InRecovery:
		st.Healthy = true
		st.Reason = notStandbyReason
	case maxLag > 0 && st.Lag > maxLag:
		st.Healthy = true
		st.Reason = fmt.Sprintf("lag %s exceeds MaxReplicaLag %s", st.Lag.Round(time.Millisecond), maxLag)
	default:
		st.Healthy, st.Usable = true, true
	}
	r.record(st)
}

// failed sets the replica aside when err says its connection failed, not
// the statement; the next passing check brings it back.
func (r *replica) failed(err error) {
	var pgErr *pgconn.PgError
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return
	case errors.As(err, &pgErr) && !sessionLost(pgErr.Code):
		return
	}
	st := *r.status.Load()
	st.Healthy, st.Usable = false, false
	st.Reason, st.Detail = r.set.primary.reason(err, r.pool)
	r.record(st)
}

func (r *replica) record(st ReplicaStatus) {
	st.CheckedAt = time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.status.Load()
	r.status.Store(&st)
	r.usable.Store(st.Usable)
	switch {
	case was.Usable && !st.Usable:
		r.set.primary.logger.LogAttrs(context.Background(), slog.LevelWarn, "pgkit: replica set aside",
			slog.String("replica", r.addr), slog.String("reason", st.Reason), slog.String("detail", st.Detail))
	case !was.Usable && st.Usable && !was.CheckedAt.IsZero():
		r.set.primary.logger.LogAttrs(context.Background(), slog.LevelInfo, "pgkit: replica back in use",
			slog.String("replica", r.addr), slog.Duration("lag", st.Lag))
	case was.CheckedAt.IsZero() && !st.Usable:
		r.set.primary.logger.LogAttrs(context.Background(), slog.LevelWarn, "pgkit: replica not usable",
			slog.String("replica", r.addr), slog.String("reason", st.Reason), slog.String("detail", st.Detail))
	}
}

// Exec runs sql on the next usable replica; see DB.Reader.
func (s *replicaSet) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	pool, r := s.pick()
	if r == nil || s.primary.closed.Load() {
		return s.primary.Exec(ctx, sql, args...)
	}
	tag, err := s.replan.exec(ctx, pool, sql, args)
	if err != nil {
		r.failed(err)
	}
	return tag, err
}

// Query runs sql on the next usable replica; see DB.Reader.
func (s *replicaSet) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	pool, r := s.pick()
	if r == nil || s.primary.closed.Load() {
		return s.primary.Query(ctx, sql, args...)
	}
	rows, err := s.replan.poolQuery(ctx, pool, sql, args)
	if err != nil {
		r.failed(err)
	}
	return rows, err
}

// QueryRow runs sql on the next usable replica; see DB.Reader.
func (s *replicaSet) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	pool, r := s.pick()
	if r == nil || s.primary.closed.Load() {
		return s.primary.QueryRow(ctx, sql, args...)
	}
	return replicaRow{s.replan.queryRow(ctx, pool, sql, args), r}
}

// replicaRow sets its replica aside when Scan finds the connection failed.
type replicaRow struct {
	pgx.Row
	r *replica
}

func (row replicaRow) Scan(dest ...any) error {
	err := row.Row.Scan(dest...)
	if err != nil {
		row.r.failed(err)
	}
	return err
}

// SendBatch sends b to the next usable replica; see DB.Reader.
func (s *replicaSet) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if s.primary.closed.Load() {
		return pgx.FailedBatchResults(b, ErrClosed)
	}
	pool, _ := s.pick()
	return pool.SendBatch(ctx, b)
}

// CopyFrom is here to make the Reader a Querier; a replica refuses it.
func (s *replicaSet) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	if s.primary.closed.Load() {
		return 0, ErrClosed
	}
	pool, _ := s.pick()
	return pool.CopyFrom(ctx, tableName, columnNames, rowSrc)
}
