package pgkit

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Statements outside a transaction run here: on a connection of the pool,
// and once more on the same connection when the server refused the
// connection's cached prepared statement before running it (replanCode).
// With pgx's default exec mode every statement with the extended protocol is
// prepared once per connection and cached; a migration that changes a
// SELECT *'s columns, or a DEALLOCATE ALL, makes the next run of each cached
// statement on each connection fail with 0A000 or 26000. pgx drops the
// statement from the connection's cache on that error, so the second run
// prepares it afresh. Running it on the same connection, not on the next one
// the pool lends (which may hold the same stale statement), makes one retry
// enough.
//
// The retry happens before Exec returns, and for Query and QueryRow before
// the Rows or Row is handed back: the error arrives with the answer to Bind,
// before any row, so when pgx's Query returns Rows without field
// descriptions (the statement ended before its first row), pgkit closes them
// and reads the error. The caller never sees a row of the failed run.
//
// Batches are not retried: their results are read one by one, so a caller
// may have read an earlier statement's result before a later one fails, and
// a batch may commit part of its work with its own COMMIT. pgx drops the
// batch's statements from the connection's cache, so the next batch works.
//
// The happy path costs what pgxpool's own methods cost: pgxpool.Pool.Query
// and QueryRow also acquire, run on the connection and wrap the result in a
// value that releases it, taken from a slab.

// replanner decides whether a failed statement runs again, and counts it.
type replanner struct {
	// mode is the pool's default exec mode: statements are cached per
	// connection only with pgx.QueryExecModeCacheStatement.
	mode   pgx.QueryExecMode
	tracer *tracer // its pools': counts replans, marks one-shot checkouts
}

// again reports whether a statement of args that failed with err runs
// again, and counts it when so. Only a statement sent alone with the
// extended protocol and cached on the connection qualifies: an Exec without
// arguments goes with the simple protocol, which may carry several
// statements of which some already ran.
func (r *replanner) again(err error, exec bool, args []any) bool {
	code := replanCode(err)
	if code == "" || !cachedStatement(r.mode, exec, args) {
		return false
	}
	r.tracer.obs.replan(code)
	return true
}

// cachedStatement reports whether pgx sends a statement with these args
// (which may start with pgx's per-call options) as a cached prepared
// statement.
func cachedStatement(mode pgx.QueryExecMode, exec bool, args []any) bool {
	rewritten := false
options:
	for len(args) > 0 {
		switch a := args[0].(type) {
		case pgx.QueryExecMode:
			mode = a
		case pgx.QueryRewriter:
			rewritten = true
		case pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			if exec {
				break options
			}
		default:
			break options
		}
		args = args[1:]
	}
	if exec && len(args) == 0 && !rewritten {
		return false // pgx's Exec uses the simple protocol without arguments
	}
	return mode == pgx.QueryExecModeCacheStatement
}

// acquire is a checkout for one of the DB's own pool methods: one
// statement (run again at most once), then the release (see
// connState.oneShot).
func (r *replanner) acquire(ctx context.Context, pool *pgxpool.Pool) (*pgxpool.Conn, error) {
	c, err := pool.Acquire(ctx)
	if err == nil {
		r.tracer.oneShot(c)
	}
	return c, err
}

// exec is pgxpool.Pool.Exec, with the retry.
func (r *replanner) exec(ctx context.Context, pool *pgxpool.Pool, sql string, args []any) (pgconn.CommandTag, error) {
	c, err := r.acquire(ctx, pool)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer c.Release()
	tag, err := c.Conn().Exec(ctx, sql, args...)
	if err != nil && r.again(err, true, args) {
		tag, err = c.Conn().Exec(ctx, sql, args...)
	}
	return tag, err
}

// query runs sql on c, and once more when the first run ended before its
// first row with an error that says it did not run. The Rows returned are
// those of the run that counts; on error they are closed.
func (r *replanner) query(ctx context.Context, c *pgxpool.Conn, sql string, args []any) (pgx.Rows, error) {
	rows, err := c.Conn().Query(ctx, sql, args...)
	if err != nil || rows.FieldDescriptions() != nil {
		return rows, err
	}
	// No field descriptions: the statement failed before its first row
	// (or returns no rows at all). Closing reads its end, and its error.
	rows.Close()
	if r.again(rows.Err(), false, args) {
		return c.Conn().Query(ctx, sql, args...)
	}
	return rows, nil
}

// poolQuery is pgxpool.Pool.Query, with the retry.
func (r *replanner) poolQuery(ctx context.Context, pool *pgxpool.Pool, sql string, args []any) (pgx.Rows, error) {
	c, err := r.acquire(ctx, pool)
	if err != nil {
		return &errRows{err: err}, err
	}
	rows, err := r.query(ctx, c, sql, args)
	if err != nil {
		c.Release()
		return &errRows{err: err}, err
	}
	return newPoolRows(c, rows), nil
}

// queryRow is pgxpool.Pool.QueryRow, with the retry.
func (r *replanner) queryRow(ctx context.Context, pool *pgxpool.Pool, sql string, args []any) pgx.Row {
	c, err := r.acquire(ctx, pool)
	if err != nil {
		return errRow{err: err}
	}
	rows, err := r.query(ctx, c, sql, args)
	if err != nil {
		c.Release()
		return errRow{err: err}
	}
	return newPoolRow(c, rows)
}

// poolRows are a query's rows that give their connection back to the pool
// when closed, as pgxpool's do.
type poolRows struct {
	r pgx.Rows
	c *pgxpool.Conn
}

func (rows *poolRows) Close() {
	rows.r.Close()
	if rows.c != nil {
		rows.c.Release()
		rows.c = nil
	}
}

func (rows *poolRows) Err() error                    { return rows.r.Err() }
func (rows *poolRows) CommandTag() pgconn.CommandTag { return rows.r.CommandTag() }
func (rows *poolRows) FieldDescriptions() []pgconn.FieldDescription {
	return rows.r.FieldDescriptions()
}
func (rows *poolRows) RawValues() [][]byte  { return rows.r.RawValues() }
func (rows *poolRows) Conn() *pgx.Conn      { return rows.r.Conn() }
func (rows *poolRows) TypeMap() *pgtype.Map { return rows.r.TypeMap() }

func (rows *poolRows) Next() bool {
	n := rows.r.Next()
	if !n {
		rows.Close()
	}
	return n
}

func (rows *poolRows) Scan(dest ...any) error {
	err := rows.r.Scan(dest...)
	if err != nil {
		rows.Close()
	}
	return err
}

func (rows *poolRows) Values() ([]any, error) {
	values, err := rows.r.Values()
	if err != nil {
		rows.Close()
	}
	return values, err
}

// poolRow is QueryRow's row: pgx's Row semantics over the query's rows, and
// the connection back to the pool after Scan, as pgxpool's.
type poolRow struct {
	r pgx.Rows
	c *pgxpool.Conn
}

// Scan is pgx's Row.Scan: ErrNoRows without a row, the first row otherwise.
func (row *poolRow) Scan(dest ...any) (err error) {
	rows, c := row.r, row.c
	if c == nil {
		return fmt.Errorf("pgkit: QueryRow's Row scanned twice")
	}
	row.r, row.c = nil, nil // retain nothing; the slab may live on
	defer func() {
		rows.Close()
		c.Release() // also when Scan panics
	}()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, d := range dest {
		if _, ok := d.(*pgtype.DriverBytes); ok {
			return fmt.Errorf("cannot scan into *pgtype.DriverBytes from QueryRow")
		}
	}
	if !rows.Next() {
		if rows.Err() == nil {
			return pgx.ErrNoRows
		}
		return rows.Err()
	}
	_ = rows.Scan(dest...) // its error is the rows' error, read after Close
	rows.Close()
	return rows.Err()
}

// Slabs of poolRows and poolRow, as pgxpool allocates its own: one
// allocation per slabSize queries rather than one per query. A slab lives
// until none of its values is referenced.
const slabSize = 128

// slab hands out values of T carved from arrays of slabSize.
type slab[T any] struct{ free []T }

var (
	rowsSlabs = sync.Pool{New: func() any { return new(slab[poolRows]) }}
	rowSlabs  = sync.Pool{New: func() any { return new(slab[poolRow]) }}
)

// fromSlab takes a zero T from the slabs in p.
func fromSlab[T any](p *sync.Pool) *T {
	s := p.Get().(*slab[T])
	if len(s.free) == 0 {
		s.free = make([]T, slabSize)
	}
	v := &s.free[0]
	s.free = s.free[1:]
	p.Put(s)
	return v
}

func newPoolRows(c *pgxpool.Conn, r pgx.Rows) *poolRows {
	rows := fromSlab[poolRows](&rowsSlabs)
	rows.r, rows.c = r, c
	return rows
}

func newPoolRow(c *pgxpool.Conn, r pgx.Rows) *poolRow {
	row := fromSlab[poolRow](&rowSlabs)
	row.r, row.c = r, c
	return row
}

// errRows are the Rows of a query that failed before it had a connection.
type errRows struct{ err error }

func (r *errRows) Close()                                       {}
func (r *errRows) Err() error                                   { return r.err }
func (r *errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r *errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r *errRows) Next() bool                                   { return false }
func (r *errRows) Scan(...any) error                            { return r.err }
func (r *errRows) Values() ([]any, error)                       { return nil, r.err }
func (r *errRows) RawValues() [][]byte                          { return nil }
func (r *errRows) Conn() *pgx.Conn                              { return nil }
func (r *errRows) TypeMap() *pgtype.Map                         { return nil }

// errRow is the Row of a QueryRow that failed before it had a connection.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
