package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestQuickstartServes runs the program README.md shows against a database
// of the test's own: /healthz answers 200, /now answers with a Server-Timing
// header, and /metrics carries pgkit's series, the query's name among them.
func TestQuickstartServes(t *testing.T) {
	t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
	addr := pgtest.FreeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, addr) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			require.ErrorIs(t, err, http.ErrServerClosed)
		case <-time.After(30 * time.Second):
			t.Fatal("run did not return after its context ended")
		}
	}()

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := client.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(body)
	}

	// Wait for the server: Open first connects, then it listens.
	status := 0
	var runErr error
	require.Eventually(t, func() bool {
		select {
		case runErr = <-done:
			return true
		default:
		}
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		return true
	}, time.Minute, 20*time.Millisecond, "the server did not listen on %s", addr)
	require.NoError(t, runErr, "run returned before serving")
	require.Equal(t, http.StatusOK, status)

	resp, body := get("/now")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.NotEmpty(t, strings.TrimSpace(body))
	require.True(t, strings.HasPrefix(resp.Header.Get("Server-Timing"), "db;dur="), "Server-Timing: %q", resp.Header.Get("Server-Timing"))

	resp, body = get("/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, series := range []string{
		"pgkit_pool_max_connections{",
		"pgkit_pool_acquires_total{",
		"pgkit_pool_acquire_duration_seconds_bucket{",
		"pgkit_database_up{",
		"pgkit_query_duration_seconds_bucket{",
		`name="now"`,
	} {
		require.Contains(t, body, series)
	}
	require.NotContains(t, body, "SELECT now()", "SQL is never a label")

	resp, _ = get("/healthz")
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
