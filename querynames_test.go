package pgkit

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSQLName(t *testing.T) {
	cases := map[string]string{
		"SELECT 1":                                                   "select",
		"  \n\tselect * from users":                                  "select",
		"-- name: GetUser :one\nSELECT 1":                            "GetUser",
		"-- name:   ListUsers   :many\nSELECT 1":                     "ListUsers",
		"-- plain comment\n-- name: Second :exec\nDELETE FROM x":     "Second",
		"/* hint */ UPDATE t SET a = 1":                              "update",
		"/* unterminated":                                            "other",
		"-- name: bad name with spaces; DROP\nSELECT 1":              "bad",
		"-- name: '; DROP TABLE users; --\nINSERT INTO t VALUES (1)": "insert",
		"WITH x AS (SELECT 1) SELECT * FROM x":                       "with",
		"SELECT\n1":                                                  "select",
		"frobnicate the table":                                       "other",
		"":                                                           "other",
		";":                                                          "other",
		"(SELECT 1)":                                                 "other",
		"insert into t values (1)":                                   "insert",
	}
	for sql, want := range cases {
		require.Equal(t, want, sqlName(sql), "%q", sql)
	}
	require.Equal(t, "ctx_name", queryName(WithQueryName(context.Background(), "ctx_name"), "-- name: X\nSELECT 1"))
	require.Equal(t, "X", queryName(WithQueryName(context.Background(), ""), "-- name: X\nSELECT 1"))
}

func TestSQLNameDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	tr := &tracer{obs: newObserver(DefaultMaxQueryNames, func(string) {})}
	var cs connState
	sql := "-- name: GetUser :one\nSELECT * FROM users WHERE id = $1"
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = tr.named(ctx, &cs, sql) }))
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = tr.named(ctx, &cs, "SELECT 1") }))
}

// A connection remembers the name of its last statement's SQL text: the
// memory must never name another text, nor win over the context's name.
func TestNamedRemembersOnlyTheSameText(t *testing.T) {
	tr := &tracer{obs: newObserver(DefaultMaxQueryNames, func(string) {})}
	var cs connState
	ctx := context.Background()
	a := "-- name: A\nSELECT 1"
	b := strings.Clone("-- name: B\nSELECT 1") // same length as a, other bytes
	for range 2 {
		name, ns := tr.named(ctx, &cs, a)
		require.Equal(t, "A", name)
		require.Equal(t, "A", ns.name)
		name, ns = tr.named(ctx, &cs, b)
		require.Equal(t, "B", name)
		require.Equal(t, "B", ns.name)
	}
	name, ns := tr.named(WithQueryName(ctx, "ctx"), &cs, b)
	require.Equal(t, "ctx", name)
	require.Equal(t, "ctx", ns.name)
	name, _ = tr.named(ctx, &cs, strings.Clone(a)) // equal text, other bytes
	require.Equal(t, "A", name)
}

func TestFoldSQL(t *testing.T) {
	require.Equal(t, "SELECT a, b FROM t WHERE x = 1", foldSQL("  SELECT a,\n\t\tb\r\n  FROM t   WHERE x = 1 \n", 100))
	require.Equal(t, "SELECT…", foldSQL("SELECT 1", 6))
	require.Equal(t, "héé…", foldSQL("hééé", 6), "cut on a rune boundary")
	require.Equal(t, "", foldSQL(" \n\t ", 10))
}

func TestScrubQuoted(t *testing.T) {
	require.Equal(t, `invalid input syntax for type integer: "?"`,
		scrubQuoted(`invalid input syntax for type integer: "secret"`))
	require.Equal(t, `duplicate key value violates unique constraint "users_pkey"`,
		scrubQuoted(`duplicate key value violates unique constraint "users_pkey"`, "users_pkey"))
	require.Equal(t, `value "?" for "col" and an unterminated "tail`,
		scrubQuoted(`value "x" for "col" and an unterminated "tail`, "col"))
}

// queryName is the name the tracer gives a statement run with ctx.
func queryName(ctx context.Context, sql string) string {
	t := &tracer{obs: newObserver(DefaultMaxQueryNames, func(string) {})}
	name, _ := t.named(ctx, &connState{}, sql)
	return name
}
