package pgkit

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
)

type queryNameKey struct{}

// WithQueryName names the statements run with ctx, for metrics and logs. It
// wins over a "-- name: X" comment and over the statement's verb. Names are
// metric label values: keep them few and fixed (past Config.MaxQueryNames
// distinct names, new ones are counted as "other").
//
//	ctx = pgkit.WithQueryName(ctx, "dashboard_stats")
func WithQueryName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, queryNameKey{}, name)
}

// sqlName names a statement by its SQL text: a leading sqlc-style
// "-- name: X" comment, else its verb ("select", "insert", ...), else
// "other". A name from the context (WithQueryName) wins over it (see
// tracer.named). It never allocates: every result is a constant or a
// substring of sql.
func sqlName(sql string) string {
	s := strings.TrimLeft(sql, " \t\r\n")
	for {
		switch {
		case strings.HasPrefix(s, "--"):
			line, rest, _ := strings.Cut(s[2:], "\n")
			if name, ok := sqlcName(line); ok {
				return name
			}
			s = strings.TrimLeft(rest, " \t\r\n")
		case strings.HasPrefix(s, "/*"):
			_, rest, ok := strings.Cut(s[2:], "*/")
			if !ok {
				return "other"
			}
			s = strings.TrimLeft(rest, " \t\r\n")
		default:
			return verb(s)
		}
	}
}

// sqlcName reads "name: GetAuthor :one" (the text after "--").
func sqlcName(line string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "name:")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
	return name, validSQLName(name)
}

// validSQLName accepts a name from a SQL comment as a label value: 1 to 100
// letters, digits, '_', '-' or '.'.
func validSQLName(name string) bool {
	if name == "" || len(name) > 100 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '_' && c != '-' && c != '.' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// verbs are the statement verbs that name a statement without a name; any
// other first word is "other", so that SQL text never becomes a label.
var verbs = []string{
	"select", "insert", "update", "delete", "with", "merge", "values", "table",
	"begin", "start", "commit", "rollback", "savepoint", "release", "end", "abort",
	"copy", "create", "alter", "drop", "truncate", "comment", "grant", "revoke",
	"set", "reset", "show", "explain", "analyze", "vacuum", "cluster", "reindex", "refresh",
	"lock", "call", "do", "listen", "notify", "unlisten", "prepare", "execute",
	"deallocate", "declare", "fetch", "move", "close", "discard", "checkpoint",
}

func verb(s string) string {
	end := 0
	for end < len(s) && (s[end] >= 'a' && s[end] <= 'z' || s[end] >= 'A' && s[end] <= 'Z') {
		end++
	}
	if end == 0 {
		return "other"
	}
	for _, v := range verbs {
		if strings.EqualFold(s[:end], v) {
			return v
		}
	}
	return "other"
}

// nameRegistry bounds the query names that become metric labels: the first
// max distinct names are kept, later ones are counted as "other" (and a
// warning is logged once). Reads are lock-free: the map is copied on write,
// and writes stop at max.
type nameRegistry struct {
	names  atomic.Pointer[map[string]*nameStats]
	mu     sync.Mutex
	max    int
	other  *nameStats
	warned func(first string) // called once, when the cap is first hit
	capped bool
}

// healthQueryName names DB.Health's query, so that health checks (one per
// scrape, with pgkit_database_up) stay out of the application's series.
const healthQueryName = "pgkit_health"

func newNameRegistry(maxNames int, warned func(string)) *nameRegistry {
	r := &nameRegistry{max: maxNames, warned: warned}
	r.other = newNameStats("other")
	builtin := map[string]*nameStats{"other": r.other, healthQueryName: newNameStats(healthQueryName)}
	r.names.Store(&builtin)
	return r
}

func (r *nameRegistry) get(name string) *nameStats {
	if ns, ok := (*r.names.Load())[name]; ok {
		return ns
	}
	return r.add(name)
}

// all is every name's stats, in no order.
func (r *nameRegistry) all() []*nameStats {
	m := *r.names.Load()
	out := make([]*nameStats, 0, len(m))
	for _, ns := range m {
		out = append(out, ns)
	}
	return out
}

func (r *nameRegistry) add(name string) *nameStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.names.Load()
	if ns, ok := old[name]; ok {
		return ns
	}
	if len(old)-2 >= r.max { // "other" and the health check's name do not count
		if !r.capped {
			r.capped = true
			r.warned(name)
		}
		return r.other
	}
	// Clone: name may be a substring of a large SQL text we must not retain.
	name = strings.Clone(name)
	next := make(map[string]*nameStats, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	ns := newNameStats(name)
	next[name] = ns
	r.names.Store(&next)
	return ns
}
