package pgkit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ServerView is what the database server itself says about the work on
// it, beside pgkit's own counters: its statement statistics, its sessions,
// its indexes and its connections. DB.ServerView reads it with the
// privileges of the pg_monitor role (no superuser needed). Query texts have
// their literals masked.
type ServerView struct {
	// At is when it was read (UTC).
	At time.Time `json:"checked_at"`
	// Statements are the top statements by total execution time, from
	// pg_stat_statements; nil when that extension is not installed in the
	// database or not preloaded (StatementsNote says which).
	Statements     []ServerStatement `json:"statements"`
	StatementsNote string            `json:"statements_note,omitempty"`
	// LongRunning are statements running longer than
	// Config.SlowQueryThreshold; IdleInTransaction are sessions idle inside
	// a transaction open that long (holding its locks); Blocked are
	// sessions waiting for a lock, with who holds it.
	LongRunning       []ServerSession `json:"long_running"`
	IdleInTransaction []ServerSession `json:"idle_in_transaction"`
	Blocked           []ServerSession `json:"blocked"`
	// UnusedIndexes were never scanned since the statistics were reset
	// (unique and primary-key indexes, which enforce rules, left out);
	// DuplicateIndexes are indexes whose columns begin another index's.
	UnusedIndexes    []ServerIndex     `json:"unused_indexes"`
	DuplicateIndexes []DuplicateIndex  `json:"duplicate_indexes"`
	SeqScanTables    []SeqScannedTable `json:"seq_scan_tables"`
	// Connections are the server's client connections by application and
	// state, against MaxConnections.
	Connections    []ServerConnections `json:"connections"`
	MaxConnections int                 `json:"max_connections"`
}

// ServerStatement is a row of pg_stat_statements.
type ServerStatement struct {
	// Name is pgkit's query name for the same SQL, when this DB ran it.
	Name  string `json:"name,omitempty"`
	Query string `json:"query"`
	Calls int64  `json:"calls"`
	// TotalSeconds and MeanSeconds are execution time.
	TotalSeconds float64 `json:"total_seconds"`
	MeanSeconds  float64 `json:"mean_seconds"`
	Rows         int64   `json:"rows"`
	// HitRatio is the share of shared buffer reads served from the cache.
	HitRatio float64 `json:"hit_ratio"`
}

// ServerSession is a session of pg_stat_activity.
type ServerSession struct {
	PID         int32  `json:"pid"`
	Application string `json:"application"`
	State       string `json:"state"`
	// Seconds is how long its statement (idle in transaction: its
	// transaction) has run.
	Seconds float64 `json:"running_seconds"`
	Query   string  `json:"query"`
	// BlockedBy are the sessions that hold what it waits for.
	BlockedBy []BlockingSession `json:"blocked_by,omitempty"`
}

// BlockingSession is a session another waits for.
type BlockingSession struct {
	PID         int32  `json:"pid"`
	Application string `json:"application"`
}

// ServerIndex is an index.
type ServerIndex struct {
	Table string `json:"table"`
	Index string `json:"index"`
	Bytes int64  `json:"bytes"`
}

// DuplicateIndex is an index whose columns begin those of Of, which serves
// its queries too.
type DuplicateIndex struct {
	Table string `json:"table"`
	Index string `json:"index"`
	Of    string `json:"of"`
	Bytes int64  `json:"bytes"`
}

// SeqScannedTable is a table of 10,000 rows or more read by sequential
// scans.
type SeqScannedTable struct {
	Table       string `json:"table"`
	Rows        int64  `json:"rows"`
	SeqScans    int64  `json:"seq_scans"`
	SeqRowsRead int64  `json:"seq_rows_read"`
	IndexScans  int64  `json:"index_scans"`
}

// ServerConnections counts the client connections of one application in
// one state.
type ServerConnections struct {
	Application string `json:"application"`
	State       string `json:"state"`
	Count       int64  `json:"count"`
}

// serverViewTTL is how long DB.ServerView reuses what it read.
const serverViewTTL = 5 * time.Second

// serverViewCache keeps the last ServerView.
type serverViewCache struct {
	mu   sync.Mutex
	last *ServerView
}

// ServerView reads the server's view (see ServerView) in one READ ONLY
// transaction with a statement_timeout of 2s, bounded by ctx and by 5s,
// and keeps it for 5s: callers within that time share one read.
func (db *DB) ServerView(ctx context.Context) (*ServerView, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	c := &db.serverView
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && time.Since(c.last.At) < serverViewTTL {
		return c.last, nil
	}
	ctx, cancel := context.WithTimeout(WithQueryName(ctx, "pgkit_server_view"), 5*time.Second)
	defer cancel()
	v, err := db.readServerView(ctx)
	if err != nil {
		return nil, err
	}
	c.last = v
	return v, nil
}

func (db *DB) readServerView(ctx context.Context) (*ServerView, error) {
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, db.acquireErr(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only
	if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 2000`); err != nil {
		return nil, err
	}
	v := &ServerView{At: time.Now().UTC(), LongRunning: []ServerSession{}, IdleInTransaction: []ServerSession{}, Blocked: []ServerSession{}}
	shown := func(q string) string { return foldSQL(maskLiterals(q), db.cfg.MaxLoggedSQL) }

	if err := db.readStatements(ctx, tx, v, shown); err != nil {
		return nil, err
	}
	if err := readSessions(ctx, tx, v, db.cfg.SlowQueryThreshold, shown); err != nil {
		return nil, err
	}
	if err := readIndexes(ctx, tx, v); err != nil {
		return nil, err
	}
	v.UnusedIndexes, v.DuplicateIndexes, v.SeqScanTables = nonNil(v.UnusedIndexes), nonNil(v.DuplicateIndexes), nonNil(v.SeqScanTables)
	rows, _ := tx.Query(ctx, `SELECT coalesce(application_name, ''), coalesce(state, ''), count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2`)
	if v.Connections, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ServerConnections]); err != nil {
		return nil, err
	}
	return v, tx.QueryRow(ctx, `SELECT current_setting('max_connections')::int`).Scan(&v.MaxConnections)
}

// readStatements reads the top of pg_stat_statements, naming the rows
// whose SQL this DB ran under a query name. The view's absence, or the
// library not being preloaded, leaves Statements nil with a note.
func (db *DB) readStatements(ctx context.Context, tx pgx.Tx, v *ServerView, shown func(string) string) error {
	var installed bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('pg_stat_statements') IS NOT NULL`).Scan(&installed); err != nil {
		return err
	}
	if !installed {
		v.StatementsNote = "pg_stat_statements is not installed in this database: CREATE EXTENSION pg_stat_statements"
		return nil
	}
	// A failure here must not abort the transaction for what follows.
	if _, err := tx.Exec(ctx, `SAVEPOINT statements`); err != nil {
		return err
	}
	rows, _ := tx.Query(ctx, `SELECT query, calls, total_exec_time / 1000, mean_exec_time / 1000, rows,
		coalesce(shared_blks_hit::float8 / nullif(shared_blks_hit + shared_blks_read, 0), 1)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT 10`)
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ServerStatement, error) {
		var s ServerStatement
		err := r.Scan(&s.Query, &s.Calls, &s.TotalSeconds, &s.MeanSeconds, &s.Rows, &s.HitRatio)
		return s, err
	})
	if err != nil {
		if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT statements`); rerr != nil {
			return errors.Join(err, rerr)
		}
		v.StatementsNote = "pg_stat_statements cannot be read: " + scrubError(err, nil, nil) +
			" (it needs shared_preload_libraries = 'pg_stat_statements')"
		return nil
	}
	names := db.obs.names.sqlNames()
	for i := range list {
		list[i].Name = names[statementKey(list[i].Query)]
		list[i].Query = shown(list[i].Query)
	}
	v.Statements = list
	return nil
}

// readSessions reads the sessions worth a look: long statements, idle
// transactions and waits for locks.
func readSessions(ctx context.Context, tx pgx.Tx, v *ServerView, slow time.Duration, shown func(string) string) error {
	rows, _ := tx.Query(ctx, `SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''),
		greatest(0, extract(epoch FROM clock_timestamp() - CASE WHEN a.state LIKE 'idle in transaction%' THEN a.xact_start ELSE a.query_start END))::float8,
		coalesce(a.query, ''),
		coalesce((SELECT array_agg(b.pid ORDER BY b.pid) FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid))), '{}'),
		coalesce((SELECT array_agg(coalesce(b.application_name, '') ORDER BY b.pid) FROM pg_stat_activity b
			WHERE b.pid = ANY (pg_blocking_pids(a.pid))), '{}')
		FROM pg_stat_activity a
		WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() AND a.datname = current_database()
		ORDER BY 4 DESC NULLS LAST`)
	var (
		pids []int32
		apps []string
	)
	var s ServerSession
	_, err := pgx.ForEachRow(rows, []any{&s.PID, &s.Application, &s.State, &s.Seconds, &s.Query, &pids, &apps}, func() error {
		row := s
		row.Query = shown(s.Query)
		for i, pid := range pids {
			row.BlockedBy = append(row.BlockedBy, BlockingSession{PID: pid, Application: apps[i]})
		}
		switch {
		case len(row.BlockedBy) > 0:
			v.Blocked = append(v.Blocked, row)
		case row.Seconds < slow.Seconds(): // not long enough to be a finding
		case strings.HasPrefix(row.State, "idle in transaction"):
			v.IdleInTransaction = append(v.IdleInTransaction, row)
		case row.State == "active":
			v.LongRunning = append(v.LongRunning, row)
		}
		return nil
	})
	return err
}

// readIndexes reads unused and duplicate indexes and the tables read by
// sequential scans, in the user's schemas.
func readIndexes(ctx context.Context, tx pgx.Tx, v *ServerView) error {
	rows, _ := tx.Query(ctx, `SELECT s.relid::regclass::text, s.indexrelid::regclass::text, pg_relation_size(s.indexrelid)
		FROM pg_stat_user_indexes s JOIN pg_index i USING (indexrelid)
		WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary ORDER BY 3 DESC, 2 LIMIT 20`)
	var err error
	if v.UnusedIndexes, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ServerIndex]); err != nil {
		return err
	}
	rows, _ = tx.Query(ctx, `SELECT a.indrelid::regclass::text, a.indexrelid::regclass::text, b.indexrelid::regclass::text,
		pg_relation_size(a.indexrelid)
		FROM pg_index a JOIN pg_index b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid
		JOIN pg_class c ON c.oid = a.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
		AND NOT a.indisunique AND a.indpred IS NULL AND b.indpred IS NULL AND a.indexprs IS NULL AND b.indexprs IS NULL
		AND (b.indkey::text || ' ') LIKE (a.indkey::text || ' %')
		AND (a.indkey::text <> b.indkey::text OR a.indexrelid > b.indexrelid)
		ORDER BY 4 DESC, 2 LIMIT 20`)
	if v.DuplicateIndexes, err = pgx.CollectRows(rows, pgx.RowToStructByPos[DuplicateIndex]); err != nil {
		return err
	}
	rows, _ = tx.Query(ctx, `SELECT relid::regclass::text, n_live_tup, seq_scan, seq_tup_read, coalesce(idx_scan, 0)
		FROM pg_stat_user_tables WHERE seq_scan > 0 AND n_live_tup >= 10000 ORDER BY seq_tup_read DESC LIMIT 10`)
	v.SeqScanTables, err = pgx.CollectRows(rows, pgx.RowToStructByPos[SeqScannedTable])
	return err
}

// nonNil is s, or an empty slice for nil: JSON readers get [] for none.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// statementKey is sql with its literals and parameters as "?" and its
// whitespace folded: pg_stat_statements turns a statement's constants into
// parameters, so "v + 0 = $1" and "v + $2 = $1" are one statement.
func statementKey(sql string) string {
	return foldSQL(sqlLiterals.ReplaceAllStringFunc(sql, func(m string) string {
		if m[0] == '"' {
			return m
		}
		return "?"
	}), 1<<20)
}
