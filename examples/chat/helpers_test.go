package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testAdminToken = "admin-secret-for-tests"

// testEnv is a running chat service on a database of the test's own, with a
// superuser pool to check what was stored.
type testEnv struct {
	t       *testing.T
	srv     *Server
	base    string // http://127.0.0.1:port
	client  *http.Client
	admin   *pgxpool.Pool
	stopped chan struct{}
	stop    func() error // the service's shutdown, as main runs it
	// stopWithin is stop with main's -shutdown-timeout.
	stopWithin func(time.Duration) error
}

// start runs the service as main does: setup, a real listener, and the
// shutdown sequence of main.
func start(t *testing.T, o Options) *testEnv {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o.DatabaseURL = dbURL
	o.AdminToken = testAdminToken
	if o.MaxConns == 0 {
		o.MaxConns = 4
	}
	if o.UsageFlushInterval == 0 {
		o.UsageFlushInterval = 50 * time.Millisecond
	}
	srv, err := NewServer(ctx, o)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, dropRoles(ctx, dbURL, srv.roles))
	})
	pcfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	pcfg.MaxConns = 2
	admin, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(admin.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	e := &testEnv{t: t, srv: srv, base: "http://" + ln.Addr().String(), admin: admin,
		client: &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}, stopped: make(chan struct{})}
	var stopErr error
	e.stopWithin = func(timeout time.Duration) error {
		select {
		case <-e.stopped:
			return stopErr
		default:
		}
		stopErr = shutdown(hs, srv, served, timeout, srv.log)
		close(e.stopped)
		return stopErr
	}
	e.stop = func() error { return e.stopWithin(10 * time.Second) }
	t.Cleanup(func() {
		require.NoError(t, e.stop())
		e.client.CloseIdleConnections()
	})
	return e
}

// do sends a request with a JSON body (nil: none) and returns the status
// and the decoded JSON answer.
func (e *testEnv) do(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		require.NoError(e.t, err)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	require.NoError(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(e.t, json.Unmarshal(raw, &out), string(raw))
	}
	return resp.StatusCode, out
}

// tenant creates a tenant through the admin API and returns its token.
func (e *testEnv) tenant(id string) string {
	e.t.Helper()
	code, out := e.do("POST", "/api/admin/tenants", testAdminToken, map[string]string{"id": id})
	require.Equal(e.t, http.StatusCreated, code, out)
	return out["token"].(string)
}

// conversation creates a conversation and returns its id.
func (e *testEnv) conversation(token, title string) int64 {
	e.t.Helper()
	code, out := e.do("POST", "/api/conversations", token, map[string]string{"title": title})
	require.Equal(e.t, http.StatusCreated, code, out)
	return int64(out["id"].(float64))
}

// dial opens a WebSocket to a conversation and returns the HTTP status of
// the handshake; the test closes the connection.
func (e *testEnv) dial(ctx context.Context, token string, conv int64) (*websocket.Conn, int, error) {
	url := strings.Replace(e.base, "http://", "ws://", 1) + "/api/ws/conversations/" + itoa(conv)
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: e.client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	code := 0
	if resp != nil {
		code = resp.StatusCode
		if resp.Body != nil { // only on failure: a copy of the body
			_ = resp.Body.Close()
		}
	}
	return c, code, err
}

func (e *testEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.admin.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// frame is any server WebSocket message.
type frame struct {
	Status  string `json:"status"`
	ID      string `json:"id"`
	Content string `json:"content"`
	Error   string `json:"error"`
}

func send(t *testing.T, ctx context.Context, c *websocket.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, c.Write(ctx, websocket.MessageText, b))
}

func recv(t *testing.T, ctx context.Context, c *websocket.Conn) frame {
	t.Helper()
	_, b, err := c.Read(ctx)
	require.NoError(t, err)
	var f frame
	require.NoError(t, json.Unmarshal(b, &f), string(b))
	return f
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// metrics returns what a scrape of /metrics gets.
func (e *testEnv) metrics() string {
	e.t.Helper()
	resp, err := e.client.Get(e.base + "/metrics")
	require.NoError(e.t, err)
	defer resp.Body.Close()
	return readAll(e.t, resp)
}
