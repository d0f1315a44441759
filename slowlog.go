package pgkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// SlowQuery is one statement that took longer than Config.SlowQueryThreshold,
// as kept by DB.SlowQueries. It holds no argument values. Its JSON (the
// dashboard's slow_queries) has time in RFC 3339 (UTC) and the duration in
// seconds, as duration_seconds; docs/http.md gives the schema.
type SlowQuery struct {
	// Time is when it ended.
	Time time.Time `json:"-"`
	// Role is where it ran: "primary", or "replica" (DB.Reader, OnReplica).
	Role     string        `json:"role"`
	Name     string        `json:"name"`
	Op       string        `json:"op"`
	Duration time.Duration `json:"-"`
	// SQL is the statement with whitespace folded, cut at Config.MaxLoggedSQL.
	SQL  string `json:"sql"`
	Rows int64  `json:"rows"`
	// SQLState is the server's error code when the statement failed.
	SQLState string `json:"sqlstate,omitempty"`
	// Plan is the headline of its generic plan, with Config.ExplainSlowQueries:
	// captured after the statement, so it comes later than the entry (and is
	// shared by the entries of the same name and SQL until the next capture,
	// at most once a minute); nil until then.
	Plan *QueryPlan `json:"plan,omitempty"`
}

// MarshalJSON writes the query with time in RFC 3339 (UTC) and
// duration_seconds.
func (q SlowQuery) MarshalJSON() ([]byte, error) {
	type plain SlowQuery
	return json.Marshal(struct {
		Time string `json:"time"`
		plain
		DurationSeconds float64 `json:"duration_seconds"`
	}{jsonTime(q.Time), plain(q), q.Duration.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (q *SlowQuery) UnmarshalJSON(b []byte) error {
	type plain SlowQuery
	in := struct {
		Time string `json:"time"`
		*plain
		DurationSeconds float64 `json:"duration_seconds"`
	}{plain: (*plain)(q)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	if in.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, in.Time)
		if err != nil {
			return err
		}
		q.Time = t
	}
	q.Duration = seconds(in.DurationSeconds)
	return nil
}

// slowRing keeps the last slow queries for DB.SlowQueries.
type slowRing struct {
	mu   sync.Mutex
	buf  []SlowQuery
	next int
	full bool
}

func (r *slowRing) add(q SlowQuery) {
	if len(r.buf) == 0 {
		return
	}
	r.mu.Lock()
	r.buf[r.next] = q
	r.next = (r.next + 1) % len(r.buf)
	r.full = r.full || r.next == 0
	r.mu.Unlock()
}

// attach gives plan to the kept queries of the statement key that have none.
func (r *slowRing) attach(key planKey, plan *QueryPlan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.buf {
		if q := &r.buf[i]; q.Name == key.name && q.SQL == key.shown && q.Plan == nil && !q.Time.IsZero() {
			q.Plan = plan
		}
	}
}

// list returns the kept queries, newest first.
func (r *slowRing) list() []SlowQuery {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	out := make([]SlowQuery, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}

// SlowQueries returns the most recent slow statements, newest first: at most
// Config.SlowQueryBuffer of them (default 100).
func (db *DB) SlowQueries() []SlowQuery { return db.slow.list() }

func newSlowRing(size int) *slowRing { return &slowRing{buf: make([]SlowQuery, size)} }

// foldSQL collapses every run of whitespace to one space and cuts the result
// at limit bytes (on a rune boundary), marking the cut with "…".
func foldSQL(sql string, limit int) string {
	var b strings.Builder
	b.Grow(min(len(sql), limit+4))
	space := false
	for _, r := range strings.TrimSpace(sql) {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v' {
			space = true
			continue
		}
		need := utf8.RuneLen(r)
		if space {
			need++
		}
		if b.Len()+need > limit {
			b.WriteString("…")
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// RedactArgType is the default Config.RedactArg: a value's type, and its
// length for strings and byte slices; never the value itself.
func RedactArgType(v any) string {
	switch v := v.(type) {
	case nil:
		return "nil"
	case string:
		return fmt.Sprintf("string(len=%d)", len(v))
	case []byte:
		return fmt.Sprintf("[]byte(len=%d)", len(v))
	default:
		return fmt.Sprintf("%T", v)
	}
}

// finished is what the tracer knows about a statement when it ends.
type finished struct {
	name     string
	op       op
	sql      string
	args     []any
	duration time.Duration
	rows     int64
	err      error
	slow     bool
	outcome  outcome
}

// logStatement writes a slow (Warn) or failed (Error) statement to the log
// and, when slow, to the ring. Canceled statements are logged at Debug: a
// caller that gave up is not a database failure.
func (t *tracer) logStatement(ctx context.Context, f *finished) {
	level := slog.LevelWarn
	msg := "pgkit: slow query"
	switch f.outcome {
	case outcomeError:
		level, msg = slog.LevelError, "pgkit: query failed"
	case outcomeCanceled:
		level, msg = slog.LevelDebug, "pgkit: query canceled"
	}
	var sqlState string
	var pgErr *pgconn.PgError
	if errors.As(f.err, &pgErr) {
		sqlState = pgErr.Code
	}
	sql := foldSQL(maskLiterals(f.sql), t.cfg.MaxLoggedSQL) // a literal may be user data
	if f.slow {
		t.ring.add(SlowQuery{Time: time.Now(), Role: t.role, Name: f.name, Op: opNames[f.op], Duration: f.duration,
			SQL: sql, Rows: f.rows, SQLState: sqlState, Plan: t.explain.plan(f.name, sql)})
		if t.explain != nil && f.op == opQuery {
			t.explain.request(f.name, sql, f.sql)
		}
	}
	if !t.logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs,
		slog.String("name", f.name),
		slog.String("op", opNames[f.op]),
		slog.Duration("duration", f.duration),
		slog.String("sql", sql),
		slog.Int64("rows", f.rows))
	if f.slow {
		attrs = append(attrs, slog.Duration("threshold", t.cfg.SlowQueryThreshold))
	}
	if sqlState != "" {
		attrs = append(attrs, slog.String("sqlstate", sqlState))
	}
	if f.err != nil {
		attrs = append(attrs, slog.String("error", scrubError(f.err, pgErr, f.args)))
	}
	if t.cfg.LogArgs && len(f.args) > 0 {
		redacted := make([]string, len(f.args))
		for i, a := range f.args {
			redacted[i] = t.cfg.RedactArg(a)
		}
		attrs = append(attrs, slog.Any("args", redacted))
	}
	t.logger.LogAttrs(ctx, level, msg, attrs...)
}

// logError is the error of a log line outside the tracer (the Writer's
// default OnError): scrubError's text, with the SQLSTATE when the server
// refused the statement.
func logError(err error) string {
	var pgErr *pgconn.PgError
	errors.As(err, &pgErr)
	text := scrubError(err, pgErr, nil)
	if pgErr != nil {
		text += " (SQLSTATE " + pgErr.Code + ")"
	}
	return text
}

// scrubError describes err (whose server error, if any, is pgErr) without
// the values of query arguments, for pgkit's log lines. PostgreSQL quotes
// offending values in its messages (`invalid input syntax for type integer:
// "…"`) and shows keys and rows in DETAIL, and pgx's encode errors print the
// value they could not encode. So: a server error is its message alone
// (DETAIL, HINT and WHERE are left out; the SQLSTATE is the caller's to add);
// double-quoted text other than the error's own identifiers becomes "?"; an
// encode error keeps the type it was for and drops the value and its cause;
// and any argument's text (of 3 bytes or more) that still appears becomes
// "?".
func scrubError(err error, pgErr *pgconn.PgError, args []any) string {
	var text string
	if pgErr != nil {
		text = scrubQuoted(pgErr.Message, pgErr.ConstraintName, pgErr.TableName, pgErr.ColumnName,
			pgErr.SchemaName, pgErr.DataTypeName)
	} else {
		text = scrubQuoted(err.Error())
	}
	text = scrubEncode(text)
	for _, a := range args {
		var v string
		switch a := a.(type) {
		case nil, bool:
			continue
		case string:
			v = a
		case []byte:
			v = string(a)
		default:
			v = fmt.Sprint(a)
		}
		if len(v) >= 3 {
			text = strings.ReplaceAll(text, v, "?")
		}
	}
	return text
}

// scrubEncode shortens pgx's encode error, which prints the value (`unable
// to encode "…" into binary format for uuid (OID 2950): cannot parse UUID
// …`), to what it says about the type: `unable to encode ? into binary
// format for uuid (OID 2950)`. A COPY whose value pgx could not encode
// comes back from the server with this text in its message.
func scrubEncode(text string) string {
	const head = "unable to encode "
	i := strings.Index(text, head)
	if i < 0 {
		return text
	}
	rest := text[i+len(head):]
	out := text[:i+len(head)] + "?"
	if j := strings.Index(rest, " format for "); j >= 0 {
		if k := strings.LastIndex(rest[:j], " into "); k >= 0 {
			if e := strings.IndexByte(rest[j:], ')'); e >= 0 {
				out += rest[k : j+e+1]
			}
		}
	}
	return out
}

// scrubQuoted replaces each "double-quoted" part of msg by "?", except the
// identifiers listed in keep.
func scrubQuoted(msg string, keep ...string) string {
	var b strings.Builder
	for {
		start := strings.IndexByte(msg, '"')
		if start < 0 {
			break
		}
		end := strings.IndexByte(msg[start+1:], '"')
		if end < 0 {
			break
		}
		quoted := msg[start+1 : start+1+end]
		b.WriteString(msg[:start+1])
		kept := false
		for _, k := range keep {
			if k != "" && quoted == k {
				kept = true
				break
			}
		}
		if kept {
			b.WriteString(quoted)
		} else {
			b.WriteString("?")
		}
		b.WriteByte('"')
		msg = msg[start+2+end:]
	}
	b.WriteString(msg)
	return b.String()
}
