// HTTP surface: the health, statistics and request-timing handlers (the
// dashboard, with its page, is in dashboard.go).

package pgkit

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HealthOption configures HealthHandler.
type HealthOption func(*healthConfig)

type healthConfig struct {
	details func(*http.Request) bool
}

// HealthDetails makes HealthHandler answer the requests authorize accepts
// with the whole report (HealthReport's JSON: latency_seconds,
// server_version, in_recovery, pool, replicas, checked_at) instead of the
// status alone. Every other request, and every request when authorize is
// nil, gets the status body with the same status code: a probe that sends
// no credentials keeps working. pgkit.BearerToken(token) is such an
// authorize.
func HealthDetails(authorize func(*http.Request) bool) HealthOption {
	return func(c *healthConfig) { c.details = authorize }
}

// HealthHandler serves db.Health for load balancers and Kubernetes probes:
// 200 when up or degraded (the server answers; the pool is busy), 503 when
// down. The body is the status alone, {"status":"up"}, with "reason" when
// it is not up ({"status":"down","reason":"cannot reach the server:
// connection refused"}): anyone may read it, so its reasons say what kind
// of failure it was (HealthReport.Reason), never the server's message, a
// host, user, database or password. The detail is in the log and
// StatsHandler.
//
// With HealthDetails, the requests its authorize accepts get the whole
// report (HealthReport's JSON) instead:
//
//	mux.Handle("GET /healthz", pgkit.HealthHandler(db, pgkit.HealthDetails(pgkit.BearerToken(token))))
//
// docs/http.md gives the schema of both bodies.
func HealthHandler(db *DB, opts ...HealthOption) http.Handler {
	var cfg healthConfig
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		report := db.Health(r.Context())
		code := http.StatusOK
		if report.Status == StatusDown {
			code = http.StatusServiceUnavailable
		}
		if cfg.details != nil && cfg.details(r) {
			writeJSON(w, code, report)
			return
		}
		writeJSON(w, code, healthStatusBody{report.Status, report.Reason})
	})
}

// healthStatusBody is HealthHandler's body for everyone.
type healthStatusBody struct {
	Status HealthStatus `json:"status"`
	Reason string       `json:"reason,omitempty"`
}

// StatsHandler serves the admin db-stats endpoint: JSON with pool_stats,
// healthy (the health check found the database up), status, reason and
// detail (HealthReport's, the detail naming what failed), replicas (with
// Config.ReplicaURLs: each one's latest check, with its address and detail)
// and timestamp (when it was read). Callers for whom authorize returns
// false, and every caller when authorize is nil, get 401 with a JSON error
// and the challenges of BearerToken's two schemes: pool statistics and
// failure details are for operators, not the public. docs/http.md gives the
// schema.
//
// With the query parameter server (/admin/db-stats?server), the body also
// holds DB.ServerView: the server's own statistics, sessions and indexes.
func StatsHandler(db *DB, authorize func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authorize == nil || !authorize(r) {
			unauthorized(w)
			return
		}
		report := db.Health(r.Context())
		body := struct {
			PoolStats   PoolStats       `json:"pool_stats"`
			Healthy     bool            `json:"healthy"`
			Status      HealthStatus    `json:"status"`
			Reason      string          `json:"reason,omitempty"`
			Detail      string          `json:"detail,omitempty"`
			Replicas    []ReplicaStatus `json:"replicas,omitempty"`
			Server      *ServerView     `json:"server,omitempty"`
			ServerError string          `json:"server_error,omitempty"`
			Timestamp   string          `json:"timestamp"`
		}{PoolStats: report.Pool, Healthy: report.Status == StatusUp, Status: report.Status, Reason: report.Reason,
			Detail: report.Detail, Replicas: report.Replicas}
		if r.URL.Query().Has("server") {
			var err error
			if body.Server, err = db.ServerView(r.Context()); err != nil {
				body.ServerError = scrubError(err, nil, nil)
			}
		}
		body.Timestamp = jsonTime(time.Now())
		writeJSON(w, http.StatusOK, body)
	})
}

// BearerToken returns an authorize function for StatsHandler,
// DashboardHandler and HealthDetails that accepts a request carrying token
// in its Authorization header, either as "Bearer <token>" (for scripts) or
// as HTTP Basic credentials whose password is token, with any user name
// (what a browser sends after its login prompt, or for a URL such as
// http://admin:<token>@host/debug/pgkit/). The token is compared in
// constant time. An empty token accepts no one.
func BearerToken(token string) func(*http.Request) bool {
	if token == "" {
		return func(*http.Request) bool { return false }
	}
	want := sha256.Sum256([]byte(token))
	return func(r *http.Request) bool {
		var got string
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			got = cred
		case strings.EqualFold(scheme, "Basic"):
			_, password, ok := r.BasicAuth()
			if !ok {
				return false
			}
			got = password
		default:
			return false
		}
		// Hashes, so that the time taken says nothing of the token's
		// length either.
		sum := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	}
}

// The challenges of a 401 from StatsHandler and DashboardHandler: Bearer
// for scripts, and Basic, which makes a browser ask for a user name and
// password (BearerToken takes the token as the password).
const (
	bearerChallenge = `Bearer realm="pgkit"`
	basicChallenge  = `Basic realm="pgkit", charset="UTF-8"`
)

// unauthorized answers 401 with a JSON error and both challenges.
func unauthorized(w http.ResponseWriter) {
	h := w.Header()
	h.Add("WWW-Authenticate", bearerChallenge)
	h.Add("WWW-Authenticate", basicChallenge)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
}

// jsonTime is a timestamp as every JSON body of pgkit writes it: RFC 3339
// in UTC, with as many fractional digits as needed (time.RFC3339Nano).
func jsonTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// jsonTimeOrNull is jsonTime, or nil (JSON null) for the zero time.
func jsonTimeOrNull(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := jsonTime(t)
	return &s
}

// parseJSONTime reads what jsonTimeOrNull wrote.
func parseJSONTime(s *string) (time.Time, error) {
	if s == nil {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, *s)
}

// seconds converts a JSON number of seconds back to a Duration.
func seconds(s float64) time.Duration { return time.Duration(math.Round(s * float64(time.Second))) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Middleware counts the database time of each request (WithStats) and
// reports it to the client as a Server-Timing header, which browsers' developer
// tools show:
//
//	Server-Timing: db;dur=12.3;desc="4 queries"
//
// The header is written with the response headers, so it counts the work done
// before the handler's first Write or WriteHeader.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := WithStats(r.Context())
		tw := &timingWriter{ResponseWriter: w, ctx: ctx}
		next.ServeHTTP(tw, r.WithContext(ctx))
		tw.writeTiming() // a handler that wrote nothing still gets its header
	})
}

// timingWriter adds the Server-Timing header just before the headers go out.
type timingWriter struct {
	http.ResponseWriter
	ctx     context.Context
	written bool
}

func (w *timingWriter) writeTiming() {
	if w.written {
		return
	}
	w.written = true
	if s, ok := StatsFrom(w.ctx); ok {
		desc := strconv.FormatInt(s.Queries, 10) + " queries"
		for _, l := range s.NPlusOne {
			desc += "; N+1 " + headerSafe(l.Name) + " x" + strconv.FormatInt(l.Runs, 10)
		}
		w.Header().Add("Server-Timing", fmt.Sprintf(`db;dur=%.3f;desc="%s"`, float64(s.Duration)/float64(time.Millisecond), desc))
	}
}

func (w *timingWriter) WriteHeader(code int) {
	w.writeTiming()
	w.ResponseWriter.WriteHeader(code)
}

func (w *timingWriter) Write(b []byte) (int, error) {
	w.writeTiming()
	return w.ResponseWriter.Write(b)
}

// headerSafe is name as it may stand in a quoted Server-Timing description:
// printable ASCII without quotes or backslashes.
func headerSafe(name string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, name)
}

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines of
// the underlying writer.
func (w *timingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
