package pgkit_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

const allTypesTable = `CREATE TABLE all_types (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	i2 smallint, i4 integer, i8 bigint, t text, b boolean, f8 double precision,
	num numeric(12,4), ts timestamptz, d date, by bytea, u uuid, j json, jb jsonb,
	null_text text, null_int bigint, null_ts timestamptz, null_pg text,
	doubled bigint GENERATED ALWAYS AS (i8 * 2) STORED,
	created_at timestamptz NOT NULL DEFAULT now()
)`

type allTypes struct {
	ID        int64          `db:"id"`
	I2        int16          `db:"i2"`
	I4        int32          `db:"i4"`
	I8        int64          `db:"i8"`
	T         string         `db:"t"`
	B         bool           `db:"b"`
	F8        float64        `db:"f8"`
	Num       float64        `db:"num"`
	TS        time.Time      `db:"ts"`
	D         time.Time      `db:"d"`
	By        []byte         `db:"by"`
	U         string         `db:"u"`
	J         map[string]any `db:"j"`
	JB        map[string]any `db:"jb"`
	NullText  *string        `db:"null_text"`
	NullInt   sql.NullInt64  `db:"null_int"`
	NullTS    *time.Time     `db:"null_ts"`
	NullPG    pgtype.Text    `db:"null_pg"`
	Doubled   int64          `db:"doubled"`
	CreatedAt time.Time      `db:"created_at,default"`
	Ignored   string         `db:"-"`
	untagged  int            //nolint:unused // unexported: the mapping must skip it
}

func sampleRow(i int) allTypes {
	text := fmt.Sprintf("text %d", i)
	r := allTypes{
		I2: int16(i), I4: int32(i * 10), I8: int64(i) * 1_000_000_000, T: fmt.Sprintf("row %d ✓ 'quoted' \"double\"", i),
		B: i%2 == 0, F8: float64(i) + 0.5, Num: float64(i) + 0.1234,
		TS: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Hour),
		D:  time.Date(2026, 1, 1+i%28, 0, 0, 0, 0, time.UTC), By: []byte{0, byte(i), 0xff},
		U: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), J: map[string]any{"n": float64(i)}, JB: map[string]any{"k": "v", "n": float64(i)},
		Ignored: "never written",
	}
	if i%3 != 0 { // every third row has NULLs
		ts := r.TS.Add(time.Minute)
		r.NullText, r.NullInt, r.NullTS, r.NullPG = &text, sql.NullInt64{Int64: int64(i), Valid: true}, &ts, pgtype.Text{String: text, Valid: true}
	}
	return r
}

func readAllTypes(t *testing.T, db *pgkit.DB) []allTypes {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT id, i2, i4, i8, t, b, f8, num::float8, ts, d, by, u::text, j, jb,
		null_text, null_int, null_ts, null_pg, doubled, created_at FROM all_types ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	var out []allTypes
	for rows.Next() {
		var r allTypes
		require.NoError(t, rows.Scan(&r.ID, &r.I2, &r.I4, &r.I8, &r.T, &r.B, &r.F8, &r.Num, &r.TS, &r.D, &r.By, &r.U, &r.J, &r.JB,
			&r.NullText, &r.NullInt, &r.NullTS, &r.NullPG, &r.Doubled, &r.CreatedAt))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

// requireSameData compares what was written with what was read, field by field.
func requireSameData(t *testing.T, want, got allTypes) {
	t.Helper()
	require.Equal(t, want.I2, got.I2)
	require.Equal(t, want.I4, got.I4)
	require.Equal(t, want.I8, got.I8)
	require.Equal(t, want.T, got.T)
	require.Equal(t, want.B, got.B)
	require.Equal(t, want.F8, got.F8)
	require.InDelta(t, want.Num, got.Num, 1e-9)
	require.True(t, want.TS.Equal(got.TS), "%v %v", want.TS, got.TS)
	require.Equal(t, want.D.Format(time.DateOnly), got.D.Format(time.DateOnly))
	require.Equal(t, want.By, got.By)
	require.Equal(t, want.U, got.U)
	require.Equal(t, want.J, got.J)
	require.Equal(t, want.JB, got.JB)
	require.Equal(t, want.NullText, got.NullText)
	require.Equal(t, want.NullInt, got.NullInt)
	if want.NullTS == nil {
		require.Nil(t, got.NullTS)
	} else {
		require.True(t, want.NullTS.Equal(*got.NullTS))
	}
	require.Equal(t, want.NullPG, got.NullPG)
	require.Equal(t, want.I8*2, got.Doubled)
}

func TestBulkRoundTripEveryType(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	_, err := db.Exec(ctx, allTypesTable)
	require.NoError(t, err)

	in := make([]allTypes, 9)
	for i := range in {
		in[i] = sampleRow(i + 1)
	}
	require.NoError(t, pgkit.InsertReturning(ctx, db, "all_types", in))
	for i := range in {
		require.Positive(t, in[i].ID)
		if i > 0 {
			require.Greater(t, in[i].ID, in[i-1].ID, "ids come back in input order")
		}
		require.Equal(t, in[i].I8*2, in[i].Doubled, "generated columns come back")
		require.WithinDuration(t, time.Now(), in[i].CreatedAt, time.Minute, "defaults come back")
	}
	got := readAllTypes(t, db)
	require.Len(t, got, len(in))
	for i := range in {
		require.Equal(t, in[i].ID, got[i].ID)
		requireSameData(t, in[i], got[i])
	}

	// COPY writes the same values.
	copied := make([]*allTypes, 4)
	for i := range copied {
		r := sampleRow(100 + i)
		copied[i] = &r
	}
	n, err := pgkit.CopyInsert(ctx, db, "all_types", copied)
	require.NoError(t, err)
	require.Equal(t, int64(4), n)
	got = readAllTypes(t, db)
	require.Len(t, got, len(in)+4)
	for i, c := range copied {
		requireSameData(t, *c, got[len(in)+i])
	}

	// UpdateMany by id, then UpsertMany: every type travels both ways.
	for i := range in {
		in[i].T, in[i].NullText, in[i].JB = "updated", nil, map[string]any{"updated": true}
	}
	n, err = pgkit.UpdateMany(ctx, db, "all_types", in, []string{"id"}, pgkit.Columns("id", "t", "null_text", "jb", "ts", "num", "by", "u"))
	require.NoError(t, err)
	require.Equal(t, int64(len(in)), n)
	got = readAllTypes(t, db)
	for i := range in {
		requireSameData(t, in[i], got[i])
	}

	// Empty input is a no-op.
	n, err = pgkit.CopyInsert(ctx, db, "all_types", []allTypes{})
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, pgkit.InsertReturning(ctx, db, "all_types", []allTypes(nil)))
	n, err = pgkit.UpdateMany(ctx, db, "all_types", []allTypes{}, []string{"id"})
	require.NoError(t, err)
	require.Zero(t, n)
	require.Len(t, readAllTypes(t, db), len(in)+4)
}

func TestBulkRefusesBadNamesBeforeSending(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()

	type unknownColumn struct {
		ID   string `db:"id"`
		Name string `db:"name"`
		Nope string `db:"nope"`
	}
	_, err := pgkit.CopyInsert(ctx, db, "tenants", []unknownColumn{{ID: "x", Name: "x"}})
	require.ErrorContains(t, err, `has no column "nope"`)
	require.ErrorContains(t, err, `"tenants"`)
	require.Equal(t, 0, tenantCount(t, db, "x"))

	type tenant struct {
		ID   string `db:"id"`
		Name string `db:"name"`
	}
	_, err = pgkit.CopyInsert(ctx, db, "messages; DROP TABLE users", []tenant{{"x", "x"}})
	require.ErrorContains(t, err, `table "messages; DROP TABLE users" does not exist`)
	err = pgkit.InsertReturning(ctx, db, `tenants"; DROP TABLE users; --`, []tenant{{"x", "x"}})
	require.ErrorContains(t, err, "does not exist")

	type quoted struct {
		ID   string `db:"id"`
		Evil string `db:"name\" = 'x'; DROP TABLE users; --"`
	}
	_, err = pgkit.UpsertMany(ctx, db, "tenants", []quoted{{"x", "x"}}, []string{"id"})
	require.ErrorContains(t, err, "has no column")

	var users int
	require.NoError(t, db.QueryRow(ctx, `SELECT COUNT(*) FROM users`).Scan(&users), "users is intact")

	type readOnly struct {
		ID int64 `db:"id"`
	}
	_, err = pgkit.CopyInsert(ctx, db, "users", []readOnly{{1}}, pgkit.Columns("id"))
	require.ErrorContains(t, err, "cannot be written by COPY")

	_, err = pgkit.CopyInsert(ctx, db, "tenants", []int{1})
	require.ErrorContains(t, err, "must be structs")
	type noTags struct{ A int }
	_, err = pgkit.CopyInsert(ctx, db, "tenants", []noTags{{1}})
	require.ErrorContains(t, err, "no field with a db tag")
}

type tenantRow struct {
	ID   string `db:"id"`
	Name string `db:"name"`
}

type messageRow struct {
	ID             int64     `db:"id"`
	TenantID       string    `db:"tenant_id"`
	ConversationID int64     `db:"conversation_id"`
	Role           string    `db:"role"`
	Content        string    `db:"content"`
	Tokens         int32     `db:"tokens"`
	CreatedAt      time.Time `db:"created_at,default"`
}

// newConversation makes a tenant, a user and a conversation for messages.
func newConversation(t testing.TB, db *pgkit.DB) int64 {
	t.Helper()
	ctx := context.Background()
	var convID int64
	require.NoError(t, db.QueryRow(ctx, `WITH t AS (INSERT INTO tenants (id, name) VALUES ('acme', 'Acme') RETURNING id),
		u AS (INSERT INTO users (tenant_id, email) SELECT id, 'ann@acme' FROM t RETURNING id, tenant_id)
		INSERT INTO conversations (tenant_id, user_id) SELECT tenant_id, id FROM u RETURNING id`).Scan(&convID))
	return convID
}

func messages(convID int64, n, from int) []messageRow {
	out := make([]messageRow, n)
	for i := range out {
		out[i] = messageRow{TenantID: "acme", ConversationID: convID, Role: "user", Content: fmt.Sprintf("message %d", from+i), Tokens: int32(from + i)}
	}
	return out
}

func TestBulkChunkBoundaries(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	convID := newConversation(t, db)
	const chunk = 7
	total := 0
	for _, n := range []int{chunk - 1, chunk, chunk + 1, 10*chunk + 3} {
		rows := messages(convID, n, total)
		require.NoError(t, pgkit.InsertReturning(ctx, db, "messages", rows, pgkit.ChunkSize(chunk)))
		for i := 1; i < n; i++ {
			require.Greater(t, rows[i].ID, rows[i-1].ID)
		}
		total += n
		var count int
		var maxContent string
		require.NoError(t, db.QueryRow(ctx, `SELECT COUNT(*), max(id)::text FROM messages`).Scan(&count, &maxContent))
		require.Equal(t, total, count, "n=%d", n)
		require.Equal(t, fmt.Sprint(rows[n-1].ID), maxContent)

		for i := range rows {
			rows[i].Tokens = -int32(i)
		}
		updated, err := pgkit.UpdateMany(ctx, db, "messages", rows, []string{"id"}, pgkit.ChunkSize(chunk), pgkit.Columns("id", "tokens"))
		require.NoError(t, err)
		require.Equal(t, int64(n), updated)
		upserted, err := pgkit.UpsertMany(ctx, db, "messages", rows, []string{"id"}, pgkit.ChunkSize(chunk),
			pgkit.Columns("id", "tenant_id", "conversation_id", "role", "content", "tokens"), pgkit.UpdateColumns("content"))
		require.NoError(t, err)
		require.Equal(t, int64(n), upserted)
	}
}

func TestBulkMultiChunkIsAllOrNothing(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	rows := make([]tenantRow, 25)
	for i := range rows {
		rows[i] = tenantRow{ID: fmt.Sprint("t", i), Name: "n"}
	}
	rows[22].ID = rows[3].ID // a duplicate key in the third chunk of ten
	err := pgkit.InsertReturning(ctx, db, "tenants", rows, pgkit.ChunkSize(10))
	require.ErrorContains(t, err, "23505")
	var count int
	require.NoError(t, db.QueryRow(ctx, `SELECT COUNT(*) FROM tenants`).Scan(&count))
	require.Zero(t, count, "the first two chunks were rolled back with the third")

	_, err = pgkit.UpsertMany(ctx, db, "tenants", rows, []string{"id"}, pgkit.ChunkSize(10))
	require.NoError(t, err, "an upsert absorbs the duplicate")
	require.NoError(t, db.QueryRow(ctx, `SELECT COUNT(*) FROM tenants`).Scan(&count))
	require.Equal(t, 24, count)

	// Inside the caller's transaction the chunks are the caller's to commit.
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		more := []tenantRow{{"x1", "n"}, {"x2", "n"}, {"x3", "n"}}
		if err := pgkit.InsertReturning(ctx, tx, "tenants", more, pgkit.ChunkSize(2)); err != nil {
			return err
		}
		return fmt.Errorf("changed my mind")
	})
	require.ErrorContains(t, err, "changed my mind")
	require.Equal(t, 0, tenantCount(t, db, "x1"))
}

// TestInsertReturningFillsRowsOnlyOnSuccess: a multi-chunk InsertReturning
// that fails in its last chunk rolls back the earlier ones, and leaves the
// caller's rows as they were: no ids or defaults of rows that were never
// committed. Inside the caller's transaction likewise. A call that succeeds
// fills every row.
func TestInsertReturningFillsRowsOnlyOnSuccess(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	convID := newConversation(t, db)

	rows := messages(convID, 25, 0)
	rows[22].Role = "robot" // breaks the CHECK, in the third chunk of ten
	want := slices.Clone(rows)
	err := pgkit.InsertReturning(ctx, db, "messages", rows, pgkit.ChunkSize(10))
	require.ErrorContains(t, err, "23514")
	n, err := countMessages(db)
	require.NoError(t, err)
	require.Zero(t, n, "the first two chunks were rolled back with the third")
	require.Equal(t, want, rows, "the caller's rows are untouched")

	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		return pgkit.InsertReturning(ctx, tx, "messages", rows, pgkit.ChunkSize(10))
	})
	require.ErrorContains(t, err, "23514")
	require.Equal(t, want, rows, "the caller's rows are untouched")

	rows[22].Role = "user"
	require.NoError(t, pgkit.InsertReturning(ctx, db, "messages", rows, pgkit.ChunkSize(10)))
	for i, r := range rows {
		require.NotZero(t, r.ID, "row %d", i)
		require.False(t, r.CreatedAt.IsZero(), "row %d", i)
		if i > 0 {
			require.Greater(t, r.ID, rows[i-1].ID, "input order")
		}
	}
	var content string
	require.NoError(t, db.QueryRow(ctx, `SELECT content FROM messages WHERE id = $1`, rows[17].ID).Scan(&content))
	require.Equal(t, rows[17].Content, content)
}

func TestBulkUpsertDoNothingAndUpdate(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	n, err := pgkit.UpsertMany(ctx, db, "tenants", []tenantRow{{"a", "A"}, {"b", "B"}}, []string{"id"})
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	n, err = pgkit.UpsertMany(ctx, db, "tenants", []tenantRow{{"a", "A2"}, {"c", "C"}}, []string{"id"}, pgkit.DoNothing())
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "only c was new")
	n, err = pgkit.UpsertMany(ctx, db, "tenants", []tenantRow{{"a", "A3"}, {"b", "B3"}}, []string{"id"})
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	var names string
	require.NoError(t, db.QueryRow(ctx, `SELECT string_agg(name, ',' ORDER BY id) FROM tenants`).Scan(&names))
	require.Equal(t, "A3,B3,C", names)
}

func TestBulkHundredThousandRows(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	convID := newConversation(t, db)
	const n = 100_000

	copied, err := pgkit.CopyInsert(ctx, db, "messages", messages(convID, n, 0))
	require.NoError(t, err)
	require.Equal(t, int64(n), copied)

	rows := messages(convID, n, n)
	require.NoError(t, pgkit.InsertReturning(ctx, db, "messages", rows))
	require.Positive(t, rows[0].ID)
	require.Equal(t, rows[0].ID+n-1, rows[n-1].ID, "one sequence, in order")

	for i := range rows {
		rows[i].Content = strings.ToUpper(rows[i].Content)
	}
	updated, err := pgkit.UpdateMany(ctx, db, "messages", rows, []string{"id"}, pgkit.Columns("id", "content"))
	require.NoError(t, err)
	require.Equal(t, int64(n), updated)

	upserted, err := pgkit.UpsertMany(ctx, db, "messages", rows, []string{"id"},
		pgkit.Columns("id", "tenant_id", "conversation_id", "role", "content", "tokens"), pgkit.UpdateColumns("tokens"))
	require.NoError(t, err)
	require.Equal(t, int64(n), upserted)

	var count, upper int
	require.NoError(t, db.QueryRow(ctx, `SELECT COUNT(*), COUNT(*) FILTER (WHERE content LIKE 'MESSAGE %') FROM messages`).Scan(&count, &upper))
	require.Equal(t, 2*n, count)
	require.Equal(t, n, upper)
}

func TestBulkArrayColumnsGoThroughCopyOnly(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TABLE tagged (id bigint GENERATED ALWAYS AS IDENTITY, tags text[] NOT NULL)`)
	require.NoError(t, err)
	type tagged struct {
		ID   int64    `db:"id"`
		Tags []string `db:"tags"`
	}
	rows := []tagged{{Tags: []string{"a", "b"}}, {Tags: []string{}}}
	err = pgkit.InsertReturning(ctx, db, "tagged", rows)
	require.ErrorContains(t, err, "column tags of \"tagged\" is an array (text[])")
	require.ErrorContains(t, err, "write it with CopyInsert")
	n, err := pgkit.CopyInsert(ctx, db, "tagged", rows)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	var got [][]string
	r, err := db.Query(ctx, `SELECT tags FROM tagged ORDER BY id`)
	require.NoError(t, err)
	got, err = pgx.CollectRows(r, pgx.RowTo[[]string])
	require.NoError(t, err)
	require.Equal(t, [][]string{{"a", "b"}, {}}, got)
}
