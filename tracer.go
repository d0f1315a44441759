package pgkit

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit/internal/record"
)

// tracer is installed on every connection of a DB. It measures every query,
// batch, copy, prepare, connect, acquire and release; logs slow and failed
// statements; counts per-request work; bounds the wait for a connection
// (AcquireTimeout); and watches for leaked connections.
//
// It keeps what it needs between a Start and its End in a connState stored in
// the connection's CustomData, since a pgx.Conn runs one statement at a time:
// that spares a context allocation per statement.
type tracer struct {
	cfg     Config
	logger  *slog.Logger
	obs     *observer
	role    string                       // rolePrimary or roleReplica
	ring    *slowRing                    // shared by a DB's primary and replica tracers
	leaks   *leakDetector                // nil without a LeakThreshold
	bounds  *ticking                     // nil without a ClientTimeout
	waits   *acquireWaits                // the acquire contexts, and AcquireTimeout
	sink    *atomic.Pointer[record.Sink] // the DB's: pgkittest's recorder, nil when none is attached
	explain *explainer                   // the DB's, nil without Config.ExplainSlowQueries
	// pool is the primary's pool, once it exists: foundStandby resets it.
	pool      atomic.Pointer[pgxpool.Pool]
	lastReset atomic.Int64 // UnixNano of foundStandby's last reset

	closeOnce sync.Once

	connsMu sync.Mutex
	conns   map[*connState]struct{} // the pools' open connections
	cache   connCache               // conn to connState, ahead of CustomData
}

// The roles of a DB's pools: its primary's, and its replicas' together.
const (
	rolePrimary = "primary"
	roleReplica = "replica"
)

// newTracer builds the tracer of a DB's pools of one role from the DB's
// effective config, with its observer and, when LeakThreshold is set, the
// leak detector running; close stops it. Slow statements go to ring.
func newTracer(cfg Config, role string, ring *slowRing) *tracer {
	t := &tracer{cfg: cfg, logger: cfg.Logger, role: role, ring: ring, conns: make(map[*connState]struct{})}
	t.obs = newObserver(cfg.MaxQueryNames, func(first string) {
		t.cfg.alerts.LogAttrs(context.Background(), slog.LevelWarn,
			"pgkit: more distinct query names than Config.MaxQueryNames; new ones are counted as \"other\"",
			slog.Int("max_query_names", cfg.MaxQueryNames), slog.String("first_over", first))
	})
	if cfg.LeakThreshold > 0 {
		t.leaks = newLeakDetector(t.obs, t.openConns, cfg.LeakThreshold, cfg.Logger, cfg.alerts)
	}
	if cfg.ClientTimeout > 0 {
		t.bounds = startBoundWatcher(t.openConns, cfg.ClientTimeout)
	}
	t.waits = newAcquireWaits(cfg.AcquireTimeout)
	return t
}

func (t *tracer) close() {
	t.closeOnce.Do(func() {
		if t.leaks != nil {
			t.leaks.close()
		}
		t.bounds.close()
		t.waits.close()
	})
}

// connStateKey is where the tracer keeps its connState in a connection's
// CustomData.
const connStateKey = "pgkit.tracer"

// connState is the tracer's memory of one connection.
type connState struct {
	conn *pgx.Conn
	ops  [numOps]opState

	acquiredAt atomic.Int64 // nanotime of the current checkout; 0 while in the pool
	leak       leakState

	// boundBy is 1 + the op whose start put it under ClientTimeout, 0 when
	// none is; only that op's end clears it, so a prepare nested in a query
	// leaves the query's bound alone.
	boundBy uint8
	bound   clientBound

	// The last statement named by its SQL text, and its name: a statement
	// run again, the common case, is named without parsing or a lookup.
	lastSQL   string
	lastName  string
	lastStats *nameStats

	// The last SQL text whose shape N+1 detection hashed, and the hash.
	shapeSQL string
	shape    uint64

	// A checkout by one of the DB's own pool methods (Exec, Query,
	// QueryRow) is acquire, one statement, release, with nothing of the
	// caller's between: its statement starts when the checkout ended, and
	// the checkout ends when its statement did, so the clock is read three
	// times, not five. oneShot is 0 for any other checkout.
	oneShot oneShotState
	lastEnd int64 // nanotime the last statement of the checkout ended; 0: none did

	// onStandby: a write on this connection of the primary's pool was
	// refused because its server is now a standby; the connection is closed
	// when it goes back to the pool.
	onStandby bool
}

type oneShotState uint8

const (
	oneShotAcquired oneShotState = iota + 1 // no statement begun yet
	oneShotRunning
)

// oneShot marks c's checkout as one of the DB's own pool methods, right
// after it was acquired (see connState.oneShot).
func (t *tracer) oneShot(c *pgxpool.Conn) { t.state(c.Conn()).oneShot = oneShotAcquired }

// opState is one statement in flight on a connection.
type opState struct {
	start int64 // nanotime
	name  string
	stats *nameStats // name's counters ("other" past MaxQueryNames)
	sql   string
	args  []any
	rows  int64
	err   error // batch: the first failed statement
}

func (t *tracer) state(conn *pgx.Conn) *connState {
	if cs := t.cache.get(conn); cs != nil {
		return cs
	}
	data := conn.PgConn().CustomData()
	cs, ok := data[connStateKey].(*connState)
	if !ok {
		cs = &connState{conn: conn}
		data[connStateKey] = cs
	}
	t.cache.put(cs)
	return cs
}

func (t *tracer) begin(ctx context.Context, conn *pgx.Conn, cs *connState, o op, name string, ns *nameStats, sql string, args []any) {
	if t.sink != nil && o != opPrepare { // a prepare is pgx's, not a statement of the caller's
		if s := t.sink.Load(); s != nil {
			s.Add(name, sql, args)
		}
	}
	if ns != nil && o != opPrepare && ns.sql.Load() == nil {
		s := strings.TrimSpace(sql) // its own variable: only a first run allocates
		ns.sql.Store(&s)
	}
	var now int64
	if cs.oneShot == oneShotAcquired {
		now, cs.oneShot = cs.acquiredAt.Load(), oneShotRunning
	} else {
		now = nanotime()
	}
	cs.ops[o] = opState{start: now, name: name, stats: ns, sql: sql, args: args}
	t.bound(ctx, cs, o, now)
}

// named names a statement by its context, else by its SQL text (see
// queryName), and finds the name's counters.
func (t *tracer) named(ctx context.Context, cs *connState, sql string) (string, *nameStats) {
	if name, ok := ctx.Value(queryNameKey{}).(string); ok && name != "" {
		return name, t.obs.names.get(name)
	}
	// Equal strings that share their bytes compare without reading them.
	if cs.lastStats != nil && sql == cs.lastSQL {
		return cs.lastName, cs.lastStats
	}
	name := sqlName(sql)
	ns := t.obs.names.get(name)
	if len(sql) <= maxRememberedSQL {
		cs.lastSQL, cs.lastName, cs.lastStats = sql, name, ns
	}
	return name, ns
}

// maxRememberedSQL is the longest SQL text a connection remembers the name
// of: longer ones are rare, and would be kept alive by the memory.
const maxRememberedSQL = 4096

// namedBy finds the counters of a batch or a copy: named by its context,
// else by what pgx tells of it (fallback).
func (t *tracer) namedBy(ctx context.Context, fallback string) (string, *nameStats) {
	name, _ := ctx.Value(queryNameKey{}).(string)
	if name == "" {
		name = fallback
	}
	return name, t.obs.names.get(name)
}

// bound puts the statement under ClientTimeout when its context has no
// deadline. The server's statement_timeout cannot end a statement the server
// never received (a partition, a frozen server or proxy); this bound does,
// on the client: the tracer's watcher puts a past deadline on the socket
// once the statement has run for ClientTimeout, the read or write fails
// with a timeout, and pgx closes the connection. Nothing is allocated, and
// no timer is touched, on the statement path (see clientBound).
func (t *tracer) bound(ctx context.Context, cs *connState, o op, now int64) {
	if t.cfg.ClientTimeout <= 0 || cs.boundBy != 0 {
		return
	}
	if _, ok := ctx.Deadline(); ok {
		return
	}
	cs.bound.start(now)
	cs.boundBy = uint8(o) + 1
}

// unbound ends the bound of op o. When the watcher ended the statement, the
// server did not answer for ClientTimeout: the socket is closed at once, so
// pgx's cleanup of the connection does not wait up to 15 s to drain it (and
// a statement that finished just as the watcher fired leaves no past
// deadline behind).
func (t *tracer) unbound(conn *pgx.Conn, cs *connState, o op, err error) {
	if cs.boundBy != uint8(o)+1 {
		return
	}
	cs.boundBy = 0
	if cs.bound.end() {
		_ = conn.PgConn().Conn().Close()
	}
}

// end records a finished statement: its counters, per-request stats, and
// the slow and failed logs.
func (t *tracer) end(ctx context.Context, conn *pgx.Conn, cs *connState, o op, rows int64, err error) {
	t.unbound(conn, cs, o, err)
	s := &cs.ops[o]
	now := nanotime()
	cs.lastEnd = now
	f := finished{name: s.name, op: o, sql: s.sql, args: s.args, duration: time.Duration(now - s.start), rows: rows, err: err}
	ns := s.stats
	*s = opState{} // retain nothing of the statement
	f.outcome = classify(ctx, err)
	f.slow = t.cfg.SlowQueryThreshold > 0 && f.duration >= t.cfg.SlowQueryThreshold
	if ns != nil { // nil: an end without its start (a tracer added to a live connection)
		class := ""
		if f.outcome == outcomeError {
			class = stateClass(err)
		}
		t.obs.statement(ns, o, f.outcome, f.duration, rows, f.slow, class)
	}
	if rs, ok := ctx.Value(reqStatsKey{}).(*reqStats); ok {
		rs.add(o != opPrepare, f.duration, f.slow, f.outcome == outcomeError)
		if t.cfg.NPlusOneThreshold > 0 && o != opPrepare && ns != nil {
			t.detectNPlusOne(ctx, cs, rs, &f, ns)
		}
	}
	if f.slow || f.outcome != outcomeOK {
		t.logStatement(ctx, &f)
	}
	if f.outcome == outcomeError && t.role == rolePrimary && onStandby(conn, err) {
		t.foundStandby(ctx, cs)
	}
}

// primaryReached notes where a new connection of the primary's pool landed:
// a change of primary (a failover, as multi-host URLs see it) is counted
// and logged. A standby reached by a URL that allows one is not a primary.
func (t *tracer) primaryReached(ctx context.Context, conn *pgx.Conn) {
	if isStandby(conn.PgConn()) {
		return
	}
	addr := conn.PgConn().Conn().RemoteAddr().String()
	if was, moved := t.obs.primaryAt(addr); moved {
		t.logger.LogAttrs(ctx, slog.LevelWarn, "pgkit: the primary moved (a failover or switchover)",
			slog.String("from", was), slog.String("to", addr))
	}
}

// foundStandby marks a connection of the primary's pool whose server turned
// out to be a standby, to be closed when released, and drops the pool's
// other connections, at most once a second: opened to the same address,
// they are likely on it too. Idle ones close now, those in use when they
// come back; new ones find the primary again (with a multi-host URL's
// target_session_attrs=read-write, or a DNS name or address that has moved).
func (t *tracer) foundStandby(ctx context.Context, cs *connState) {
	cs.onStandby = true
	now, last := time.Now().UnixNano(), t.lastReset.Load()
	if now-last < int64(time.Second) || !t.lastReset.CompareAndSwap(last, now) {
		return
	}
	if p := t.pool.Load(); p != nil {
		p.Reset()
	}
	t.logger.LogAttrs(ctx, slog.LevelWarn, "pgkit: the primary's server is a standby now (a failover): its connections are dropped")
}

// TraceQueryStart implements pgx.QueryTracer.
func (t *tracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	cs := t.state(conn)
	name, ns := t.named(ctx, cs, data.SQL)
	t.begin(ctx, conn, cs, opQuery, name, ns, data.SQL, data.Args)
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *tracer) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	t.end(ctx, conn, t.state(conn), opQuery, data.CommandTag.RowsAffected(), data.Err)
}

// TraceBatchStart implements pgx.BatchTracer. A batch is named by the
// context, else "batch"; its SQL in the log is its first statement.
func (t *tracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	var sql string
	if data.Batch != nil && len(data.Batch.QueuedQueries) > 0 {
		sql = data.Batch.QueuedQueries[0].SQL
	}
	name, ns := t.namedBy(ctx, "batch")
	t.begin(ctx, conn, t.state(conn), opBatch, name, ns, sql, nil)
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer.
func (t *tracer) TraceBatchQuery(_ context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	s := &t.state(conn).ops[opBatch]
	s.rows += data.CommandTag.RowsAffected()
	if data.Err != nil && s.err == nil {
		s.err = data.Err
	}
}

// TraceBatchEnd implements pgx.BatchTracer.
func (t *tracer) TraceBatchEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchEndData) {
	cs := t.state(conn)
	err := data.Err
	if err == nil {
		err = cs.ops[opBatch].err
	}
	t.end(ctx, conn, cs, opBatch, cs.ops[opBatch].rows, err)
}

// TraceCopyFromStart implements pgx.CopyFromTracer. A copy is named by the
// context, else by its table.
func (t *tracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	var table string
	if len(data.TableName) > 0 {
		table = data.TableName[len(data.TableName)-1]
	}
	name, ns := t.namedBy(ctx, table)
	t.begin(ctx, conn, t.state(conn), opCopy, name, ns, copySQL(data), nil)
	return ctx
}

// TraceCopyFromEnd implements pgx.CopyFromTracer.
func (t *tracer) TraceCopyFromEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromEndData) {
	t.end(ctx, conn, t.state(conn), opCopy, data.CommandTag.RowsAffected(), data.Err)
}

// copySQL is the statement pgx sends for CopyFrom, for the log: each column
// quoted on its own, joined by ", " (pgx.Identifier would join them with
// dots, as the parts of one qualified name).
func copySQL(data pgx.TraceCopyFromStartData) string {
	var sb strings.Builder
	sb.WriteString("COPY ")
	sb.WriteString(data.TableName.Sanitize())
	sb.WriteString(" ( ")
	for i, c := range data.ColumnNames {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(pgx.Identifier{c}.Sanitize())
	}
	sb.WriteString(" ) FROM STDIN BINARY")
	return sb.String()
}

// TracePrepareStart implements pgx.PrepareTracer.
func (t *tracer) TracePrepareStart(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareStartData) context.Context {
	cs := t.state(conn)
	name, ns := t.named(ctx, cs, data.SQL)
	t.begin(ctx, conn, cs, opPrepare, name, ns, data.SQL, nil)
	return ctx
}

// TracePrepareEnd implements pgx.PrepareTracer. A statement found already
// prepared did no work and is not counted.
func (t *tracer) TracePrepareEnd(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareEndData) {
	cs := t.state(conn)
	if data.AlreadyPrepared {
		t.unbound(conn, cs, opPrepare, nil)
		cs.ops[opPrepare] = opState{}
		return
	}
	t.end(ctx, conn, cs, opPrepare, 0, data.Err)
}

type connectStartKey struct{}

// TraceConnectStart implements pgx.ConnectTracer.
func (t *tracer) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	if ac, ok := ctx.Value(acquireCtxKey{}).(*acquireCtx); ok {
		ac.connected.Store(true) // the dial may read ctx after the Acquire returns
	}
	return context.WithValue(ctx, connectStartKey{}, time.Now())
}

// TraceConnectEnd implements pgx.ConnectTracer.
func (t *tracer) TraceConnectEnd(ctx context.Context, data pgx.TraceConnectEndData) {
	if data.Conn != nil {
		cs := &connState{conn: data.Conn}
		cs.bound.sock = data.Conn.PgConn().Conn()
		data.Conn.PgConn().CustomData()[connStateKey] = cs
		markPooled(cs.bound.sock)
		t.connsMu.Lock()
		t.conns[cs] = struct{}{}
		t.connsMu.Unlock()
		if t.role == rolePrimary {
			t.primaryReached(ctx, data.Conn)
		}
	}
	if start, ok := ctx.Value(connectStartKey{}).(time.Time); ok {
		t.obs.connected(time.Since(start), data.Err != nil)
	}
}

// connClosed is pgxpool's BeforeClose hook: the connection leaves the pool.
func (t *tracer) connClosed(conn *pgx.Conn) {
	if cs, ok := conn.PgConn().CustomData()[connStateKey].(*connState); ok {
		t.connsMu.Lock()
		delete(t.conns, cs)
		t.connsMu.Unlock()
		t.cache.drop(cs)
	}
}

// openConns is a snapshot of the pools' open connections.
func (t *tracer) openConns() []*connState {
	t.connsMu.Lock()
	defer t.connsMu.Unlock()
	out := make([]*connState, 0, len(t.conns))
	for cs := range t.conns {
		out = append(out, cs)
	}
	return out
}

// TraceRelease implements pgxpool.ReleaseTracer.
func (t *tracer) TraceRelease(_ *pgxpool.Pool, data pgxpool.TraceReleaseData) {
	cs := t.state(data.Conn)
	now := cs.lastEnd
	if cs.oneShot != oneShotRunning || now == 0 {
		now = nanotime()
	}
	cs.oneShot, cs.lastEnd = 0, 0
	held := time.Duration(now - cs.acquiredAt.Load())
	t.obs.released(held)
	if t.leaks != nil {
		t.leaks.released(cs, held)
	}
	cs.acquiredAt.Store(0) // after released: a leak scan reads it only while out
	cs.bound.unlift()
	if cs.onStandby {
		// Closed before pgxpool looks at it, so it destroys it rather than
		// lend it again: its server is no longer the primary.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = data.Conn.Close(ctx)
		cancel()
	}
}
