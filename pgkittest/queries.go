package pgkittest

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/record"
)

// DefaultNPlusOne is how many times NoNPlusOne lets one statement run with
// different arguments in its block before it calls it a loop.
const DefaultNPlusOne = 5

// record runs fn with a recorder on db and returns the statements db ran
// meanwhile, from any goroutine.
func recordStatements(db *pgkit.DB, fn func()) []record.Statement {
	var sink record.Sink
	detach := record.Attach(db, &sink)
	defer detach()
	fn()
	return sink.Statements()
}

// CountQueries runs fn and returns how many statements db ran meanwhile, by
// query name (pgkit.WithQueryName, else the name pgkit derives from the
// SQL: see pgkit.WithQueryName). Statements of every goroutine count.
func CountQueries(t testing.TB, db *pgkit.DB, fn func()) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, st := range recordStatements(db, fn) {
		counts[st.Name]++
	}
	return counts
}

// ExpectQueries runs fn and fails t unless db ran exactly want's statements
// meanwhile, by query name, listing the difference.
func ExpectQueries(t testing.TB, db *pgkit.DB, want map[string]int, fn func()) {
	t.Helper()
	got := CountQueries(t, db, fn)
	if maps.Equal(got, want) {
		return
	}
	var diff []string
	for _, name := range slices.Sorted(maps.Keys(mergeKeys(got, want))) {
		if got[name] != want[name] {
			diff = append(diff, fmt.Sprintf("  %s: ran %d, want %d", name, got[name], want[name]))
		}
	}
	t.Errorf("pgkittest: the block ran other statements than expected:\n%s", strings.Join(diff, "\n"))
}

func mergeKeys(a, b map[string]int) map[string]int {
	m := maps.Clone(a)
	for k := range b {
		m[k] += 0
	}
	return m
}

// NPlusOneOption configures NoNPlusOne.
type NPlusOneOption func(*int)

// Threshold lets one statement run up to n times with different arguments
// in the block (default DefaultNPlusOne).
func Threshold(n int) NPlusOneOption { return func(max *int) { *max = n } }

// NoNPlusOne runs fn and fails t when one statement ran more than the
// threshold's times in it with different arguments: a query in a loop
// where one query for the whole set would do (the "N+1" of ORMs). Runs are
// of the same statement when they have the same query name and the same
// SQL once literals and whitespace are set aside, so a loop that writes its
// values into the SQL counts too. The failure names the statement, how
// many times it ran, and the file:line that issued it.
func NoNPlusOne(t testing.TB, db *pgkit.DB, fn func(), opts ...NPlusOneOption) {
	t.Helper()
	limit := DefaultNPlusOne
	for _, o := range opts {
		o(&limit)
	}
	for _, g := range groupBy(recordStatements(db, fn)) {
		if g.runs <= limit || len(g.args) < 2 {
			continue
		}
		callers := slices.SortedFunc(maps.Keys(g.callers), func(a, b string) int { return g.callers[b] - g.callers[a] })
		t.Errorf("pgkittest: N+1: %q ran %d times with %d different arguments (threshold %d), issued at %s: load the set with one statement (= ANY($1), a join) instead\n  SQL: %s",
			g.name, g.runs, len(g.args), limit, strings.Join(callers, ", "), oneLine(g.sql))
	}
}

// group is the runs of one statement.
type group struct {
	name, sql string
	runs      int
	args      map[uint64]bool
	callers   map[string]int
}

// groupBy groups statements by query name and SQL shape (a name pgkit
// derives from SQL is coarse, such as "select"; the shape tells those
// apart, and folds a loop that writes its values into the SQL), in the
// order of their first run.
func groupBy(statements []record.Statement) []*group {
	groups := map[string]*group{}
	var order []*group
	for _, st := range statements {
		k := st.Name + "\x00" + shape(st.SQL)
		g, ok := groups[k]
		if !ok {
			g = &group{name: st.Name, sql: st.SQL, args: map[uint64]bool{}, callers: map[string]int{}}
			groups[k] = g
			order = append(order, g)
		}
		g.runs++
		g.args[st.Args] = true
		g.callers[st.Caller]++
	}
	return order
}

var (
	literals   = regexp.MustCompile(`'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b`)
	whitespace = regexp.MustCompile(`\s+`)
)

// shape is sql with its literals replaced by ? and its whitespace folded,
// so that a loop that builds its SQL with values still shows as one
// statement.
func shape(sql string) string {
	return whitespace.ReplaceAllString(literals.ReplaceAllString(strings.TrimSpace(sql), "?"), " ")
}

func oneLine(sql string) string {
	s := whitespace.ReplaceAllString(strings.TrimSpace(sql), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
