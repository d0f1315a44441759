package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAdminEndpointsOpenInABrowser: the admin endpoints take the admin
// token as a Bearer credential (scripts) or as the password of Basic
// credentials with any user name (a browser, after its prompt); without
// the token they answer 401 with a Basic challenge, which makes a browser
// prompt.
func TestAdminEndpointsOpenInABrowser(t *testing.T) {
	t.Parallel()
	e := start(t, Options{})
	send := func(method, path string, auth func(*http.Request)) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader(`{"id": "browser-made"}`)
		}
		req, err := http.NewRequest(method, e.base+path, body)
		require.NoError(t, err)
		auth(req)
		resp, err := e.client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}
	basic := func(user, password string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, password) }
	}
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testAdminToken) }

	resp, page := send(http.MethodGet, "/debug/pgkit/", basic("admin", testAdminToken))
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, page, `<script src="dashboard.js" defer></script>`)
	for _, path := range []string{"/debug/pgkit/data", "/debug/pgkit/dashboard.js", "/api/admin/db-stats"} {
		for _, auth := range []func(*http.Request){basic("admin", testAdminToken), basic("", testAdminToken), bearer} {
			resp, body := send(http.MethodGet, path, auth)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
		}
	}
	resp, body := send(http.MethodPost, "/api/admin/tenants", basic("ops", testAdminToken))
	require.Equal(t, http.StatusCreated, resp.StatusCode, body)

	for _, path := range []string{"/debug/pgkit/", "/debug/pgkit/data", "/api/admin/db-stats"} {
		for _, auth := range []func(*http.Request){basic("admin", "wrong"), basic(testAdminToken, ""), func(*http.Request) {}} {
			resp, body := send(http.MethodGet, path, auth)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s: %s", path, body)
			require.Contains(t, resp.Header.Values("WWW-Authenticate"), `Basic realm="pgkit", charset="UTF-8"`, path)
			require.Contains(t, resp.Header.Values("WWW-Authenticate"), `Bearer realm="pgkit"`, path)
		}
	}
	resp, body = send(http.MethodPost, "/api/admin/tenants", basic("admin", "wrong"))
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, body)
	require.Equal(t, []string{`Bearer realm="chat-admin"`, `Basic realm="chat-admin", charset="UTF-8"`}, resp.Header.Values("WWW-Authenticate"))
}
