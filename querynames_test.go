package pgkit

import (
	"context"
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
	sql := "-- name: GetUser :one\nSELECT * FROM users WHERE id = $1"
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = queryName(ctx, sql) }))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = queryName(ctx, "SELECT 1") }))
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
