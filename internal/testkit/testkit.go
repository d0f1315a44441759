// Package testkit holds the helpers every test package of pgkit shares: a
// DB on a database of the test's own, a registry's gathered metrics, a slog
// handler that keeps its records, and a buffer safe for concurrent writes.
package testkit

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// Gathered is a registry's metrics by family name, for assertions.
type Gathered map[string]*dto.MetricFamily

// Gather gathers reg, failing t on any inconsistency a pedantic registry
// finds.
func Gather(t testing.TB, reg prometheus.Gatherer) Gathered {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err, "the pedantic registry found an inconsistency")
	g := Gathered{}
	for _, mf := range mfs {
		g[mf.GetName()] = mf
	}
	return g
}

// Find returns the metric of family name whose labels include labels, or
// nil.
func (g Gathered) Find(name string, labels map[string]string) *dto.Metric {
	mf, ok := g[name]
	if !ok {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// Value is the counter's or gauge's value, or the histogram's sample count,
// of the metric Find finds; it fails t when there is none.
func (g Gathered) Value(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	m := g.Find(name, labels)
	require.NotNil(t, m, "no %s with %v", name, labels)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("%s has no value", name)
	return 0
}

// LabelValues lists the distinct values label takes in family name.
func (g Gathered) LabelValues(name, label string) []string {
	var out []string
	for _, m := range g[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && !slices.Contains(out, lp.GetValue()) {
				out = append(out, lp.GetValue())
			}
		}
	}
	return out
}

// LogRecorder is a slog.Handler that keeps every record, for tests that
// assert on what is logged.
type LogRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *LogRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *LogRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *LogRecorder) WithGroup(string) slog.Handler            { return h }
func (h *LogRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// Find returns the attributes of the first record whose message contains msg
// and, for each pair of where (key, value, key, value...), whose attribute
// key has that string value.
func (h *LogRecorder) Find(msg string, where ...string) (map[string]slog.Value, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
next:
	for _, r := range h.records {
		if !strings.Contains(r.Message, msg) {
			continue
		}
		attrs := map[string]slog.Value{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
		for i := 0; i+1 < len(where); i += 2 {
			if v, ok := attrs[where[i]]; !ok || v.String() != where[i+1] {
				continue next
			}
		}
		return attrs, true
	}
	return nil, false
}

// Text is every record, message and attributes, as one string.
func (h *LogRecorder) Text() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, r := range h.records {
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
		b.WriteString("\n")
	}
	return b.String()
}

// LockedBuffer is an io.Writer safe for a log handler's concurrent use.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// OpenDB opens a pgkit DB, closed at cleanup. Without cfg.URL it is a new
// database of the test's own (internal/pgtest: cloned from the template
// with testdata/schema.sql) with MaxConns 4 unless set, since parallel tests
// share one server's connections. With MinConns it waits until the pool has
// opened them, so that a test with a short AcquireTimeout does not time out
// connecting on a busy machine.
func OpenDB(t testing.TB, cfg pgkit.Config) *pgkit.DB {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = pgtest.NewDatabase(t)
		if cfg.MaxConns == 0 {
			cfg.MaxConns = 4
		}
	}
	db, err := pgkit.Open(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	require.Eventually(t, func() bool { return db.Stat().IdleConns() >= cfg.MinConns }, 30*time.Second, 5*time.Millisecond)
	return db
}
