package pgkit

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pgkit-dev/pgkit/internal/callsite"
)

// NPlusOne is a statement that ran more than Config.NPlusOneThreshold times
// in one unit of work: a query in a loop where one query for the whole set
// (= ANY($1), a join) would do.
type NPlusOne struct {
	// Name is the statement's query name.
	Name string
	// Runs is how many times it ran in the unit, and Duration their total
	// time, so far.
	Runs     int64
	Duration time.Duration
	// Caller is file:line of the code that issued the run that crossed the
	// threshold: the first frame outside pgkit and pgx.
	Caller string
}

// maxUnitStatements is how many distinct statements one unit of work tracks
// for N+1 loops; further ones are counted in RequestStats but not tracked,
// so a unit costs a bounded amount of memory.
const maxUnitStatements = 32

// unitRuns is one unit of work's statements, by statement: the memory N+1
// detection needs, kept with the unit's RequestStats.
type unitRuns struct {
	mu    sync.Mutex
	n     int
	runs  [maxUnitStatements]unitRun
	loops []NPlusOne // the reported ones, in order
}

type unitRun struct {
	key   uint64     // the statement: its query name's, or its SQL shape's
	ns    *nameStats // its name's counters
	count int64
	nanos int64
	loop  int // 1 + its index in loops once reported
}

// ran counts a run of the statement key, named by ns, that took d. When
// this run crossed threshold, it records the loop, issued at caller(), and
// returns it with true.
func (u *unitRuns) ran(key uint64, ns *nameStats, d time.Duration, threshold int, caller func() string) (NPlusOne, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range u.n {
		r := &u.runs[i]
		if r.key != key || r.ns != ns {
			continue
		}
		r.count++
		r.nanos += int64(d)
		switch {
		case r.loop != 0:
			u.loops[r.loop-1].Runs, u.loops[r.loop-1].Duration = r.count, time.Duration(r.nanos)
		case r.count == int64(threshold)+1:
			u.loops = append(u.loops, NPlusOne{Name: ns.name, Runs: r.count, Duration: time.Duration(r.nanos), Caller: caller()})
			r.loop = len(u.loops)
			return u.loops[r.loop-1], true
		}
		return NPlusOne{}, false
	}
	if u.n < maxUnitStatements {
		u.runs[u.n] = unitRun{key: key, ns: ns, count: 1, nanos: int64(d)}
		u.n++
	}
	return NPlusOne{}, false
}

func (u *unitRuns) reported() []NPlusOne {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]NPlusOne(nil), u.loops...)
}

// detectNPlusOne counts a finished statement in its unit of work and
// reports a loop once, when its count crosses Config.NPlusOneThreshold: a
// warning with the call site, and pgkit_nplusone_total. A statement named
// with WithQueryName is one statement whatever its SQL; else its SQL's shape
// (literals and whitespace set aside) tells statements apart.
func (t *tracer) detectNPlusOne(ctx context.Context, cs *connState, rs *reqStats, f *finished, ns *nameStats) {
	key := uint64(0)
	if _, named := ctx.Value(queryNameKey{}).(string); !named {
		key = cs.shapeOf(f.sql)
	}
	u := rs.units.Load()
	if u == nil { // the unit's first statement: one allocation per unit
		u = &unitRuns{}
		if !rs.units.CompareAndSwap(nil, u) {
			u = rs.units.Load()
		}
	}
	// From the tracer's end the first frame outside pgkit and pgx is the
	// statement's (Exec, QueryRow's Scan, the Close of Rows), in the user's
	// loop.
	loop, crossed := u.ran(key, ns, f.duration, t.cfg.NPlusOneThreshold, func() string { return callsite.Of(1) })
	if !crossed {
		return
	}
	ns.nplusone.Add(1)
	if t.logger.Enabled(ctx, slog.LevelWarn) {
		t.logger.LogAttrs(ctx, slog.LevelWarn, "pgkit: N+1 query loop: one statement per item where one for the set would do",
			slog.String("name", loop.Name), slog.Int64("runs", loop.Runs), slog.Int("threshold", t.cfg.NPlusOneThreshold),
			slog.Duration("duration", loop.Duration), slog.String("caller", loop.Caller), slog.String("sql", foldSQL(maskLiterals(f.sql), t.cfg.MaxLoggedSQL)))
	}
}

// shapeOf is a hash of sql's shape, remembered for the connection's last
// SQL text: a statement run again (the common case in a loop) costs a
// string comparison.
func (cs *connState) shapeOf(sql string) uint64 {
	if cs.shapeSQL != "" && sql == cs.shapeSQL { // equal strings sharing their bytes compare without reading them
		return cs.shape
	}
	cs.shapeSQL, cs.shape = sql, sqlShape(sql)
	if len(sql) > maxRememberedSQL {
		cs.shapeSQL = "" // not kept alive by the memory
	}
	return cs.shape
}

// sqlShape hashes sql with its literals (quoted strings, numbers) as one
// placeholder and each run of whitespace as one space (FNV-1a, without
// allocating), so that a loop that writes its values into the SQL is still
// one statement.
func sqlShape(sql string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	add := func(c byte) { h = (h ^ uint64(c)) * prime }
	space, prevIdent := false, false
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			space, prevIdent = true, false
			continue
		case c == '\'':
			for i++; i < len(sql); i++ {
				if sql[i] == '\'' {
					if i+1 < len(sql) && sql[i+1] == '\'' {
						i++
						continue
					}
					break
				}
			}
			c = '?'
		case c >= '0' && c <= '9' && !prevIdent:
			for i+1 < len(sql) && (sql[i+1] >= '0' && sql[i+1] <= '9' || sql[i+1] == '.') {
				i++
			}
			c = '?'
		}
		if space {
			add(' ')
			space = false
		}
		add(c)
		prevIdent = c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	return h
}
