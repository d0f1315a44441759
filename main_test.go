package pgkit_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// logRecorder is a slog.Handler that keeps every record, for tests that
// assert on what pgkit logs.
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

// closedPort returns a localhost port on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// withPassword returns url with a password set in its user info. The test
// servers trust every local connection, so the password is accepted and
// ignored, which lets tests check it never leaks.
func withPassword(t *testing.T, url, password string) string {
	t.Helper()
	require.True(t, strings.HasPrefix(url, "postgres://postgres@"), url)
	return strings.Replace(url, "postgres://postgres@", "postgres://postgres:"+password+"@", 1)
}
