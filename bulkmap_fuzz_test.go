package pgkit

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// unquote reverses pgx.Identifier.Sanitize for one part: "a""b" -> a"b.
func unquote(t *testing.T, s string) string {
	t.Helper()
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		t.Fatalf("not a quoted identifier: %q", s)
	}
	inner := s[1 : len(s)-1]
	if strings.Contains(strings.ReplaceAll(inner, `""`, ""), `"`) {
		t.Fatalf("unescaped quote inside %q", s)
	}
	return strings.ReplaceAll(inner, `""`, `"`)
}

// FuzzParseTag: whatever a db tag holds, parsing never panics, and a column
// it accepts is quoted into exactly one identifier that means that column.
//
//	go test -run '^$' -fuzz FuzzParseTag -fuzztime 30s
func FuzzParseTag(f *testing.F) {
	for _, input := range []string{"id", "created_at,default", "-", "", ",default", "a,b", `na"me`, "x; DROP TABLE users; --", "a\x00b", "ünï", `"`, `""`} {
		f.Add(input)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		col, opt, err := parseTag(tag)
		if err != nil {
			return
		}
		if col == "" || strings.ContainsRune(col, 0) || (opt != "" && opt != "default") {
			t.Fatalf("parseTag(%q) accepted column %q option %q", tag, col, opt)
		}
		if got := unquote(t, pgx.Identifier{col}.Sanitize()); got != col {
			t.Fatalf("quoting %q gave back %q", col, got)
		}
	})
}

// FuzzTableIdent: a table name is split on dots and every part quoted; no
// input escapes its quotes.
func FuzzTableIdent(f *testing.F) {
	for _, input := range []string{"messages", "public.messages", "messages; DROP TABLE users", `a"b.c`, "", ".", "a..b", "x\x00y"} {
		f.Add(input)
	}
	f.Fuzz(func(t *testing.T, table string) {
		ident, err := tableIdent(table)
		if err != nil {
			return
		}
		quoted := ident.Sanitize()
		parts := strings.Split(table, ".")
		var got []string
		rest := quoted
		for range parts {
			// Each part is "…" with inner quotes doubled; parts are joined by dots.
			end := 1
			for end < len(rest) {
				if rest[end] == '"' {
					if end+1 < len(rest) && rest[end+1] == '"' {
						end += 2
						continue
					}
					break
				}
				end++
			}
			if end >= len(rest) {
				t.Fatalf("%q: unterminated identifier in %q", table, quoted)
			}
			got = append(got, unquote(t, rest[:end+1]))
			rest = strings.TrimPrefix(rest[end+1:], ".")
		}
		if rest != "" || strings.Join(got, ".") != table {
			t.Fatalf("%q quoted as %q reads back as %q (rest %q)", table, quoted, strings.Join(got, "."), rest)
		}
	})
}
