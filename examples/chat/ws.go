package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
)

// The WebSocket protocol, one JSON object per text message:
//
//	client: {"content": "hello", "id": "optional-client-id"}
//	server: {"status": "received", "id": "..."}   at once, once the message is queued for the database
//	server: {"id": "...", "content": "..."}        the reply, when the Responder has it
//	server: {"id": "...", "error": "..."}          the message was refused (not stored) or its reply failed
//
// The id is the client's (1 to 64 of A-Z a-z 0-9 . _ -) or, without one, a
// random one the server assigns. Stored as client_id "<tenant>:<id>" with
// the writer's DedupeKey, so a client that resends a message it has no ack
// for (after a reconnect) cannot store it twice.

// inbound is a client message.
type inbound struct {
	Content string `json:"content"`
	ID      string `json:"id"`
}

// outbound is a server message; release marks the last message of an
// in-flight one (its reply or its error), which frees its slot once written.
type outbound struct {
	Status  string `json:"status,omitempty"`
	ID      string `json:"id,omitempty"`
	Content string `json:"content,omitempty"`
	Error   string `json:"error,omitempty"`

	release bool
}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// hub tracks the open WebSockets so that Shutdown can drain and close them.
type hub struct {
	mu      sync.Mutex
	conns   map[*wsConn]struct{}
	closing bool
	wg      sync.WaitGroup // one per handler still running
	expired chan struct{}  // closed when shutdown's context ends: responders are canceled
}

func newHub() *hub { return &hub{conns: map[*wsConn]struct{}{}, expired: make(chan struct{})} }

func (h *hub) add(c *wsConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *hub) remove(c *wsConn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	h.wg.Done()
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// shutdown refuses new connections, drains every open one (replies in flight
// are sent; after ctx ends their responders are canceled) and closes it with
// 1001 going away, and waits for their handlers.
func (h *hub) shutdown(ctx context.Context) {
	h.mu.Lock()
	h.closing = true
	conns := make([]*wsConn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	allDone := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			close(h.expired)
		case <-allDone:
		}
	}()
	for _, c := range conns {
		go c.finish(websocket.StatusGoingAway, "server shutting down")
	}
	h.wg.Wait()
	close(allDone)
	<-watched
}

// wsConn is one WebSocket. Its goroutines: the handler's read loop, one
// sender, and one per message awaiting its reply (at most InFlightPerConn;
// the read loop waits for a free slot, which pushes back on the client
// alone). The send queue holds at most two messages per slot (ack, then
// reply or error), so queueing never blocks; a client that does not read
// blocks only its sender, until WriteTimeout disconnects it.
type wsConn struct {
	s       *Server
	ws      *websocket.Conn
	tenant  string
	convID  int64
	usageID int64

	slots   chan struct{}
	send    chan outbound // never reassigned; closed by finish under mu
	senderD chan struct{}

	ctx        context.Context // ends when the connection is dead
	cancel     context.CancelFunc
	respCtx    context.Context // responders'; canceled when draining times out
	respCancel context.CancelFunc

	mu         sync.Mutex
	draining   bool
	sendClosed bool
	replies    sync.WaitGroup
	once       sync.Once
}

// websocket is GET /api/ws/conversations/{id}: checks (under RLS) that the
// conversation is the tenant's before upgrading, so another tenant's id
// gets a plain 404.
func (s *Server) websocket(w http.ResponseWriter, r *http.Request, tenant string) {
	convID, ok := pathID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	var usageID int64
	err := s.inTenant(ctx, tenant, func(tx pgkit.Tx) error {
		var userID int64
		if err := tx.QueryRow(ctx, `-- name: WSConversation :one
			SELECT user_id FROM conversations WHERE id = $1`, convID).Scan(&userID); errors.Is(err, pgx.ErrNoRows) {
			return errNotFound
		} else if err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `-- name: WSUsageRecord :one
			SELECT id FROM usage_records WHERE conversation_id = $1 ORDER BY id LIMIT 1`, convID).Scan(&usageID)
		if errors.Is(err, pgx.ErrNoRows) {
			err = tx.QueryRow(ctx, `-- name: CreateUsageRecord :one
				INSERT INTO usage_records (tenant_id, user_id, conversation_id) VALUES ($1, $2, $3) RETURNING id`,
				tenant, userID, convID).Scan(&usageID)
		}
		return err
	})
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "conversation not found")
		return
	case err != nil:
		s.serverError(w, r, err)
		return
	}
	if s.closing.Load() {
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	ws.SetReadLimit(int64(s.opts.MaxContentBytes + maxBodyOverhead))
	n := s.opts.InFlightPerConn
	c := &wsConn{s: s, ws: ws, tenant: tenant, convID: convID, usageID: usageID,
		slots: make(chan struct{}, n), send: make(chan outbound, 2*n), senderD: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.respCtx, c.respCancel = context.WithCancel(c.ctx)
	if !s.hub.add(c) {
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer s.hub.remove(c)
	s.wsConns.Inc()
	defer s.wsConns.Dec()
	go c.sender()
	status, reason := c.readLoop()
	c.finish(status, reason)
}

// readLoop reads messages until the connection ends and returns how to
// close it.
func (c *wsConn) readLoop() (websocket.StatusCode, string) {
	for {
		select { // a free slot first: this is where a busy client waits
		case c.slots <- struct{}{}:
		case <-c.ctx.Done():
			return websocket.StatusGoingAway, ""
		}
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			<-c.slots
			if websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				return websocket.StatusMessageTooBig, "message too big"
			}
			return websocket.StatusNormalClosure, ""
		}
		var in inbound
		var refuse string
		switch err := json.Unmarshal(data, &in); {
		case typ != websocket.MessageText:
			refuse = "send JSON text messages"
		case err != nil:
			refuse = "invalid JSON: " + err.Error()
		case in.ID != "" && !clientIDPattern.MatchString(in.ID):
			refuse = "id: 1 to 64 of A-Z a-z 0-9 . _ -"
		default:
			refuse = c.s.checkContent(in.Content)
		}
		if in.ID == "" || !clientIDPattern.MatchString(in.ID) {
			in.ID = newClientID()
		}
		if refuse != "" {
			c.s.wsMessages.WithLabelValues("rejected").Inc()
			c.enqueue(outbound{ID: in.ID, Error: refuse, release: true})
			continue
		}
		c.accept(in)
	}
}

// accept queues the message for the database, acknowledges it, and starts
// its reply.
func (c *wsConn) accept(in inbound) {
	c.mu.Lock()
	draining := c.draining
	if !draining {
		c.replies.Add(1)
	}
	c.mu.Unlock()
	if draining {
		c.s.wsMessages.WithLabelValues("rejected").Inc()
		c.enqueue(outbound{ID: in.ID, Error: "server shutting down: not stored", release: true})
		return
	}
	storedID := cache.Key(c.tenant, in.ID)
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	err := c.s.writer.Write(ctx, messageRow{TenantID: c.tenant, ConversationID: c.convID, Role: "user",
		Content: in.Content, ClientID: storedID})
	cancel()
	if err != nil {
		c.replies.Done()
		c.s.wsMessages.WithLabelValues("rejected").Inc()
		c.enqueue(outbound{ID: in.ID, Error: "not stored, try again", release: true})
		return
	}
	c.s.wsMessages.WithLabelValues("acked").Inc()
	c.enqueue(outbound{Status: "received", ID: in.ID})
	go c.reply(in, storedID)
}

// reply asks the Responder, stores the reply through the writer, records
// the usage and sends the reply.
func (c *wsConn) reply(in inbound, storedID string) {
	defer c.replies.Done()
	r, err := c.s.opts.Responder.Respond(c.respCtx, Prompt{TenantID: c.tenant, ConversationID: c.convID, Content: in.Content})
	if err == nil {
		err = c.s.writer.Write(c.respCtx, messageRow{TenantID: c.tenant, ConversationID: c.convID, Role: "assistant",
			Content: r.Content, ClientID: storedID + ":reply", Tokens: r.Tokens})
	}
	if err != nil {
		c.s.wsMessages.WithLabelValues("failed").Inc()
		if c.respCtx.Err() == nil {
			c.s.log.Warn("chat: reply failed", slog.String("error", err.Error()))
		}
		c.enqueue(outbound{ID: in.ID, Error: "no reply: " + errString(err), release: true})
		return
	}
	c.s.usage.add(c.tenant, c.usageID, r.Tokens, r.CostCents)
	c.s.wsMessages.WithLabelValues("replied").Inc()
	c.enqueue(outbound{ID: in.ID, Content: r.Content, release: true})
}

func errString(err error) string {
	if errors.Is(err, context.Canceled) {
		return "server shutting down"
	}
	return "responder failed"
}

// enqueue hands m to the sender; it never blocks (see wsConn). After the
// send queue is closed, m is dropped (the connection is closing).
func (c *wsConn) enqueue(m outbound) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sendClosed {
		return
	}
	c.send <- m
}

// sender writes the queued messages in order. After a failed write (the
// client stopped reading for WriteTimeout, or is gone) it ends the
// connection and discards the rest, still freeing their slots.
func (c *wsConn) sender() {
	defer close(c.senderD)
	dead := false
	for m := range c.send {
		if !dead {
			b, _ := json.Marshal(m)
			ctx, cancel := context.WithTimeout(c.ctx, c.s.opts.WriteTimeout)
			if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
				dead = true
				// The write's own deadline, not the connection's end: when
				// the write times out, the library closes the socket, and the
				// read loop may end the connection before this runs.
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					c.s.wsSlow.Inc()
				}
				c.cancel()
			}
			cancel()
		}
		if m.release {
			<-c.slots
		}
	}
}

// finish drains the connection and closes it, once: no new message is
// accepted, the replies in flight are sent (their responders are canceled
// when the hub's shutdown deadline passes), then the close frame.
// Concurrent callers wait for it.
func (c *wsConn) finish(status websocket.StatusCode, reason string) {
	c.once.Do(func() {
		c.mu.Lock()
		c.draining = true
		c.mu.Unlock()
		done := make(chan struct{})
		go func() { c.replies.Wait(); close(done) }()
		select {
		case <-done:
		case <-c.s.hub.expired:
			c.respCancel()
			<-done
		}
		c.mu.Lock()
		close(c.send)
		c.sendClosed = true
		c.mu.Unlock()
		<-c.senderD
		_ = c.ws.Close(status, reason)
		c.cancel()
		c.respCancel()
	})
}

func newClientID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
