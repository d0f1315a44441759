package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// lines decodes the JSON lines of a run.
func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var res []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		res = append(res, m)
	}
	return res
}

func TestPool(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, []string{"pool", "-database-url", dbURL, "-queries", "50", "-rounds", "2",
		"-users", "500", "-max-conns", "4", "-compare", "raw"}, &out))
	res := lines(t, out.String())
	require.Len(t, res, 3, out.String())
	for i, impl := range []string{"pgkit", "raw"} {
		r := res[i]
		require.Equal(t, "pool", r["test"])
		require.Equal(t, impl, r["impl"])
		require.Equal(t, 100.0, r["queries"])
		require.Equal(t, 0.0, r["errors"])
		require.Equal(t, 4.0, r["max_conns"])
		require.Positive(t, r["queries_per_sec"])
		require.LessOrEqual(t, r["p50_ms"], r["p95_ms"])
		require.LessOrEqual(t, r["p95_ms"], r["p99_ms"])
		require.Len(t, r["round_queries_per_sec"], 2)
	}
	require.Equal(t, "pgkit/raw", res[2]["compare"])
	require.Positive(t, res[2]["throughput_ratio"])

	// The schema of its own is gone; the database's own tables are untouched.
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var gone bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regnamespace('pgkit_loadtest') IS NULL`).Scan(&gone))
	require.True(t, gone)
}

func TestFlagsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, args := range [][]string{{}, {"nope"}, {"pool", "-compare", "other"}, {"ws", "-database-url", "x"},
		{"ws", "-token", "t"}, {"pool", "-queries", "0"}} {
		require.Error(t, run(ctx, args, &bytes.Buffer{}), args)
	}
}

// TestWebSocketAgainstChat builds examples/chat, runs it on a database of
// the test's own, runs the ws test against it and stops it with SIGTERM.
func TestWebSocketAgainstChat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "chat")
	// go test puts its own go first on PATH.
	build := exec.Command("go", "build", "-o", bin, "../chat")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ../chat: %v\n%s", err, b)
	}

	dbURL := pgtest.NewDatabase(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	database := strings.TrimPrefix(u.Path, "/")
	t.Cleanup(func() { // the roles chat's setup made, before the database goes
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, dbURL)
		require.NoError(t, err)
		defer conn.Close(ctx)
		for _, role := range []string{database + "_app", database + "_writer"} {
			id := pgx.Identifier{role}.Sanitize()
			_, err := conn.Exec(ctx, `DROP OWNED BY `+id+`; DROP ROLE `+id)
			require.NoError(t, err)
		}
	})

	ready := filepath.Join(dir, "ready.json")
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-database-url", dbURL, "-listen", "127.0.0.1:0", "-ready-file", ready,
		"-admin-token", "adm", "-responder-delay", "5ms", "-max-conns", "4", "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			t.Log("chat killed:", <-exited)
		}
	})

	var info struct {
		URL         string `json:"url"`
		DatabaseURL string `json:"database_url"`
	}
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &info) == nil
	}, time.Minute, 20*time.Millisecond, "chat did not start: %s", &logs)
	require.Equal(t, dbURL, info.DatabaseURL)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, []string{"ws", "-url", info.URL, "-admin-token", "adm", "-database-url", dbURL,
		"-clients", "20", "-messages", "5"}, &out), out.String())
	res := lines(t, out.String())
	require.Len(t, res, 1)
	r := res[0]
	for field, want := range map[string]float64{"clients": 20, "connected": 20, "connect_errors": 0, "sent": 100,
		"acks": 100, "replies": 100, "error_frames": 0, "unanswered": 0, "persisted": 100, "server_peak_ws_connections": 20} {
		require.Equal(t, want, r[field], field)
	}
	require.Equal(t, true, r["verified"])
	for _, field := range []string{"ack_p50_ms", "ack_p99_ms", "reply_p50_ms", "reply_p99_ms", "messages_per_sec",
		"client_peak_heap_bytes", "server_peak_heap_bytes"} {
		require.Positive(t, r[field], field)
	}
	require.LessOrEqual(t, r["ack_p50_ms"], r["reply_p50_ms"])

	// A token the service does not know: no connection, a failure.
	out.Reset()
	require.Error(t, run(ctx, []string{"ws", "-url", info.URL, "-token", "wrong", "-database-url", dbURL,
		"-clients", "2", "-messages", "1"}, &out))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	stopped = true
	select {
	case err := <-exited:
		require.NoError(t, err, "chat exits 0 after SIGTERM: %s", &logs)
	case <-ctx.Done():
		t.Fatal("chat did not stop")
	}
}
