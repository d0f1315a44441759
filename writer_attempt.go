package pgkit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// writerProbe bounds a batch's first attempt while an outage has already
// lasted RetryFor: each batch still gets one real try (the server may be
// back), without waiting a whole RetryFor behind a dead server.
const writerProbe = 5 * time.Second

// writerProbeEvery is how often a batch tries the server once an outage has
// outlived RetryFor; the batches in between go to OnError at once.
const writerProbeEvery = time.Second

// checkWriterTable refuses a table that does not exist or lacks a column
// of T, when the server answers within HealthTimeout; a server that cannot
// be asked now is no reason to refuse a writer whose job is to ride out
// outages.
func checkWriterTable[T any](db *DB, table string) error {
	ctx, cancel := context.WithTimeout(context.Background(), db.cfg.HealthTimeout)
	defer cancel()
	_, err := prepareBulk[T](ctx, db, table, nil, nil)
	if err != nil && !transient(err) {
		return fmt.Errorf("%w (NewWriter)", err)
	}
	return nil
}

// pendingCommit is a write whose COMMIT was sent and whose answer was lost:
// the transaction xid may or may not have committed.
type pendingCommit struct {
	xid string // pg_current_xact_id() of the write's transaction; "" with DedupeKey
	pid uint32 // its backend, to end it if it still waits for the COMMIT
	err error  // what COMMIT returned
}

// writeOnce writes items in one transaction: BEGIN, its xid, the COPY (or
// INSERT … ON CONFLICT DO NOTHING with DedupeKey), COMMIT. Reading the xid
// before COMMIT is what lets a lost answer be settled later instead of
// guessed: it returns a pendingCommit exactly when COMMIT was sent and may
// have committed; any other error means nothing was written. BEGIN and the
// xid go in one round trip, so the transaction costs two more than a bare
// COPY, against batches of thousands of rows.
func (w *Writer[T]) writeOnce(ctx context.Context, items []T) (*pendingCommit, error) {
	if w.cfg.DedupeKey != "" {
		return w.writeIdempotent(ctx, items)
	}
	conn, err := w.db.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	begin := w.db.withLocalSettings(pgx.TxOptions{}).BeginQuery
	if begin == "" {
		begin = "BEGIN"
	}
	results, err := conn.Conn().PgConn().Exec(ctx, begin+"; SELECT pg_current_xact_id()::text").ReadAll()
	if err != nil {
		if isStandby(conn.Conn().PgConn()) {
			// "cannot assign TransactionIds during recovery" (XX000): the
			// primary's address leads to a standby, during a failover.
			w.db.tracer.foundStandby(ctx, w.db.tracer.state(conn.Conn()))
			return nil, &standbyError{err}
		}
		return nil, err
	}
	last := results[len(results)-1]
	if len(last.Rows) != 1 || len(last.Rows[0]) != 1 {
		return nil, fmt.Errorf("pgkit: writer %s: no transaction id", w.cfg.Name)
	}
	xid, pid := string(last.Rows[0][0]), conn.Conn().PgConn().PID()
	if err := w.insert(ctx, conn, items); err != nil {
		abort(ctx, conn.Conn())
		return nil, err
	}
	tag, err := conn.Exec(ctx, "COMMIT")
	switch {
	case err == nil && tag.String() == "ROLLBACK":
		return nil, pgx.ErrTxCommitRollback
	case err == nil:
		return nil, nil
	case commitFailed(err):
		return nil, err
	}
	return &pendingCommit{xid: xid, pid: pid, err: err}, err
}

// writeIdempotent writes items with one INSERT … ON CONFLICT (DedupeKey) DO
// NOTHING, outside a transaction of its own: writing them again cannot
// duplicate a row, so a lost answer needs no xid to settle. It returns a
// pendingCommit without xid when the statement may have run.
func (w *Writer[T]) writeIdempotent(ctx context.Context, items []T) (*pendingCommit, error) {
	err := w.insert(ctx, w.db, items)
	var pgErr *pgconn.PgError
	if err == nil || !transient(err) || errors.As(err, &pgErr) || pgconn.SafeToRetry(err) {
		return nil, err // written, refused (by the server or before sending), or never sent
	}
	return &pendingCommit{err: err}, err
}

// abort rolls back the transaction open on conn; when that fails, the
// connection is closed, and with it the transaction.
func abort(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = conn.Close(ctx)
	}
}

func (w *Writer[T]) insert(ctx context.Context, q Querier, items []T) error {
	if w.cfg.DedupeKey == "" {
		_, err := CopyInsert(ctx, q, w.cfg.Table, items)
		return err
	}
	_, err := UpsertMany(ctx, q, w.cfg.Table, items, []string{w.cfg.DedupeKey}, DoNothing(), ChunkSize(len(items)))
	return err
}

// settle asks the server whether p committed, until deadline or Close's
// context ends. A transaction still in progress is waiting for a COMMIT
// that is stuck on the way (a frozen network): its backend is ended, which
// aborts it unless the COMMIT got there first, so the next look is final.
// known is false when the server could not tell in time.
func (w *Writer[T]) settle(p *pendingCommit, deadline time.Time) (committed, known bool) {
	ctx, cancel := context.WithDeadline(w.abortCtx, deadline)
	defer cancel()
	for attempt := 1; ; attempt++ {
		var status *string
		err := w.db.pool.QueryRow(ctx, `SELECT pg_xact_status($1::xid8)`, p.xid).Scan(&status)
		if err == nil {
			if status == nil {
				return false, false // too old for the server to remember
			}
			switch *status {
			case "committed":
				return true, true
			case "aborted":
				return false, true
			}
			// In progress. Through PgBouncer the pid is not the backend's.
			if !w.db.cfg.PgBouncer {
				_, _ = w.db.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
					WHERE pid = $1 AND backend_xid::text = ($2::xid8::text::bigint % 4294967296)::text`, int64(p.pid), p.xid)
			}
		}
		if !sleepCtx(ctx, rand.N(min(10*time.Millisecond<<min(attempt, 8), time.Second))+time.Millisecond) {
			return false, false
		}
	}
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
