package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// tenantHandler is a handler for an authenticated tenant.
type tenantHandler func(w http.ResponseWriter, r *http.Request, tenant string)

// hashToken is what tenants.token_hash holds: SHA-256 of the token. Tokens
// are 32 random bytes, so a fast hash is enough (no dictionary to guard
// against), and an exact-match index lookup finds the tenant.
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// authed resolves the bearer token to its tenant with chat_authenticate (a
// SECURITY DEFINER function: see setupSQL) and calls h, or answers 401.
func (s *Server) authed(h tenantHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		var tenant *string
		if err := s.db.QueryRow(r.Context(), `-- name: Authenticate :one
			SELECT chat_authenticate($1)`, hashToken(token)).Scan(&tenant); err != nil {
			s.serverError(w, r, err)
			return
		}
		if tenant == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chat", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid token")
			return
		}
		h(w, r, *tenant)
	})
}

// adminOnly answers 401 unless authorize accepts the request. authorize is
// pgkit.BearerToken of the admin token, as for /api/admin/db-stats and
// /debug/pgkit/: the token as "Authorization: Bearer <token>", or as the
// password of Basic credentials (any user name), which is what a browser
// sends after the prompt the Basic challenge brings up.
func (s *Server) adminOnly(authorize func(*http.Request) bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authorize(r) {
			w.Header().Add("WWW-Authenticate", `Bearer realm="chat-admin"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="chat-admin", charset="UTF-8"`)
			writeError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		h(w, r)
	})
}

var tenantIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// createTenant is POST /api/admin/tenants {"id": "acme", "name": "Acme"}:
// it creates the tenant and its first user and returns the token, the only
// time it is shown (the database keeps its hash).
func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if !tenantIDPattern.MatchString(in.ID) {
		writeError(w, http.StatusUnprocessableEntity, "id: 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit")
		return
	}
	if in.Name == "" {
		in.Name = in.ID
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	token := base64.RawURLEncoding.EncodeToString(b)
	var userID int64
	err := s.db.QueryRow(r.Context(), `-- name: CreateTenant :one
		SELECT chat_create_tenant($1, $2, $3)`, in.ID, in.Name, hashToken(token)).Scan(&userID)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		writeError(w, http.StatusConflict, "tenant "+in.ID+" exists")
		return
	}
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": in.ID, "token": token, "user_id": userID})
}
