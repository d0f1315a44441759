package pgkit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit/internal/promset"
	"github.com/pgkit-dev/pgkit/internal/record"
)

// DB is a pgxpool.Pool with pgkit's tuning and instrumentation. It offers the
// pool's method set, and Pool for the pool itself. Safe for concurrent use.
type DB struct {
	pool    *pgxpool.Pool
	cfg     Config // effective: defaults applied, URL without password
	tracer  *tracer
	obs     *observer  // the tracer's: every count of the primary's pool
	slow    *slowRing  // the recent slow statements, primary's and replicas'
	explain *explainer // captures slow statements' plans; nil without Config.ExplainSlowQueries
	logger  *slog.Logger
	metrics *promset.Set                // the primary's Prometheus metrics; empty without a Registerer
	sink    atomic.Pointer[record.Sink] // pgkittest's statement recorder, for all of the DB's pools

	catalog sync.Map // table name -> *tableInfo, for the bulk helpers

	replicas      *replicaSet // nil without Config.ReplicaURLs
	localSettings string      // Config.PgBouncer: SET LOCALs after each BEGIN
	sockets       *sockets    // every socket the pools dial

	serverView serverViewCache // DB.ServerView's last read

	sqlMu sync.Mutex
	sqlDB *sql.DB // SQLDB's, made on first use

	replan replanner   // runs Exec, Query and QueryRow (replan.go)
	closed atomic.Bool // set by Close: every method returns ErrClosed
}

// Querier is what every pgkit helper takes, so that it runs inside or outside
// a transaction. *DB, pgx.Tx and *pgxpool.Conn satisfy it.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
}

var (
	_ Querier = (*DB)(nil)
	_ Querier = (pgx.Tx)(nil)
	_ Querier = (*pgxpool.Conn)(nil)
)

// Open validates cfg, builds the pool (and one per Config.ReplicaURLs) and,
// unless cfg.LazyConnect is set, reaches the server within ConnectTimeout and
// checks the replicas once. It warns through cfg.Logger when MaxConns exceeds
// what the server can give. Close the DB when done.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	params := connParams(cfg.URL)
	password := params["password"]
	if err := cfg.validate(); err != nil {
		return nil, redact(err, password)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, redact(&ConfigError{Struct: "Config", Field: "URL", Reason: "cannot parse", Err: parseError(err, password)}, password)
	}
	if password == "" {
		password = pcfg.ConnConfig.Password // from a passfile or the environment
	}
	cfg.applyDefaults(params, pcfg)
	cfg.configure(pcfg, params)
	replicas, err := cfg.replicaConfigs()
	if err != nil {
		return nil, err
	}

	db := &DB{cfg: cfg, logger: cfg.Logger, sockets: newSockets()}
	for _, pc := range append([]*pgxpool.Config{pcfg}, replicas...) {
		pc.ConnConfig.DialFunc = db.sockets.wrap(pc.ConnConfig.DialFunc)
	}
	db.cfg.URL = redactedURL(pcfg)
	db.cfg.ReplicaURLs = nil
	for _, rc := range replicas {
		db.cfg.ReplicaURLs = append(db.cfg.ReplicaURLs, redactedURL(rc))
	}
	db.localSettings = cfg.localSettings()
	db.slow = newSlowRing(cfg.SlowQueryBuffer)
	db.tracer = newTracer(db.cfg, rolePrimary, db.slow)
	db.tracer.sink = &db.sink
	if cfg.ExplainSlowQueries {
		db.explain = startExplainer(pcfg.ConnConfig, &db.cfg, db.slow)
		db.tracer.explain = db.explain
	}
	db.obs = db.tracer.obs
	db.cfg.trace(pcfg, db.tracer, db.sockets.isClosing)
	db.replan = replanner{mode: pcfg.ConnConfig.DefaultQueryExecMode, tracer: db.tracer}
	db.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	db.tracer.pool.Store(db.pool)
	if err != nil {
		db.tracer.close()
		db.explain.close()
		return nil, openError(fmt.Errorf("pgkit: open: %w", err), password)
	}
	db.metrics, err = registerMetrics(cfg.Registerer, db.cfg.Name, rolePrimary, db.obs,
		func() []*pgxpool.Pool { return []*pgxpool.Pool{db.pool} },
		func() bool { return db.Health(context.Background()).Status != StatusDown })
	if err != nil {
		db.pool.Close()
		db.tracer.close()
		db.explain.close()
		return nil, err
	}
	if len(replicas) > 0 {
		if db.replicas, err = newReplicaSet(db, replicas); err != nil {
			db.Close()
			return nil, err
		}
	}
	if !cfg.LazyConnect {
		if err := db.checkServer(ctx); err != nil {
			db.Close()
			return nil, openError(fmt.Errorf("pgkit: open: %w", pgBouncerHint(err, cfg.PgBouncer)), password)
		}
	}
	if db.replicas != nil {
		db.replicas.start(ctx, !cfg.LazyConnect)
	}
	return db, nil
}

// checkServer reaches the server within ConnectTimeout and warns when the
// pool may open more connections than the server accepts. It uses a
// connection of its own, outside the pool and untraced, so that neither
// AcquireTimeout nor the pool's metrics have a say in it.
func (db *DB) checkServer(ctx context.Context) error {
	if db.cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, db.cfg.ConnectTimeout)
		defer cancel()
	}
	conn, err := connectDirect(ctx, db.pool, &db.cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if db.cfg.PgBouncer {
		return db.checkPoolerSettings(ctx, conn)
	}
	var maxConns, reserved int32
	err = conn.QueryRow(ctx, `SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int`).Scan(&maxConns, &reserved)
	if err != nil {
		return err
	}
	if db.cfg.MaxConns > maxConns-reserved {
		db.cfg.alerts.LogAttrs(ctx, slog.LevelWarn, "pgkit: MaxConns exceeds the connections the server can give",
			slog.Int("max_conns", int(db.cfg.MaxConns)),
			slog.Int("server_max_connections", int(maxConns)),
			slog.Int("superuser_reserved_connections", int(reserved)))
	}
	return nil
}

// Config returns the effective configuration: defaults applied, and as URL
// the connection target alone (user, every host and port, database), its
// password shown as "xxxxx" and the URL's other parameters left out.
func (db *DB) Config() Config { return db.cfg }

// Pool returns the underlying pgxpool.Pool. Its methods are traced like the
// DB's, AcquireTimeout included, except its Ping: pgx sends pings past the
// tracer, so ClientTimeout does not bound them (DB.Ping is bounded by
// PingTimeout).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Close closes every connection, replicas' included, waits for acquired ones
// to be released, stops pgkit's goroutines and unregisters its metrics.
// From its start every DB method returns ErrClosed. Statements in flight
// end by their context's deadline or ClientTimeout; a connection that is
// never released (Rows never closed, an Acquire never released, a
// transaction never ended) makes Close wait for it, as pgxpool's does:
// Shutdown bounds the wait.
func (db *DB) Close() {
	db.closed.Store(true)
	db.closeSQLDB()
	db.sockets.close()
	if db.replicas != nil {
		db.replicas.close()
	}
	db.pool.Close()
	db.tracer.close()
	db.explain.close()
	db.metrics.Unregister()
}

// acquireErr is err from acquiring a connection, ErrClosed when the pool
// refused because Close ran meanwhile.
func (db *DB) acquireErr(err error) error {
	if db.closedErr(err) {
		return ErrClosed
	}
	return err
}

// closedErr reports whether err comes from the DB closing: pgxpool's closed
// pool, or a connection attempt that Close cut short (pgxpool cancels the
// connects in progress, and pgkit refuses new dials).
func (db *DB) closedErr(err error) bool {
	var connectErr *pgconn.ConnectError
	return closedPool(err) || db.closed.Load() && errors.As(err, &connectErr)
}

// closedRow is QueryRow's Row after Close.
var closedRow pgx.Row = errRow{err: ErrClosed}

// Exec runs sql on a pool connection; see pgxpool.Pool.Exec. When the server
// refuses the connection's cached prepared statement before running it
// (0A000 after a migration changed its result columns, 26000), it runs sql
// once more on the same connection, where pgx has prepared it afresh.
func (db *DB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if db.closed.Load() {
		return pgconn.CommandTag{}, ErrClosed
	}
	tag, err := db.replan.exec(ctx, db.pool, sql, args)
	if err != nil {
		err = db.acquireErr(err)
	}
	return tag, err
}

// Query runs sql on a pool connection, released when the rows are closed; see
// pgxpool.Pool.Query. Like Exec, it runs sql once more when the server
// refused the cached prepared statement, before any row is returned.
func (db *DB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if db.closed.Load() {
		return &errRows{err: ErrClosed}, ErrClosed
	}
	rows, err := db.replan.poolQuery(ctx, db.pool, sql, args)
	if err != nil && db.closedErr(err) {
		return &errRows{err: ErrClosed}, ErrClosed
	}
	return rows, err
}

// QueryRow runs sql on a pool connection, released by Scan; see
// pgxpool.Pool.QueryRow. Like Exec, it runs sql once more when the server
// refused the cached prepared statement; Scan sees only the second run.
func (db *DB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if db.closed.Load() {
		return closedRow
	}
	row := db.replan.queryRow(ctx, db.pool, sql, args)
	if r, ok := row.(errRow); ok && db.closedErr(r.err) {
		return closedRow
	}
	return row
}

// SendBatch sends b on a pool connection, released when the results are
// closed; see pgxpool.Pool.SendBatch. A batch is not run again after the
// errors Exec retries: its results are read one by one, so part of it may
// have been read or committed.
func (db *DB) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if db.closed.Load() {
		return pgx.FailedBatchResults(b, ErrClosed)
	}
	return db.pool.SendBatch(ctx, b)
}

// CopyFrom copies rows into tableName with COPY FROM STDIN; see
// pgxpool.Pool.CopyFrom.
func (db *DB) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	n, err := db.pool.CopyFrom(ctx, tableName, columnNames, rowSrc)
	if err != nil {
		err = db.acquireErr(err)
	}
	return n, err
}

// Begin starts a transaction on a pool connection, released by Commit or
// Rollback. Prefer InTx, which cannot forget either.
func (db *DB) Begin(ctx context.Context) (pgx.Tx, error) {
	return db.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx is Begin with transaction options.
func (db *DB) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	tx, err := db.pool.BeginTx(ctx, db.withLocalSettings(opts))
	if err != nil {
		err = db.acquireErr(err)
	}
	return tx, err
}

// Acquire checks a connection out of the pool; Release it when done.
func (db *DB) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		err = db.acquireErr(err)
	}
	return c, err
}

// AcquireFunc checks a connection out, runs f with it and releases it,
// whatever f returns; see pgxpool.Pool.AcquireFunc.
func (db *DB) AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error {
	c, err := db.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return f(c)
}

// AcquireAllIdle checks out every idle connection of the primary's pool, at
// most one attempt each, for work such as warming them; Release each. Nil
// after Close.
func (db *DB) AcquireAllIdle(ctx context.Context) []*pgxpool.Conn {
	if db.closed.Load() {
		return nil
	}
	return db.pool.AcquireAllIdle(ctx)
}

// Reset closes every connection of the DB's pools (the primary's and the
// replicas'): idle ones at once, checked-out ones when released. Use it
// after something made every connection stale, such as a credentials
// rotation or a failover behind the same address. The pools stay open.
func (db *DB) Reset() {
	if db.closed.Load() {
		return
	}
	db.pool.Reset()
	if db.replicas != nil {
		db.replicas.reset()
	}
}

// Ping checks out a connection (bounded by AcquireTimeout) and pings the
// server with it, bounded by PingTimeout (1s by default; ClientTimeout when
// PingTimeout is Disabled) unless ctx ends sooner. A ping that times out
// closes its connection.
func (db *DB) Ping(ctx context.Context) error {
	if db.closed.Load() {
		return ErrClosed
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return db.acquireErr(err)
	}
	defer conn.Release()
	// pgx sends a ping past its tracer, where ClientTimeout is applied: it
	// is bounded here.
	d := db.cfg.PingTimeout
	if d <= 0 { // Disabled
		d = db.cfg.ClientTimeout
	}
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return conn.Ping(ctx)
}

// Stat returns pgxpool's statistics; PoolStats adds pgkit's own.
func (db *DB) Stat() *pgxpool.Stat { return db.pool.Stat() }
