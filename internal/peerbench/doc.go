// Package peerbench holds benchmarks of pgkit against other libraries that
// do the same job, in a module of its own so that those libraries never
// enter pgkit's module graph. Its benchmarks report their metrics the way
// the root package's benchAB does, so internal/benchreport reads them:
// "<side>-ns/op", "<side>-B/op", "<side>-allocs/op" and the ratio
// "pgkit/<peer>" (above 1: pgkit is faster).
//
//	cd internal/peerbench && go test -run '^$' -bench . -benchtime 5000x -count 6
package peerbench
