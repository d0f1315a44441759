// Package record lets pgkittest see the statements a pgkit DB runs, without
// a public API for it: package pgkit sets Attach at init, and the tracer
// hands each statement to the attached Sink. With nothing attached, the
// tracer's cost is one atomic load per statement.
package record

import (
	"fmt"
	"hash/maphash"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// Statement is one statement a DB ran while a Sink was attached.
type Statement struct {
	Name   string // its query name (WithQueryName, else derived from SQL)
	SQL    string
	Args   uint64 // a hash of its SQL text and its arguments' values: equal when both are
	Caller string // file:line of the first caller outside pgkit and pgx
}

// Sink collects statements; safe for concurrent use.
type Sink struct {
	mu   sync.Mutex
	list []Statement
}

// Statements returns what the sink collected, in order.
func (s *Sink) Statements() []Statement {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Statement(nil), s.list...)
}

// Add records a statement named name with sql and args, issued from the
// calling goroutine's stack (skip frames above the caller of Add).
func (s *Sink) Add(name, sql string, args []any) {
	st := Statement{Name: name, SQL: sql, Args: hashArgs(sql, args), Caller: caller()}
	s.mu.Lock()
	s.list = append(s.list, st)
	s.mu.Unlock()
}

// Attach attaches s to db, a *pgkit.DB, until the returned function is
// called. Package pgkit sets it.
var Attach func(db any, s *Sink) (detach func())

var seed = maphash.MakeSeed()

func hashArgs(sql string, args []any) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteString(sql)
	for _, a := range args {
		fmt.Fprintf(&h, "%T\x00%v\x00", a, a)
	}
	return h.Sum64()
}

// caller is file:line of the first frame that is neither pgkit's (its root
// package, internal packages and pgkittest) nor pgx's nor the runtime's.
func caller() string {
	var pcs [64]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if !inLibrary(f.Function) {
			return f.File + ":" + strconv.Itoa(f.Line)
		}
		if !more {
			return "unknown"
		}
	}
}

func inLibrary(fn string) bool {
	for _, p := range []string{"github.com/pgkit-dev/pgkit.", "github.com/pgkit-dev/pgkit/internal/", "github.com/pgkit-dev/pgkit/pgkittest.",
		"github.com/jackc/", "runtime.", "sync.", "testing."} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}
