package pgkit

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DefaultChunkSize is how many rows InsertReturning, UpdateMany and
// UpsertMany send per statement unless ChunkSize says otherwise. README's
// chunk-size table (BenchmarkChunkSize) is where it comes from.
const DefaultChunkSize = 10_000

// BulkOption configures a bulk helper.
type BulkOption func(*bulkOptions)

type bulkOptions struct {
	chunk     int
	columns   []string
	update    []string
	doNothing bool
}

// ChunkSize sets the rows per statement (default DefaultChunkSize).
func ChunkSize(n int) BulkOption { return func(o *bulkOptions) { o.chunk = n } }

// Columns limits the columns written to these (of the struct's db tags).
// Default: every tagged column except those the database fills itself:
// identity and generated columns, and fields tagged ",default". Name an
// identity BY DEFAULT column here to write it.
func Columns(cols ...string) BulkOption { return func(o *bulkOptions) { o.columns = cols } }

// UpdateColumns sets the columns UpsertMany updates on conflict. Default:
// every written column that is not a conflict column.
func UpdateColumns(cols ...string) BulkOption { return func(o *bulkOptions) { o.update = cols } }

// DoNothing makes UpsertMany skip conflicting rows (ON CONFLICT DO NOTHING).
func DoNothing() BulkOption { return func(o *bulkOptions) { o.doNothing = true } }

// bulk is one call of a bulk helper: the rows, their mapping, the table.
type bulk[T any] struct {
	rows  []T
	sm    *structMap
	ptr   bool // T is a pointer to the struct
	table *tableInfo
	opts  bulkOptions
	write []int // indexes into sm.fields of the columns sent
}

// prepareBulk maps T, reads the table from the catalog and checks every
// column before any data is sent.
func prepareBulk[T any](ctx context.Context, q Querier, table string, rows []T, opts []BulkOption) (*bulk[T], error) {
	t, sm, err := rowStruct[T]()
	if err != nil {
		return nil, err
	}
	b := &bulk[T]{rows: rows, sm: sm, ptr: t.Kind() == reflect.Pointer, opts: bulkOptions{chunk: DefaultChunkSize}}
	for _, o := range opts {
		o(&b.opts)
	}
	if b.opts.chunk < 1 {
		return nil, fmt.Errorf("pgkit: ChunkSize must be at least 1 (got %d)", b.opts.chunk)
	}
	if b.table, err = lookupTable(ctx, q, table); err != nil {
		return nil, err
	}
	for _, f := range sm.fields {
		if _, err := b.table.column(f.column); err != nil {
			return nil, fmt.Errorf("%w (mapped from %s)", err, t)
		}
	}
	if len(b.opts.columns) > 0 {
		for _, c := range b.opts.columns {
			i, ok := sm.byColumn[c]
			if !ok {
				return nil, fmt.Errorf("pgkit: Columns: %s has no field tagged %q", t, c)
			}
			b.write = append(b.write, i)
		}
	} else {
		for i, f := range sm.fields {
			if ci := b.table.columns[f.column]; !f.dbFills && !ci.generated && !ci.identity {
				b.write = append(b.write, i)
			}
		}
	}
	return b, nil
}

// writable checks that the database lets cols be written: a generated
// column never is; an identity ALWAYS column only with OVERRIDING SYSTEM
// VALUE, which inserts add when overriding is true (COPY cannot).
func (b *bulk[T]) writable(cols []int, overriding bool) (override bool, err error) {
	for _, i := range cols {
		col := b.sm.fields[i].column
		ci := b.table.columns[col]
		switch {
		case ci.generated:
			return false, fmt.Errorf("pgkit: column %s of %s is generated and cannot be written", col, b.table.name)
		case ci.identityAlways && !overriding:
			return false, fmt.Errorf("pgkit: column %s of %s is GENERATED ALWAYS AS IDENTITY and cannot be written by COPY", col, b.table.name)
		case ci.identityAlways:
			override = true
		}
	}
	return override, nil
}

// insertInto is "INSERT INTO t (cols)", with OVERRIDING SYSTEM VALUE when an
// identity ALWAYS column was asked for explicitly.
func (b *bulk[T]) insertInto() (string, error) {
	override, err := b.writable(b.write, true)
	if err != nil {
		return "", err
	}
	sql := "INSERT INTO " + b.table.name + " (" + b.columnList(b.write, "") + ")"
	if override {
		sql += " OVERRIDING SYSTEM VALUE"
	}
	return sql, nil
}

// field returns row i's field f, addressable.
func (b *bulk[T]) field(i int, f *structField) reflect.Value {
	v := reflect.ValueOf(&b.rows[i]).Elem()
	if b.ptr {
		v = v.Elem()
	}
	return v.FieldByIndex(f.index)
}

// arrays builds one typed slice per column of cols for rows [lo, hi): the
// parameters of unnest.
func (b *bulk[T]) arrays(cols []int, lo, hi int) []any {
	out := make([]any, len(cols))
	for k, ci := range cols {
		f := &b.sm.fields[ci]
		s := reflect.MakeSlice(reflect.SliceOf(f.typ), hi-lo, hi-lo)
		for i := lo; i < hi; i++ {
			s.Index(i - lo).Set(b.field(i, f))
		}
		out[k] = s.Interface()
	}
	return out
}

// unnestSQL is "unnest($1::t1[], $2::t2[], ...)" for cols, with the array
// types read from the catalog.
func (b *bulk[T]) unnestSQL(cols []int) (string, error) {
	var sb strings.Builder
	sb.WriteString("unnest(")
	for k, ci := range cols {
		col := b.sm.fields[ci].column
		info := b.table.columns[col]
		if info.isArray {
			return "", fmt.Errorf("pgkit: column %s of %s is an array (%s): unnest cannot take arrays of arrays; write it with CopyInsert",
				col, b.table.name, info.typ)
		}
		if k > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("$" + strconv.Itoa(k+1) + "::" + info.typ + "[]")
	}
	sb.WriteString(")")
	return sb.String(), nil
}

// columnList is the quoted, comma-separated names of cols, each prefixed.
func (b *bulk[T]) columnList(cols []int, prefix string) string {
	names := make([]string, len(cols))
	for k, ci := range cols {
		names[k] = prefix + pgx.Identifier{b.sm.fields[ci].column}.Sanitize()
	}
	return strings.Join(names, ", ")
}

// indexes maps column names to indexes into sm.fields.
func (b *bulk[T]) indexes(what string, cols []string) ([]int, error) {
	out := make([]int, len(cols))
	for k, c := range cols {
		i, ok := b.sm.byColumn[c]
		if !ok {
			return nil, fmt.Errorf("pgkit: %s column %q is not a tagged field of the rows", what, c)
		}
		if _, err := b.table.column(c); err != nil {
			return nil, err
		}
		out[k] = i
	}
	return out, nil
}

// chunks runs fn for each chunk of rows. On a *DB with more than one chunk it
// runs them in one transaction, so the call is all or nothing; on a Tx or a
// connection, they run in the caller's transaction (or none).
func (b *bulk[T]) chunks(ctx context.Context, q Querier, fn func(q Querier, lo, hi int) error) error {
	n := len(b.rows)
	run := func(q Querier) error {
		for lo := 0; lo < n; lo += b.opts.chunk {
			if err := fn(q, lo, min(lo+b.opts.chunk, n)); err != nil {
				return err
			}
		}
		return nil
	}
	if db, ok := q.(*DB); ok && n > b.opts.chunk {
		return InTx(ctx, db, func(tx Tx) error { return run(tx) })
	}
	return run(q)
}

// CopyInsert writes rows into table with COPY, the fastest way in: one
// statement, all or nothing, however many rows. Columns come from the db
// tags of T (a struct or a pointer to one); columns the database fills
// (identity ALWAYS, generated, or tagged ",default") are left to it. Returns
// the number of rows copied; an empty rows is a no-op.
//
//	n, err := pgkit.CopyInsert(ctx, db, "messages", msgs)
func CopyInsert[T any](ctx context.Context, q Querier, table string, rows []T, opts ...BulkOption) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	b, err := prepareBulk(ctx, q, table, rows, opts)
	if err != nil {
		return 0, err
	}
	if _, err := b.writable(b.write, false); err != nil {
		return 0, err
	}
	names := make([]string, len(b.write))
	for k, ci := range b.write {
		names[k] = b.sm.fields[ci].column
	}
	ident, _ := tableIdent(table)
	return q.CopyFrom(ctx, ident, names, &structSource[T]{b: b, values: make([]any, len(b.write))})
}

// structSource feeds struct rows to COPY, one reused values slice for all
// rows (pgx encodes each row before asking for the next).
type structSource[T any] struct {
	b      *bulk[T]
	i      int
	values []any
}

func (s *structSource[T]) Next() bool { s.i++; return s.i <= len(s.b.rows) }
func (s *structSource[T]) Err() error { return nil }
func (s *structSource[T]) Values() ([]any, error) {
	for k, ci := range s.b.write {
		s.values[k] = s.b.field(s.i-1, &s.b.sm.fields[ci]).Interface()
	}
	return s.values, nil
}

// CopyInsertFrom is CopyInsert for rows that are not structs: a
// pgx.CopyFromSource (pgx.CopyFromRows, pgx.CopyFromSlice, ...) and the
// columns it gives, which are checked against the catalog first.
func CopyInsertFrom(ctx context.Context, q Querier, table string, columns []string, src pgx.CopyFromSource) (int64, error) {
	ti, err := lookupTable(ctx, q, table)
	if err != nil {
		return 0, err
	}
	for _, c := range columns {
		if _, err := ti.column(c); err != nil {
			return 0, err
		}
	}
	ident, _ := tableIdent(table)
	return q.CopyFrom(ctx, ident, columns, src)
}

// InsertReturning inserts rows with one
// INSERT ... SELECT * FROM unnest($1::t1[], ...) RETURNING ... per chunk and
// writes what the database generated (identity ids, generated columns,
// fields tagged ",default" such as created_at) back into rows, in input
// order. Given a *DB, a multi-chunk call runs in one transaction.
//
// rows are written to only when the whole call succeeds: after an error they
// hold what the caller put in them, not ids of rows that were rolled back.
// (On a connection outside a transaction, chunks before the failing one stay
// committed; give a *DB or a Tx for all or nothing.)
//
//	type Message struct {
//		ID        int64     `db:"id"`                 // identity: returned
//		Content   string    `db:"content"`
//		CreatedAt time.Time `db:"created_at,default"` // the default: returned
//	}
//	err := pgkit.InsertReturning(ctx, db, "messages", msgs)
func InsertReturning[T any](ctx context.Context, q Querier, table string, rows []T, opts ...BulkOption) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := prepareBulk(ctx, q, table, rows, opts)
	if err != nil {
		return err
	}
	var ret []int
	for i, f := range b.sm.fields {
		if ci := b.table.columns[f.column]; f.dbFills || ci.generated || ci.identity {
			if !slices.Contains(b.write, i) {
				ret = append(ret, i)
			}
		}
	}
	unnest, err := b.unnestSQL(b.write)
	if err != nil {
		return err
	}
	insert, err := b.insertInto()
	if err != nil {
		return err
	}
	sql := insert + " SELECT * FROM " + unnest
	if len(ret) == 0 {
		return b.chunks(ctx, q, func(q Querier, lo, hi int) error {
			_, err := q.Exec(ctx, sql, b.arrays(b.write, lo, hi)...)
			return err
		})
	}
	sql += " RETURNING " + b.columnList(ret, "")
	// The returned values are read into one slice per returned column
	// (allocated once per call, not per row) and copied into rows once every
	// chunk has succeeded.
	back := make([]reflect.Value, len(ret))
	for k, ci := range ret {
		back[k] = reflect.MakeSlice(reflect.SliceOf(b.sm.fields[ci].typ), len(rows), len(rows))
	}
	err = b.chunks(ctx, q, func(q Querier, lo, hi int) error {
		pgRows, err := q.Query(ctx, sql, b.arrays(b.write, lo, hi)...)
		if err != nil {
			return err
		}
		defer pgRows.Close()
		dest := make([]any, len(ret))
		i := lo
		for pgRows.Next() {
			if i >= hi {
				return fmt.Errorf("pgkit: %s returned more rows than were inserted", b.table.name)
			}
			for k := range ret {
				dest[k] = back[k].Index(i).Addr().Interface()
			}
			if err := pgRows.Scan(dest...); err != nil {
				return err
			}
			i++
		}
		if err := pgRows.Err(); err != nil {
			return err
		}
		if i != hi {
			return fmt.Errorf("pgkit: %s returned %d rows for %d inserted", b.table.name, i-lo, hi-lo)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, ci := range ret {
		f := &b.sm.fields[ci]
		for i := range rows {
			b.field(i, f).Set(back[k].Index(i))
		}
	}
	return nil
}

// UpdateMany updates the rows of table matched by the key columns, setting
// every other written column, with one
// UPDATE ... FROM unnest(...) AS v(...) WHERE t.key = v.key per chunk.
// Returns the number of rows updated. Given a *DB, a multi-chunk call runs in
// one transaction.
//
//	n, err := pgkit.UpdateMany(ctx, db, "usage_records", usage, []string{"id"})
func UpdateMany[T any](ctx context.Context, q Querier, table string, rows []T, keys []string, opts ...BulkOption) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	if len(keys) == 0 {
		return 0, fmt.Errorf("pgkit: UpdateMany needs at least one key column")
	}
	b, err := prepareBulk(ctx, q, table, rows, opts)
	if err != nil {
		return 0, err
	}
	keyIdx, err := b.indexes("key", keys)
	if err != nil {
		return 0, err
	}
	var set []int
	for _, i := range b.write {
		if !slices.Contains(keyIdx, i) {
			set = append(set, i)
		}
	}
	if len(set) == 0 {
		return 0, fmt.Errorf("pgkit: UpdateMany: no column to set besides the keys")
	}
	if _, err := b.writable(set, false); err != nil {
		return 0, err
	}
	cols := append(append([]int(nil), keyIdx...), set...)
	unnest, err := b.unnestSQL(cols)
	if err != nil {
		return 0, err
	}
	assignments := make([]string, len(set))
	for k, ci := range set {
		c := pgx.Identifier{b.sm.fields[ci].column}.Sanitize()
		assignments[k] = c + " = v." + c
	}
	conds := make([]string, len(keyIdx))
	for k, ci := range keyIdx {
		c := pgx.Identifier{b.sm.fields[ci].column}.Sanitize()
		conds[k] = "t." + c + " = v." + c
	}
	sql := "UPDATE " + b.table.name + " AS t SET " + strings.Join(assignments, ", ") +
		" FROM " + unnest + " AS v(" + b.columnList(cols, "") + ") WHERE " + strings.Join(conds, " AND ")
	var total int64
	err = b.chunks(ctx, q, func(q Querier, lo, hi int) error {
		tag, err := q.Exec(ctx, sql, b.arrays(cols, lo, hi)...)
		total += tag.RowsAffected()
		return err
	})
	return total, err
}

// UpsertMany inserts rows, and on a conflict over the conflict columns
// updates the other written columns (or those of UpdateColumns; with
// DoNothing it skips the row), with one
// INSERT ... SELECT * FROM unnest(...) ON CONFLICT ... per chunk. Returns the
// number of rows inserted or updated. Given a *DB, a multi-chunk call runs in
// one transaction.
//
//	n, err := pgkit.UpsertMany(ctx, db, "users", users, []string{"tenant_id", "email"})
func UpsertMany[T any](ctx context.Context, q Querier, table string, rows []T, conflict []string, opts ...BulkOption) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	if len(conflict) == 0 {
		return 0, fmt.Errorf("pgkit: UpsertMany needs the conflict columns (a unique key)")
	}
	b, err := prepareBulk(ctx, q, table, rows, opts)
	if err != nil {
		return 0, err
	}
	conflictIdx, err := b.indexes("conflict", conflict)
	if err != nil {
		return 0, err
	}
	var update []int
	if len(b.opts.update) > 0 {
		if update, err = b.indexes("update", b.opts.update); err != nil {
			return 0, err
		}
	} else {
		for _, i := range b.write {
			if !slices.Contains(conflictIdx, i) {
				update = append(update, i)
			}
		}
	}
	unnest, err := b.unnestSQL(b.write)
	if err != nil {
		return 0, err
	}
	insert, err := b.insertInto()
	if err != nil {
		return 0, err
	}
	sql := insert + " SELECT * FROM " + unnest + " ON CONFLICT (" + b.columnList(conflictIdx, "") + ")"
	if b.opts.doNothing || len(update) == 0 {
		sql += " DO NOTHING"
	} else {
		assignments := make([]string, len(update))
		for k, ci := range update {
			c := pgx.Identifier{b.sm.fields[ci].column}.Sanitize()
			assignments[k] = c + " = EXCLUDED." + c
		}
		sql += " DO UPDATE SET " + strings.Join(assignments, ", ")
	}
	var total int64
	err = b.chunks(ctx, q, func(q Querier, lo, hi int) error {
		tag, err := q.Exec(ctx, sql, b.arrays(b.write, lo, hi)...)
		total += tag.RowsAffected()
		return err
	})
	return total, err
}
