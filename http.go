// HTTP surface: the health, statistics and request-timing handlers (the
// dashboard, with its page, is in dashboard.go).

package pgkit

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// HealthHandler serves db.Health as JSON: 200 when up or degraded (the server
// answers; the pool is busy), 503 when down. Mount it for load balancer and
// Kubernetes probes. The body is for anyone: its reasons say what kind of
// failure it was (HealthReport.Reason), never the server's message, a host,
// user, database or password; the detail is in the log and StatsHandler.
func HealthHandler(db *DB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		report := db.Health(r.Context())
		code := http.StatusOK
		if report.Status == StatusDown {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, report)
	})
}

// StatsHandler serves the admin db-stats endpoint: JSON with pool_stats,
// healthy (the health check found the database up), status, reason and
// detail (HealthReport's, the detail naming what failed), replicas (with
// Config.ReplicaURLs: each one's latest check, with its address and detail)
// and timestamp (RFC 3339, UTC). Callers for whom authorize returns false,
// and every caller when authorize is nil, get 401 with a JSON error: pool
// statistics and failure details are for operators, not the public.
func StatsHandler(db *DB, authorize func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authorize == nil || !authorize(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgkit"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		report := db.Health(r.Context())
		writeJSON(w, http.StatusOK, struct {
			PoolStats PoolStats       `json:"pool_stats"`
			Healthy   bool            `json:"healthy"`
			Status    HealthStatus    `json:"status"`
			Reason    string          `json:"reason,omitempty"`
			Detail    string          `json:"detail,omitempty"`
			Replicas  []ReplicaStatus `json:"replicas,omitempty"`
			Timestamp string          `json:"timestamp"`
		}{report.Pool, report.Status == StatusUp, report.Status, report.Reason, report.Detail, report.Replicas,
			time.Now().UTC().Format(time.RFC3339)})
	})
}

// BearerToken returns an authorize function for StatsHandler that accepts a
// request whose Authorization header is "Bearer <token>", compared in
// constant time. An empty token accepts no one.
func BearerToken(token string) func(*http.Request) bool {
	want := []byte(token)
	return func(r *http.Request) bool {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return ok && len(want) > 0 && subtle.ConstantTimeCompare([]byte(got), want) == 1
	}
}

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
		w.Header().Add("Server-Timing", fmt.Sprintf(`db;dur=%.3f;desc="%d queries"`,
			float64(s.Duration)/float64(time.Millisecond), s.Queries))
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

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines of
// the underlying writer.
func (w *timingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
