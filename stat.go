package pgkit

import (
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolStats is a snapshot of the pool, in the terms of HikariCP and
// SQLAlchemy as README's table maps them.
type PoolStats struct {
	// Size is the number of open connections (idle, acquired and being opened).
	Size int32 `json:"size"`
	// Acquired is the number checked out (SQLAlchemy's checkedout()).
	Acquired int32 `json:"acquired"`
	// Idle is the number ready in the pool (SQLAlchemy's checkedin()).
	Idle int32 `json:"idle"`
	// Constructing is the number being opened right now.
	Constructing int32 `json:"constructing"`
	// Max is MaxConns.
	Max int32 `json:"max"`
	// Utilization is Acquired / Max, from 0 to 1.
	Utilization float64 `json:"utilization"`
	// Waiting is the number of callers waiting for a connection right now.
	Waiting int64 `json:"waiting"`

	// AcquireCount counts successful checkouts.
	AcquireCount int64 `json:"acquire_count"`
	// EmptyAcquireCount counts checkouts that had to wait for a connection.
	EmptyAcquireCount int64 `json:"empty_acquire_count"`
	// CanceledAcquireCount counts checkouts abandoned by their context.
	CanceledAcquireCount int64 `json:"canceled_acquire_count"`
	// AcquireTimeouts counts checkouts that hit AcquireTimeout.
	AcquireTimeouts int64 `json:"acquire_timeouts"`
	// AcquireWait is the total time spent in successful checkouts.
	AcquireWait time.Duration `json:"-"`
	// EmptyAcquireWait is the part of AcquireWait spent waiting.
	EmptyAcquireWait time.Duration `json:"-"`
	// NewConns counts connections opened.
	NewConns int64 `json:"new_conns"`
	// ClosedForLifetime counts connections closed by MaxConnLifetime.
	ClosedForLifetime int64 `json:"closed_for_lifetime"`
	// ClosedForIdle counts connections closed by MaxConnIdleTime.
	ClosedForIdle int64 `json:"closed_for_idle"`
}

// MarshalJSON writes the stats with snake_case keys and the wait times in
// seconds, as acquire_wait_seconds and empty_acquire_wait_seconds.
func (s PoolStats) MarshalJSON() ([]byte, error) {
	type plain PoolStats
	return json.Marshal(struct {
		plain
		AcquireWait      float64 `json:"acquire_wait_seconds"`
		EmptyAcquireWait float64 `json:"empty_acquire_wait_seconds"`
	}{plain(s), s.AcquireWait.Seconds(), s.EmptyAcquireWait.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *PoolStats) UnmarshalJSON(b []byte) error {
	type plain PoolStats
	in := struct {
		*plain
		AcquireWait      float64 `json:"acquire_wait_seconds"`
		EmptyAcquireWait float64 `json:"empty_acquire_wait_seconds"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	s.AcquireWait, s.EmptyAcquireWait = seconds(in.AcquireWait), seconds(in.EmptyAcquireWait)
	return nil
}

// PoolStats reads the pool's statistics now (the primary's pool; a
// replica's are in Replicas).
func (db *DB) PoolStats() PoolStats {
	s := statOf(db.pool)
	s.Waiting, s.AcquireTimeouts = db.obs.pool()
	return s
}

// statOf sums pgxpool.Stat over pools: the one mapping of pgxpool's
// statistics, for PoolStats and the Prometheus adapter. Waiting and
// AcquireTimeouts are pgkit's own and left zero.
func statOf(pools ...*pgxpool.Pool) PoolStats {
	var ps PoolStats
	for _, p := range pools {
		s := p.Stat()
		ps.Size += s.TotalConns()
		ps.Acquired += s.AcquiredConns()
		ps.Idle += s.IdleConns()
		ps.Constructing += s.ConstructingConns()
		ps.Max += s.MaxConns()
		ps.AcquireCount += s.AcquireCount()
		ps.EmptyAcquireCount += s.EmptyAcquireCount()
		ps.CanceledAcquireCount += s.CanceledAcquireCount()
		ps.AcquireWait += s.AcquireDuration()
		ps.EmptyAcquireWait += s.EmptyAcquireWaitTime()
		ps.NewConns += s.NewConnsCount()
		ps.ClosedForLifetime += s.MaxLifetimeDestroyCount()
		ps.ClosedForIdle += s.MaxIdleDestroyCount()
	}
	if ps.Max > 0 {
		ps.Utilization = float64(ps.Acquired) / float64(ps.Max)
	}
	return ps
}
