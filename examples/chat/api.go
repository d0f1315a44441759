package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
)

// conversation is the API's view of a row of conversations.
type conversation struct {
	ID        int64     `json:"id"`
	UserID    int64     `json:"user_id"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// message is the API's view of a row of messages.
type message struct {
	ID        int64     `json:"id"`
	Role      string    `json:"role"`
	Content   string    `json:"content"`
	ClientID  *string   `json:"client_id,omitempty"`
	Tokens    int32     `json:"tokens"`
	CreatedAt time.Time `json:"created_at"`
}

// dashboardStats is the per-tenant dashboard, cached per tenant.
type dashboardStats struct {
	Users         int64   `json:"users"`
	Conversations int64   `json:"conversations"`
	Messages      int64   `json:"messages"`
	TokensUsed    int64   `json:"tokens_used"`
	CostCents     float64 `json:"cost_cents"`
}

const dashboardKey = "dashboard_stats"

// errNotFound is returned inside a transaction when the conversation is not
// the tenant's (or does not exist: RLS makes the two look the same).
var errNotFound = errors.New("conversation not found")

// inTenant runs fn in a transaction scoped to tenant: every statement sees
// and writes that tenant's rows only (row-level security).
func (s *Server) inTenant(ctx context.Context, tenant string, fn func(tx pgkit.Tx) error, opts ...pgkit.TxOption) error {
	return pgkit.InTx(ctx, s.db, fn, append([]pgkit.TxOption{pgkit.WithTenant(tenant), pgkit.WithRetry(pgkit.RetryPolicy{})}, opts...)...)
}

// createConversation is POST /api/conversations {"title": "...", "user_id": 7}.
// user_id defaults to the tenant's first user. The conversation gets its
// usage record in the same transaction.
func (s *Server) createConversation(w http.ResponseWriter, r *http.Request, tenant string) {
	var in struct {
		Title  string `json:"title"`
		UserID *int64 `json:"user_id"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if len(in.Title) > 200 || !utf8.ValidString(in.Title) {
		writeError(w, http.StatusUnprocessableEntity, "title: at most 200 bytes of UTF-8")
		return
	}
	ctx := r.Context()
	var c conversation
	errNoUser := errors.New("no such user")
	err := s.inTenant(ctx, tenant, func(tx pgkit.Tx) error {
		err := tx.QueryRow(ctx, `-- name: CreateConversation :one
			INSERT INTO conversations (tenant_id, user_id, title)
			SELECT $1, u.id, $3 FROM users u
			WHERE u.id = COALESCE($2, (SELECT min(id) FROM users WHERE tenant_id = $1))
			RETURNING id, user_id, title, created_at, updated_at`, tenant, in.UserID, in.Title).
			Scan(&c.ID, &c.UserID, &c.Title, &c.CreatedAt, &c.UpdatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNoUser
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `-- name: CreateUsageRecord :exec
			INSERT INTO usage_records (tenant_id, user_id, conversation_id) VALUES ($1, $2, $3)`,
			tenant, c.UserID, c.ID); err != nil {
			return err
		}
		s.cache.Tenant(tenant).InvalidateOnCommit(tx, dashboardKey)
		return nil
	})
	switch {
	case errors.Is(err, errNoUser):
		writeError(w, http.StatusUnprocessableEntity, "user_id: no such user in this tenant")
	case err != nil:
		s.serverError(w, r, err)
	default:
		writeJSON(w, http.StatusCreated, c)
	}
}

// listConversations is GET /api/conversations?after=<id>&limit=<n>.
func (s *Server) listConversations(w http.ResponseWriter, r *http.Request, tenant string) {
	after, limit, ok := paging(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	var out []conversation
	err := s.inTenant(ctx, tenant, func(tx pgkit.Tx) error {
		rows, err := tx.Query(ctx, `-- name: ListConversations :many
			SELECT id, user_id, title, created_at, updated_at FROM conversations
			WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3`, tenant, after, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (conversation, error) {
			var c conversation
			err := row.Scan(&c.ID, &c.UserID, &c.Title, &c.CreatedAt, &c.UpdatedAt)
			return c, err
		})
		return err
	}, pgkit.ReadOnly())
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	page(w, "conversations", out, limit, func(c conversation) int64 { return c.ID })
}

// page writes {"<name>": items, "next_after": <last id or null>}; next_after
// is null when the page was not full.
func page[T any](w http.ResponseWriter, name string, items []T, limit int, id func(T) int64) {
	if items == nil {
		items = []T{}
	}
	var next *int64
	if len(items) == limit {
		n := id(items[len(items)-1])
		next = &n
	}
	writeJSON(w, http.StatusOK, map[string]any{name: items, "next_after": next})
}

// postMessage is POST /api/conversations/{id}/messages {"content": "..."}:
// the message is stored in the request's transaction (201 with its id).
func (s *Server) postMessage(w http.ResponseWriter, r *http.Request, tenant string) {
	convID, ok := pathID(w, r)
	if !ok {
		return
	}
	var in struct {
		Content string `json:"content"`
	}
	if !s.decode(w, r, &in) {
		return
	}
	if msg := s.checkContent(in.Content); msg != "" {
		code := http.StatusUnprocessableEntity
		if len(in.Content) > s.opts.MaxContentBytes {
			code = http.StatusRequestEntityTooLarge
		}
		writeError(w, code, msg)
		return
	}
	ctx := r.Context()
	m := message{Role: "user", Content: in.Content}
	err := s.inTenant(ctx, tenant, func(tx pgkit.Tx) error {
		// The SELECT from conversations goes through RLS: another tenant's
		// conversation yields no row, so nothing is inserted.
		err := tx.QueryRow(ctx, `-- name: PostMessage :one
			INSERT INTO messages (tenant_id, conversation_id, role, content)
			SELECT $1, c.id, 'user', $3 FROM conversations c WHERE c.id = $2
			RETURNING id, created_at`, tenant, convID, in.Content).Scan(&m.ID, &m.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `-- name: TouchConversation :exec
			UPDATE conversations SET updated_at = now() WHERE id = $1`, convID); err != nil {
			return err
		}
		s.cache.Tenant(tenant).InvalidateOnCommit(tx, dashboardKey)
		return nil
	})
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "conversation not found")
	case err != nil:
		s.serverError(w, r, err)
	default:
		writeJSON(w, http.StatusCreated, m)
	}
}

// checkContent returns why content is refused, or "".
func (s *Server) checkContent(content string) string {
	switch {
	case content == "":
		return "content: required"
	case len(content) > s.opts.MaxContentBytes:
		return fmt.Sprintf("content: longer than %d bytes", s.opts.MaxContentBytes)
	case !utf8.ValidString(content):
		return "content: not UTF-8"
	}
	return ""
}

// listMessages is GET /api/conversations/{id}/messages?after=<id>&limit=<n>,
// oldest first.
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, tenant string) {
	convID, ok := pathID(w, r)
	if !ok {
		return
	}
	after, limit, ok := paging(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	var out []message
	err := s.inTenant(ctx, tenant, func(tx pgkit.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `-- name: ConversationExists :one
			SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)`, convID).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return errNotFound
		}
		rows, err := tx.Query(ctx, `-- name: ListMessages :many
			SELECT id, role, content, client_id, tokens, created_at FROM messages
			WHERE conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3`, convID, after, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (message, error) {
			var m message
			err := row.Scan(&m.ID, &m.Role, &m.Content, &m.ClientID, &m.Tokens, &m.CreatedAt)
			return m, err
		})
		return err
	}, pgkit.ReadOnly())
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "conversation not found")
	case err != nil:
		s.serverError(w, r, err)
	default:
		page(w, "messages", out, limit, func(m message) int64 { return m.ID })
	}
}

// dashboard is GET /api/dashboard: the tenant's statistics, from the cache
// (5 minutes) or loaded under RLS. Messages posted over HTTP invalidate it
// when their transaction commits; WebSocket messages when the usage meter's
// transaction that accounts for them commits.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, tenant string) {
	stats, err := s.cache.Tenant(tenant).GetOrLoad(r.Context(), dashboardKey, func(ctx context.Context) (dashboardStats, error) {
		var st dashboardStats
		err := s.inTenant(ctx, tenant, func(tx pgkit.Tx) error {
			return tx.QueryRow(pgkit.WithQueryName(ctx, "dashboard_stats"), `
				SELECT u.n, c.n, m.n, r.tokens, r.cost
				FROM (SELECT COUNT(*) AS n FROM users WHERE tenant_id = $1) u,
				     (SELECT COUNT(*) AS n FROM conversations WHERE tenant_id = $1) c,
				     (SELECT COUNT(*) AS n FROM messages WHERE tenant_id = $1) m,
				     (SELECT COALESCE(SUM(tokens_used), 0) AS tokens, COALESCE(SUM(cost_cents), 0)::float8 AS cost
				      FROM usage_records WHERE tenant_id = $1) r`, tenant).
				Scan(&st.Users, &st.Conversations, &st.Messages, &st.TokensUsed, &st.CostCents)
		}, pgkit.ReadOnly())
		return st, err
	})
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stats)
}
