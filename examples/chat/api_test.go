package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestConversationsMessagesAndDashboard(t *testing.T) {
	t.Parallel()
	e := start(t, Options{})
	tok := e.tenant("acme")

	code, dash := e.do("GET", "/api/dashboard", tok, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, map[string]any{"users": 1.0, "conversations": 0.0, "messages": 0.0, "tokens_used": 0.0, "cost_cents": 0.0}, dash)

	conv := e.conversation(tok, "First")
	for i := range 5 {
		code, out := e.do("POST", fmt.Sprintf("/api/conversations/%d/messages", conv), tok, map[string]string{"content": fmt.Sprintf("m%d", i)})
		require.Equal(t, http.StatusCreated, code, out)
		require.Equal(t, "user", out["role"])
	}

	// Paged by id: 2 + 2 + 1.
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 4)
		code, out := e.do("GET", fmt.Sprintf("/api/conversations/%d/messages?limit=2%s", conv, after), tok, nil)
		require.Equal(t, http.StatusOK, code, out)
		for _, m := range out["messages"].([]any) {
			got = append(got, m.(map[string]any)["content"].(string))
		}
		if out["next_after"] == nil {
			break
		}
		after = fmt.Sprintf("&after=%d", int64(out["next_after"].(float64)))
	}
	require.Equal(t, []string{"m0", "m1", "m2", "m3", "m4"}, got)

	code, out := e.do("GET", "/api/conversations", tok, nil)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, out["conversations"], 1)
	require.Nil(t, out["next_after"])

	// The first dashboard read was cached; the commits invalidated it.
	code, dash = e.do("GET", "/api/dashboard", tok, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 1.0, dash["conversations"])
	require.Equal(t, 5.0, dash["messages"])
	require.Positive(t, e.srv.cache.Stats().Loads)
	loads := e.srv.cache.Stats().Loads
	_, _ = e.do("GET", "/api/dashboard", tok, nil)
	require.Equal(t, loads, e.srv.cache.Stats().Loads, "a second read is a hit")
}

func TestTenantCannotReachAnotherTenantsConversation(t *testing.T) {
	t.Parallel()
	e := start(t, Options{})
	a, b := e.tenant("a"), e.tenant("b")
	convB := e.conversation(b, "B's secret")
	code, _ := e.do("POST", fmt.Sprintf("/api/conversations/%d/messages", convB), b, map[string]string{"content": "B only"})
	require.Equal(t, http.StatusCreated, code)
	before := e.count(`SELECT COUNT(*) FROM messages`)

	code, out := e.do("GET", fmt.Sprintf("/api/conversations/%d/messages", convB), a, nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, "conversation not found", out["error"])
	code, _ = e.do("POST", fmt.Sprintf("/api/conversations/%d/messages", convB), a, map[string]string{"content": "smuggled"})
	require.Equal(t, http.StatusNotFound, code)
	code, out = e.do("GET", "/api/conversations", a, nil)
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, out["conversations"])

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, status, err := e.dial(ctx, a, convB)
	require.Error(t, err)
	require.Nil(t, c)
	require.Equal(t, http.StatusNotFound, status)

	// A user of B as A's conversation owner: refused, nothing written.
	var userB int64
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT id FROM users WHERE tenant_id = 'b'`).Scan(&userB))
	code, _ = e.do("POST", "/api/conversations", a, map[string]any{"title": "x", "user_id": userB})
	require.Equal(t, http.StatusUnprocessableEntity, code)

	require.Equal(t, before, e.count(`SELECT COUNT(*) FROM messages`), "nothing written")
	require.Zero(t, e.count(`SELECT COUNT(*) FROM messages WHERE content = 'smuggled'`))
	require.Equal(t, 1, e.count(`SELECT COUNT(*) FROM conversations`))

	// The database itself enforces it, whatever the service does: the app
	// role sees nothing without a tenant, cannot read tenants, and cannot
	// store a message of A's tenant in B's conversation.
	app, err := pgx.Connect(ctx, e.srv.roles.AppURL)
	require.NoError(t, err)
	defer app.Close(ctx)
	var n int
	require.NoError(t, app.QueryRow(ctx, `SELECT COUNT(*) FROM messages`).Scan(&n))
	require.Zero(t, n)
	_, err = app.Exec(ctx, `SELECT * FROM tenants`)
	require.ErrorContains(t, err, "permission denied")
	var super bool
	require.NoError(t, app.QueryRow(ctx, `SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&super))
	require.False(t, super)
	_, err = app.Exec(ctx, `BEGIN; SELECT set_config('app.tenant_id', 'a', true);
		INSERT INTO messages (tenant_id, conversation_id, role, content) VALUES ('a', `+itoa(convB)+`, 'user', 'smuggled'); COMMIT`)
	require.Error(t, err)
	_, _ = app.Exec(ctx, `ROLLBACK`)
	w, err := pgx.Connect(ctx, e.srv.roles.WriterURL)
	require.NoError(t, err)
	defer w.Close(ctx)
	_, err = w.Exec(ctx, `INSERT INTO messages (tenant_id, conversation_id, role, content) VALUES ('a', $1, 'user', 'smuggled')`, convB)
	require.ErrorContains(t, err, "messages_conversation_tenant_fk", "the writer role is bound by the composite key")
	_, err = w.Exec(ctx, `SELECT content FROM messages`)
	require.ErrorContains(t, err, "permission denied")
	require.Zero(t, e.count(`SELECT COUNT(*) FROM messages WHERE content = 'smuggled'`))
}

func TestClearClientErrors(t *testing.T) {
	t.Parallel()
	e := start(t, Options{MaxContentBytes: 100})
	tok := e.tenant("acme")
	conv := e.conversation(tok, "c")
	msgs := fmt.Sprintf("/api/conversations/%d/messages", conv)

	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		code                      int
		errHas                    string
	}{
		{"no token", "GET", "/api/conversations", "", nil, 401, "missing bearer token"},
		{"bad token", "GET", "/api/conversations", "nope", nil, 401, "invalid token"},
		{"bad JSON", "POST", msgs, tok, `{"content": `, 400, "invalid JSON"},
		{"unknown field", "POST", msgs, tok, `{"contents": "x"}`, 400, "unknown field"},
		{"two objects", "POST", msgs, tok, `{"content": "x"} {}`, 400, "unexpected data"},
		{"empty content", "POST", msgs, tok, `{"content": ""}`, 422, "content: required"},
		{"content too long", "POST", msgs, tok, map[string]string{"content": strings.Repeat("x", 101)}, 413, "longer than 100 bytes"},
		{"body too large", "POST", msgs, tok, map[string]string{"content": strings.Repeat("x", 10_000)}, 413, "body larger than"},
		{"bad id", "GET", "/api/conversations/abc/messages", tok, nil, 404, "conversation not found"},
		{"bad limit", "GET", msgs + "?limit=1000", tok, nil, 400, "limit: 1 to 200"},
		{"bad after", "GET", msgs + "?after=-1", tok, nil, 400, "after"},
		{"unknown route", "GET", "/api/nothing", tok, nil, 404, "no route for GET /api/nothing"},
		{"wrong method", "DELETE", "/api/conversations", tok, nil, 405, "Method Not Allowed"},
		{"admin without token", "POST", "/api/admin/tenants", tok, `{"id": "x"}`, 401, "unauthorized"},
		{"bad tenant id", "POST", "/api/admin/tenants", testAdminToken, `{"id": "Bad Id"}`, 422, "id:"},
		{"tenant exists", "POST", "/api/admin/tenants", testAdminToken, `{"id": "acme"}`, 409, "exists"},
		{"db-stats without token", "GET", "/api/admin/db-stats", tok, nil, 401, "unauthorized"},
		{"dashboard page without token", "GET", "/debug/pgkit/data", "", nil, 401, "unauthorized"},
	} {
		code, out := e.do(tc.method, tc.path, tc.token, tc.body)
		require.Equal(t, tc.code, code, "%s: %v", tc.name, out)
		require.Contains(t, out["error"], tc.errHas, tc.name)
	}
	require.Equal(t, 0, e.count(`SELECT COUNT(*) FROM messages`))
}

func TestOperationsEndpoints(t *testing.T) {
	t.Parallel()
	e := start(t, Options{})
	code, out := e.do("GET", "/healthz", "", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "up", out["status"])
	code, _ = e.do("GET", "/readyz", "", nil)
	require.Equal(t, http.StatusOK, code)
	code, out = e.do("GET", "/api/admin/db-stats", testAdminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, true, out["healthy"])
	code, out = e.do("GET", "/debug/pgkit/data", testAdminToken, nil)
	require.Equal(t, http.StatusOK, code, out)

	metrics := e.metrics()
	for _, name := range []string{"chat_websocket_connections 0", `pgkit_pool_max_connections{pool="chat",role="primary"}`,
		`pgkit_writer_queue_capacity{pool="chat_writer",writer="chat_messages"}`, `pgkit_cache_requests_total`, "go_memstats_heap_inuse_bytes"} {
		require.Contains(t, metrics, name)
	}
	// Server-Timing from pgkit.Middleware on the API.
	tok := e.tenant("acme")
	req, err := http.NewRequest("GET", e.base+"/api/conversations", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp2, err := e.client.Do(req)
	require.NoError(t, err)
	resp2.Body.Close()
	require.Contains(t, resp2.Header.Get("Server-Timing"), "db;dur=")
}
