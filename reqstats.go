package pgkit

import (
	"context"
	"sync/atomic"
	"time"
)

// RequestStats is the database work done with one context: what
// pgkit.StatsFrom returns after pgkit.WithStats.
type RequestStats struct {
	// Queries counts queries, batches and copies.
	Queries int64
	// Duration is their total time, with the time pgx spent preparing them
	// (it prepares each new statement once per connection). With statements
	// running in parallel goroutines it can exceed the request's wall time.
	Duration time.Duration
	// Slow counts those slower than Config.SlowQueryThreshold.
	Slow int64
	// Errors counts those that failed (not those canceled).
	Errors int64
	// NPlusOne lists the statements that ran more than
	// Config.NPlusOneThreshold times, in the order they crossed it.
	NPlusOne []NPlusOne
}

// reqStats is the mutable form, safe for statements run from several
// goroutines of one request.
type reqStats struct {
	queries, nanos, slow, errors atomic.Int64
	units                        atomic.Pointer[unitRuns] // N+1 detection's; nil until the first statement
}

type reqStatsKey struct{}

// WithStats returns a context that counts the database work done with it
// (and contexts derived from it), for StatsFrom. It is the per-request
// query-time accounting a middleware sets up; see Middleware.
func WithStats(ctx context.Context) context.Context {
	return context.WithValue(ctx, reqStatsKey{}, &reqStats{})
}

// StatsFrom returns the database work done so far with ctx, and false when
// ctx does not come from WithStats.
func StatsFrom(ctx context.Context) (RequestStats, bool) {
	s, ok := ctx.Value(reqStatsKey{}).(*reqStats)
	if !ok {
		return RequestStats{}, false
	}
	rs := RequestStats{
		Queries:  s.queries.Load(),
		Duration: time.Duration(s.nanos.Load()),
		Slow:     s.slow.Load(),
		Errors:   s.errors.Load(),
	}
	if u := s.units.Load(); u != nil {
		rs.NPlusOne = u.reported()
	}
	return rs, true
}

func (s *reqStats) add(count bool, d time.Duration, slow, failed bool) {
	if count {
		s.queries.Add(1)
	}
	s.nanos.Add(int64(d))
	if slow {
		s.slow.Add(1)
	}
	if failed {
		s.errors.Add(1)
	}
}
