package pgkit

import (
	"context"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzz targets of the parsing pgkit does on untrusted or unbounded input.
// Each runs its corpus in every go test; explore with, for example:
//
//	go test -run '^$' -fuzz FuzzQueryName -fuzztime 30s
//
// make fuzz runs each for FUZZTIME.

// FuzzQueryName: whatever the SQL, its name is a bounded label value: a verb
// from the list, "other", or a sqlc name of at most 100 safe characters.
func FuzzQueryName(f *testing.F) {
	for _, s := range []string{"SELECT 1", "-- name: GetUser :one\nSELECT 1", "/* x */ update t", "/* open", "--", "-- name: \n", "\x00", "WITH x", "ＳＥＬＥＣＴ 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		name := queryName(context.Background(), sql)
		if name == "other" || slices.Contains(verbs, name) {
			return
		}
		if !validSQLName(name) || !strings.Contains(sql, name) {
			t.Fatalf("sqlName(%q) = %q: neither a verb, other, nor a sqlc name from the SQL", sql, name)
		}
	})
}

// FuzzFoldSQL: the logged SQL is cut within its limit, has no whitespace runs
// and stays valid UTF-8.
func FuzzFoldSQL(f *testing.F) {
	for _, s := range []string{"SELECT  1\n\tFROM t", "", "   ", "héé\u00a0x", "\xff\xfe"} {
		f.Add(s, 10)
	}
	f.Fuzz(func(t *testing.T, sql string, limit int) {
		limit = limit%2000 + 1
		if limit < 1 {
			limit = -limit + 1
		}
		got := foldSQL(sql, limit)
		body := strings.TrimSuffix(got, "…")
		if len(body) > limit {
			t.Fatalf("foldSQL(%q, %d) = %q: longer than the limit", sql, limit, got)
		}
		for _, ws := range []string{"  ", "\n", "\t", "\r"} {
			if strings.Contains(got, ws) {
				t.Fatalf("foldSQL(%q) = %q still has %q", sql, got, ws)
			}
		}
		if utf8.ValidString(sql) && !utf8.ValidString(got) {
			t.Fatalf("foldSQL(%q) = %q is not valid UTF-8", sql, got)
		}
	})
}

// FuzzOpenConfig: Open, given any URL text around a password, refuses or
// accepts without panicking and never puts the password in its error: not
// in its text, nor in %#v or %+v of any error of its chain, nor in a field
// errors.As would hand out (ReachableText).
func FuzzOpenConfig(f *testing.F) {
	for _, s := range []string{"host/db", "host:5432/db?pool_max_conns=x", "[::1]:x/db", "h/db?statement_timeout=-5", "h/db?sslmode=bogus", "%zz"} {
		f.Add(s, int32(4))
	}
	const secret = "Fuzz-S3cret-Pw"
	f.Fuzz(func(t *testing.T, rest string, maxConns int32) {
		for _, url := range []string{"postgres://u:" + secret + "@" + rest, "host=h password=" + secret + " " + rest} {
			// As a replica's URL: parsed as Open parses it, without the
			// network (Open's replica checks would dial every fuzzed host).
			replicas, err := (&Config{ReplicaURLs: []string{url}}).replicaConfigs()
			if err != nil && strings.Contains(ReachableText(err), secret) {
				t.Fatalf("ReplicaURLs %q: the error holds the password: %#v", url, err)
			}
			if err == nil && strings.Contains(redactedURL(replicas[0]), secret) {
				t.Fatalf("Config().ReplicaURLs shows the password: %s", redactedURL(replicas[0]))
			}
			db, err := Open(context.Background(), Config{URL: url, MaxConns: maxConns, LazyConnect: true})
			if err != nil {
				if strings.Contains(ReachableText(err), secret) {
					t.Fatalf("Open(%q): the error holds the password: %#v", url, err)
				}
				continue
			}
			if strings.Contains(db.Config().URL, secret) {
				t.Fatalf("Config().URL shows the password: %s", db.Config().URL)
			}
			db.Close()
		}
	})
}
