// Package record lets pgkittest see the statements a pgkit DB runs, without
// a public API for it: package pgkit sets Attach at init, and the tracer
// hands each statement to the attached Sink. With nothing attached, the
// tracer's cost is one atomic load per statement.
package record

import (
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/pgkit-dev/pgkit/internal/callsite"
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
	st := Statement{Name: name, SQL: sql, Args: hashArgs(sql, args), Caller: callsite.Of(1)}
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
