package pgkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// HealthStatus is the verdict of DB.Health.
type HealthStatus string

// The three health verdicts.
const (
	// StatusUp: a connection was had in time and the server answered.
	StatusUp HealthStatus = "up"
	// StatusDegraded: the server answers, but the pool could not give the
	// check a connection in time because every connection is in use; or
	// the server is a standby (writes fail); or it cannot be reached while
	// a replica can (reads work, writes fail: a failover, as a rule).
	StatusDegraded HealthStatus = "degraded"
	// StatusDown: the server could not be reached or did not answer in time.
	StatusDown HealthStatus = "down"
)

// HealthReport is what DB.Health found. It never holds the URL or a password.
type HealthReport struct {
	Status HealthStatus
	// Reason says why the status is not up, in terms fit for the public
	// (HealthHandler's body): the kind of failure and its SQLSTATE or system
	// error, never the host, user, database or password. Empty when up.
	Reason string
	// Detail is the error behind Reason, for operators: a failed connect's
	// error names the host, user and database (never the password); other
	// errors are scrubbed of values like the "query failed" log line. The
	// JSON form, and so HealthHandler, leaves it out; StatsHandler and the
	// log show it.
	Detail string
	// Latency is the round trip of the check's query (zero when it could not run).
	Latency time.Duration
	// ServerVersion is the server's server_version setting, e.g. "15.19" or "15.20 (Debian 15.20-0+deb12u1)".
	ServerVersion string
	// InRecovery is pg_is_in_recovery(): true on a standby.
	InRecovery bool
	// Pool is the pool's statistics at the end of the check.
	Pool PoolStats
	// Replicas is the latest check of each of Config.ReplicaURLs (they are
	// checked every ReplicaCheckPeriod, not by Health). A replica that is
	// down does not change Status: reads fall back to the primary.
	Replicas []ReplicaStatus
	// CheckedAt is when the check finished.
	CheckedAt time.Time
}

// MarshalJSON writes the report as HealthHandler serves it to the callers
// HealthDetails lets through: snake_case keys, the latency in seconds
// (latency_seconds), checked_at in RFC 3339 (UTC), without Detail, and each
// replica without its address and detail (StatsHandler shows those).
// docs/http.md gives the schema.
func (r HealthReport) MarshalJSON() ([]byte, error) {
	replicas := make([]healthReplicaJSON, 0, len(r.Replicas))
	for _, s := range r.Replicas {
		replicas = append(replicas, healthReplicaJSON{s.Healthy, s.InRecovery, s.Usable, s.Reason, s.Lag.Seconds(),
			jsonTimeOrNull(s.CheckedAt)})
	}
	if len(replicas) == 0 {
		replicas = nil
	}
	return json.Marshal(healthReportJSON{r.Status, r.Reason, r.Latency.Seconds(), r.ServerVersion, r.InRecovery, r.Pool,
		replicas, jsonTimeOrNull(r.CheckedAt)})
}

// UnmarshalJSON reads what MarshalJSON wrote (the replicas without their
// address and detail).
func (r *HealthReport) UnmarshalJSON(b []byte) error {
	var in healthReportJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	checked, err := parseJSONTime(in.CheckedAt)
	if err != nil {
		return err
	}
	out := HealthReport{Status: in.Status, Reason: in.Reason, Latency: seconds(in.LatencySeconds),
		ServerVersion: in.ServerVersion, InRecovery: in.InRecovery, Pool: in.Pool, CheckedAt: checked}
	for _, s := range in.Replicas {
		at, err := parseJSONTime(s.CheckedAt)
		if err != nil {
			return err
		}
		out.Replicas = append(out.Replicas, ReplicaStatus{Healthy: s.Healthy, InRecovery: s.InRecovery, Usable: s.Usable,
			Reason: s.Reason, Lag: seconds(s.LagSeconds), CheckedAt: at})
	}
	*r = out
	return nil
}

// healthReportJSON is HealthReport's JSON.
type healthReportJSON struct {
	Status         HealthStatus        `json:"status"`
	Reason         string              `json:"reason,omitempty"`
	LatencySeconds float64             `json:"latency_seconds"`
	ServerVersion  string              `json:"server_version,omitempty"`
	InRecovery     bool                `json:"in_recovery"`
	Pool           PoolStats           `json:"pool"`
	Replicas       []healthReplicaJSON `json:"replicas,omitempty"`
	CheckedAt      *string             `json:"checked_at"`
}

// healthReplicaJSON is a replica in HealthReport's JSON: ReplicaStatus's
// without Addr and Detail.
type healthReplicaJSON struct {
	Healthy    bool    `json:"healthy"`
	InRecovery bool    `json:"in_recovery"`
	Usable     bool    `json:"usable"`
	Reason     string  `json:"reason,omitempty"`
	LagSeconds float64 `json:"lag_seconds"`
	CheckedAt  *string `json:"checked_at"`
}

// Health checks the database within Config.HealthTimeout (default 1s) and
// never blocks past it, nor past ctx. An unreachable or silent server is down.
// When every pooled connection is checked out, the check opens one of its
// own: degraded if the server answers it (the pool is saturated), down if not.
//
// After Close it checks nothing: the status is down, with the reason
// "closed: DB.Close was called".
func (db *DB) Health(ctx context.Context) HealthReport {
	if db.closed.Load() {
		return HealthReport{Status: StatusDown, Reason: closedReason, Pool: db.PoolStats(), Replicas: db.Replicas(), CheckedAt: time.Now()}
	}
	ctx, cancel := context.WithTimeout(ctx, db.cfg.HealthTimeout)
	defer cancel()

	r := db.health(ctx)
	if r.Status != StatusUp && db.closed.Load() {
		r = HealthReport{Status: StatusDown, Reason: closedReason} // Close ran during the check
	}
	r.Pool = db.PoolStats()
	r.Replicas = db.Replicas()
	r.CheckedAt = time.Now()
	if r.Status != StatusUp && r.Reason != closedReason {
		db.logger.LogAttrs(ctx, slog.LevelWarn, "pgkit: database health check failed",
			slog.String("status", string(r.Status)), slog.String("reason", r.Reason), slog.String("detail", r.Detail))
	}
	return r
}

// closedReason is Health's reason on a closed DB.
const closedReason = "closed: DB.Close was called"

func (db *DB) health(ctx context.Context) HealthReport {
	var r HealthReport
	busy, latency, err := probe(ctx, db.pool, &db.cfg,
		`SELECT current_setting('server_version'), pg_is_in_recovery()`, &r.ServerVersion, &r.InRecovery)
	switch {
	case busy && (err == nil || sqlstate(err) != ""): // the server answered (perhaps "too many clients")
		return HealthReport{Status: StatusDegraded, Reason: fmt.Sprintf(
			"pool exhausted: all %d connections in use, none free within %s", db.pool.Stat().MaxConns(), db.cfg.HealthTimeout/2)}
	case busy:
		reason, detail := db.reason(err, db.pool)
		return HealthReport{Status: StatusDown, Reason: "pool exhausted and " + reason, Detail: detail}
	case err != nil:
		reason, detail := db.reason(err, db.pool)
		if db.replicas != nil && db.replicas.anyUsable() {
			// Writes fail, reads still work: a failover, as a rule.
			return HealthReport{Status: StatusDegraded, Reason: "primary: " + reason + "; reads go to replicas", Detail: detail}
		}
		return HealthReport{Status: StatusDown, Reason: reason, Detail: detail}
	}
	r.Latency = latency
	r.Status = StatusUp
	if r.InRecovery {
		// The DB is for writes: on a standby they fail.
		r.Status, r.Reason = StatusDegraded, standbyReason
	}
	return r
}

// standbyReason is Health's Reason when the primary's server is a standby.
const standbyReason = "the server is a standby, where writes fail: a failover in progress, or Config.URL names a standby"

// reason describes a failed check, or a replica's failed statement, twice.
// The public reason says what kind of failure it was, for anyone
// (HealthHandler's body): a class and the SQLSTATE of a server error, the
// system error, or a timeout; never the server's message, which can name the
// role or the database, nor anything from the URL. The detail is for
// operators (the log, StatsHandler): a failed connect's error as it is (it
// names the host, user and database; never the password, which is masked
// here too), anything else scrubbed like the "query failed" line, since a
// replica's statement can carry argument values.
func (db *DB) reason(err error, pool *pgxpool.Pool) (public, detail string) {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		detail = err.Error()
		if pw := pool.Config().ConnConfig.Password; pw != "" {
			detail = strings.ReplaceAll(detail, pw, "xxxxx")
		}
	} else {
		detail = logError(err)
	}
	var pgErr *pgconn.PgError
	var errno syscall.Errno
	switch {
	case errors.As(err, &pgErr):
		return refusal(pgErr.Code) + " (SQLSTATE " + pgErr.Code + ")", detail
	case errors.As(err, &errno):
		return "cannot reach the server: " + errno.Error(), detail
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer from the server within %s", db.cfg.HealthTimeout), detail
	case errors.Is(err, context.Canceled):
		return "check canceled", detail
	default:
		return "cannot reach the server", detail
	}
}
