package pgkit

import "github.com/pgkit-dev/pgkit/internal/record"

// pgkittest records the statements a DB runs through internal/record, so
// that no public API exists only for tests.
func init() {
	record.Attach = func(db any, s *record.Sink) func() {
		d := db.(*DB)
		d.sink.Store(s)
		return func() { d.sink.CompareAndSwap(s, nil) }
	}
}
