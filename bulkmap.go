package pgkit

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// structField is one struct field mapped to a column by its db tag.
type structField struct {
	index   []int
	column  string
	typ     reflect.Type
	dbFills bool // ",default": the database fills it; never sent, returned by InsertReturning
}

// structMap is how a struct type maps to columns.
type structMap struct {
	fields   []structField
	byColumn map[string]int
}

// structMaps caches mapStruct per type: a pure function of the type, cached
// like encoding/json caches its encoders.
var structMaps sync.Map // reflect.Type -> *structMap or error

// rowStruct returns the struct type of rows of T (a struct or a pointer to
// one) and its mapping.
func rowStruct[T any]() (reflect.Type, *structMap, error) {
	t := reflect.TypeFor[T]()
	st := t
	if st.Kind() == reflect.Pointer {
		st = st.Elem()
	}
	if st.Kind() != reflect.Struct {
		return nil, nil, fmt.Errorf("pgkit: bulk rows must be structs or pointers to structs, not %s", t)
	}
	if v, ok := structMaps.Load(st); ok {
		if err, isErr := v.(error); isErr {
			return nil, nil, err
		}
		return t, v.(*structMap), nil
	}
	sm, err := mapStruct(st)
	if err != nil {
		structMaps.Store(st, err)
		return nil, nil, err
	}
	structMaps.Store(st, sm)
	return t, sm, nil
}

// mapStruct reads the db tags of st: `db:"col"` maps a field, `db:"-"` or no
// tag skips it, `db:"col,default"` marks a column the database fills
// (a default such as created_at). Untagged embedded structs are flattened.
func mapStruct(st reflect.Type) (*structMap, error) {
	sm := &structMap{byColumn: map[string]int{}}
	var walk func(t reflect.Type, index []int) error
	walk = func(t reflect.Type, index []int) error {
		for i := range t.NumField() {
			f := t.Field(i)
			idx := append(append([]int(nil), index...), i)
			tag, tagged := f.Tag.Lookup("db")
			if !tagged && f.Anonymous && f.Type.Kind() == reflect.Struct {
				if err := walk(f.Type, idx); err != nil {
					return err
				}
				continue
			}
			if !tagged || tag == "-" || !f.IsExported() {
				continue
			}
			col, opts, err := parseTag(tag)
			if err != nil {
				return fmt.Errorf("pgkit: %s.%s: %w", st, f.Name, err)
			}
			if _, dup := sm.byColumn[col]; dup {
				return fmt.Errorf("pgkit: %s: column %q is mapped twice", st, col)
			}
			sm.byColumn[col] = len(sm.fields)
			sm.fields = append(sm.fields, structField{index: idx, column: col, typ: f.Type, dbFills: opts == "default"})
		}
		return nil
	}
	if err := walk(st, nil); err != nil {
		return nil, err
	}
	if len(sm.fields) == 0 {
		return nil, fmt.Errorf("pgkit: %s has no field with a db tag", st)
	}
	return sm, nil
}

// parseTag splits a db tag into its column and its one option.
func parseTag(tag string) (column, option string, err error) {
	column, option, _ = strings.Cut(tag, ",")
	switch {
	case column == "":
		return "", "", errors.New(`empty column name in db tag (use db:"-" to skip a field)`)
	case strings.ContainsRune(column, 0):
		return "", "", errors.New("NUL byte in db tag")
	case option != "" && option != "default":
		return "", "", fmt.Errorf("unknown db tag option %q (the only one is \"default\")", option)
	}
	return column, option, nil
}

// columnInfo is what the catalog says of one column.
type columnInfo struct {
	typ            string // format_type: the cast for the array parameter
	identity       bool   // GENERATED ... AS IDENTITY
	identityAlways bool   // GENERATED ALWAYS AS IDENTITY: written only with OVERRIDING SYSTEM VALUE
	generated      bool   // GENERATED ALWAYS AS (...) STORED: never written
	isArray        bool
}

// tableInfo is what the catalog says of a table, read once per DB (or per
// connection, for a Querier that is neither a DB nor a pgkit Tx).
type tableInfo struct {
	name    string // quoted, schema-qualified as given
	columns map[string]columnInfo
}

// catalogKey is where a connection keeps its table cache when the Querier is
// a raw pgx.Tx or pool connection.
const catalogKey = "pgkit.catalog"

// catalogCache finds the table cache for q.
func catalogCache(q Querier) *sync.Map {
	switch v := q.(type) {
	case *DB:
		return &v.catalog
	case *tx:
		if v.catalog != nil {
			return v.catalog
		}
		return connCatalog(v.Conn())
	case interface{ Conn() *pgx.Conn }:
		return connCatalog(v.Conn())
	}
	return nil
}

// connCatalog is the table cache kept on one connection.
func connCatalog(conn *pgx.Conn) *sync.Map {
	data := conn.PgConn().CustomData()
	if m, ok := data[catalogKey].(*sync.Map); ok {
		return m
	}
	m := &sync.Map{}
	data[catalogKey] = m
	return m
}

// tableIdent turns "schema.table" or "table" into a quoted identifier.
func tableIdent(table string) (pgx.Identifier, error) {
	if table == "" || strings.ContainsRune(table, 0) {
		return nil, fmt.Errorf("pgkit: invalid table name %q", table)
	}
	return pgx.Identifier(strings.Split(table, ".")), nil
}

// lookupTable reads (or recalls) the catalog's description of table. An
// unknown table is an error naming it; nothing of the name is spliced into
// SQL: it is quoted, then passed as a parameter to to_regclass.
func lookupTable(ctx context.Context, q Querier, table string) (*tableInfo, error) {
	cache := catalogCache(q)
	if cache != nil {
		if ti, ok := cache.Load(table); ok {
			return ti.(*tableInfo), nil
		}
	}
	ident, err := tableIdent(table)
	if err != nil {
		return nil, err
	}
	ti := &tableInfo{name: ident.Sanitize(), columns: map[string]columnInfo{}}
	rows, err := q.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod),
			a.attidentity <> '', a.attidentity = 'a', a.attgenerated <> '', t.typcategory = 'A'
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, ti.name)
	if err != nil {
		return nil, fmt.Errorf("pgkit: reading the columns of %s: %w", ti.name, err)
	}
	for rows.Next() {
		var name string
		var ci columnInfo
		if err := rows.Scan(&name, &ci.typ, &ci.identity, &ci.identityAlways, &ci.generated, &ci.isArray); err != nil {
			rows.Close()
			return nil, err
		}
		ti.columns[name] = ci
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgkit: reading the columns of %s: %w", ti.name, err)
	}
	if len(ti.columns) == 0 {
		return nil, fmt.Errorf("pgkit: table %s does not exist (or has no columns visible here)", ti.name)
	}
	if cache != nil {
		cache.Store(table, ti)
	}
	return ti, nil
}

// column checks that table has col and returns its catalog entry.
func (ti *tableInfo) column(col string) (columnInfo, error) {
	ci, ok := ti.columns[col]
	if !ok {
		return ci, fmt.Errorf("pgkit: table %s has no column %s", ti.name, pgx.Identifier{col}.Sanitize())
	}
	return ci, nil
}
