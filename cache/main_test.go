package cache_test

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

// The harness of the root package's tests, as much of it as the cache's
// tests use: the shared servers of internal/pgtest, with goleak after the
// run.

func TestMain(m *testing.M) { pgtest.Main(m) }

// openTest opens a pgkit DB on a new database of the test's own (cloned
// from the template with testdata/schema.sql), closed at cleanup.
func openTest(t *testing.T, cfg pgkit.Config) *pgkit.DB {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = pgtest.NewDatabase(t)
		if cfg.MaxConns == 0 {
			cfg.MaxConns = 4 // the shared server has ~100 connections for all parallel tests
		}
	}
	db, err := pgkit.Open(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	// With MinConns, wait until the pool has opened them: tests with a short
	// AcquireTimeout must not time out connecting on a busy machine.
	require.Eventually(t, func() bool { return db.Stat().IdleConns() >= cfg.MinConns }, 30*time.Second, 5*time.Millisecond)
	return db
}

// gathered is a registry's metrics, for assertions.
type gathered map[string]*dto.MetricFamily

func gather(t *testing.T, reg prometheus.Gatherer) gathered {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err, "the pedantic registry found an inconsistency")
	g := gathered{}
	for _, mf := range mfs {
		g[mf.GetName()] = mf
	}
	return g
}

// find returns the metric of family name whose labels include labels.
func (g gathered) find(name string, labels map[string]string) *dto.Metric {
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

func (g gathered) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	m := g.find(name, labels)
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

// labelValues lists the distinct values label takes in family name.
func (g gathered) labelValues(name, label string) []string {
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

// logRecorder is a slog.Handler that keeps every record, for tests that
// assert on what the cache logs.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// find returns the attributes of the first record whose message contains msg
// and, for each pair of where (key, value, key, value...), whose attribute
// key has that string value.
func (h *logRecorder) find(msg string, where ...string) (map[string]slog.Value, bool) {
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

// text is every record, message and attributes, as one string.
func (h *logRecorder) text() string {
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

// lockedBuffer is an io.Writer safe for the handler's concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
