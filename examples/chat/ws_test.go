package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

func TestWebSocketChat(t *testing.T) {
	t.Parallel()
	e := start(t, Options{ResponderDelay: 20 * time.Millisecond})
	tok := e.tenant("acme")
	conv := e.conversation(tok, "ws")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := e.dial(ctx, tok, conv)
	require.NoError(t, err)
	defer func() { _ = c.CloseNow() }()

	send(t, ctx, c, map[string]string{"content": "hello there", "id": "m-1"})
	send(t, ctx, c, map[string]string{"content": "second", "id": "m-2"})
	send(t, ctx, c, map[string]string{"content": "no id"})
	acks, replies := map[string]bool{}, map[string]string{}
	for len(replies) < 3 {
		f := recv(t, ctx, c)
		require.Empty(t, f.Error)
		if f.Status == "received" {
			require.NotContains(t, replies, f.ID, "the ack comes before the reply")
			acks[f.ID] = true
		} else {
			require.True(t, acks[f.ID], "a reply to an acknowledged message")
			replies[f.ID] = f.Content
		}
	}
	require.Len(t, acks, 3)
	require.Equal(t, "You said 2 words (11 bytes).", replies["m-1"])

	// A message sent again with its id (a client retrying after a lost ack)
	// is acknowledged and answered again but stored once.
	send(t, ctx, c, map[string]string{"content": "hello there", "id": "m-1"})
	require.Equal(t, frame{Status: "received", ID: "m-1"}, recv(t, ctx, c))
	require.Equal(t, "m-1", recv(t, ctx, c).ID)

	require.Eventually(t, func() bool {
		return e.count(`SELECT COUNT(*) FROM messages WHERE conversation_id = $1`, conv) == 6
	}, 10*time.Second, 10*time.Millisecond, "3 messages and 3 replies, through the writer")
	require.Equal(t, 1, e.count(`SELECT COUNT(*) FROM messages WHERE client_id = 'acme:m-1' AND role = 'user'`))
	require.Equal(t, 1, e.count(`SELECT COUNT(*) FROM messages WHERE client_id = 'acme:m-1:reply' AND role = 'assistant' AND tokens > 0`))

	// Usage is written in bulk, and its commit invalidates the dashboard.
	require.Eventually(t, func() bool {
		code, dash := e.do("GET", "/api/dashboard", tok, nil)
		return code == 200 && dash["messages"] == 6.0 && dash["tokens_used"].(float64) > 0
	}, 10*time.Second, 20*time.Millisecond)
	require.Positive(t, e.count(`SELECT tokens_used FROM usage_records WHERE conversation_id = $1`, conv))
	require.NoError(t, c.Close(websocket.StatusNormalClosure, ""))
}

func TestWebSocketClientErrors(t *testing.T) {
	t.Parallel()
	e := start(t, Options{MaxContentBytes: 100})
	tok := e.tenant("acme")
	conv := e.conversation(tok, "ws")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := e.dial(ctx, tok, conv)
	require.NoError(t, err)
	defer func() { _ = c.CloseNow() }()

	require.NoError(t, c.Write(ctx, websocket.MessageText, []byte(`{"content": `)))
	require.Contains(t, recv(t, ctx, c).Error, "invalid JSON")
	require.NoError(t, c.Write(ctx, websocket.MessageBinary, []byte(`{"content": "x"}`)))
	require.Contains(t, recv(t, ctx, c).Error, "send JSON text messages")
	send(t, ctx, c, map[string]string{"content": "x", "id": "has space"})
	require.Contains(t, recv(t, ctx, c).Error, "id: 1 to 64")
	send(t, ctx, c, map[string]string{"content": strings.Repeat("x", 101), "id": "long"})
	require.Equal(t, frame{ID: "long", Error: "content: longer than 100 bytes"}, recv(t, ctx, c))
	send(t, ctx, c, map[string]string{"content": ""})
	require.Contains(t, recv(t, ctx, c).Error, "content: required")

	// Still usable after refusals.
	send(t, ctx, c, map[string]string{"content": "ok", "id": "fine"})
	require.Equal(t, frame{Status: "received", ID: "fine"}, recv(t, ctx, c))

	// A frame over the read limit ends the connection with 1009.
	require.NoError(t, c.Write(ctx, websocket.MessageText, []byte(`{"content":"`+strings.Repeat("x", 10_000)+`"}`)))
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			require.Equal(t, websocket.StatusMessageTooBig, websocket.CloseStatus(err), err)
			break
		}
	}
	require.Eventually(t, func() bool {
		return e.count(`SELECT COUNT(*) FROM messages WHERE client_id = 'acme:fine'`) == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, e.count(`SELECT COUNT(*) FROM messages WHERE client_id = 'acme:long'`))
}

// bigResponder answers "big" with 64 KiB, to fill a client's socket.
type bigResponder struct{}

func (bigResponder) Respond(ctx context.Context, p Prompt) (Reply, error) {
	if p.Content == "big" {
		return Reply{Content: strings.Repeat("y", 64<<10), Tokens: 1}, nil
	}
	return LocalResponder{}.Respond(ctx, p)
}

func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	e := start(t, Options{Responder: bigResponder{}, InFlightPerConn: 4, WriteTimeout: 300 * time.Millisecond})
	tok := e.tenant("acme")
	conv := e.conversation(tok, "ws")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The slow client asks for megabytes and reads nothing.
	slow, _, err := e.dial(ctx, tok, conv)
	require.NoError(t, err)
	defer func() { _ = slow.CloseNow() }()
	// 300 small requests fit in the socket buffers; their 19 MB of replies
	// do not, so the server's sender blocks, the connection's 4 in-flight
	// slots stay taken, and its reading stops: nothing else is held up.
	for i := range 300 {
		require.NoError(t, slow.Write(ctx, websocket.MessageText, []byte(`{"content":"big","id":"s`+itoa(int64(i))+`"}`)))
	}

	fast, _, err := e.dial(ctx, tok, conv)
	require.NoError(t, err)
	defer func() { _ = fast.CloseNow() }()
	for i := range 20 {
		id := fmt.Sprintf("f%d", i)
		send(t, ctx, fast, map[string]string{"content": "quick one", "id": id})
		require.Equal(t, frame{Status: "received", ID: id}, recv(t, ctx, fast))
		require.Equal(t, frame{ID: id, Content: "You said 2 words (9 bytes)."}, recv(t, ctx, fast))
	}
	// The server gave up on the slow client after WriteTimeout.
	require.Eventually(t, func() bool { return e.srv.hub.count() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, e.metrics(), "\nchat_websocket_slow_disconnects_total 1\n")
	require.NoError(t, fast.Close(websocket.StatusNormalClosure, ""))
}

func TestShutdownKeepsEveryAcknowledgedMessage(t *testing.T) {
	t.Parallel()
	e := start(t, Options{ResponderDelay: 30 * time.Millisecond})
	tok := e.tenant("acme")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const clients = 8
	var mu sync.Mutex
	acked, replied := map[string]bool{}, map[string]bool{}
	closeCodes := make([]websocket.StatusCode, clients)
	enough := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for i := range clients {
		conv := e.conversation(tok, "c")
		c, _, err := e.dial(ctx, tok, conv)
		require.NoError(t, err)
		defer func() { _ = c.CloseNow() }()
		wg.Add(2)
		go func() { // writer: as fast as the server reads, until it closes
			defer wg.Done()
			for j := 0; ; j++ {
				b, _ := json.Marshal(map[string]string{"content": "msg", "id": fmt.Sprintf("c%d-m%d", i, j)})
				if c.Write(ctx, websocket.MessageText, b) != nil {
					return
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					closeCodes[i] = websocket.CloseStatus(err)
					return
				}
				var f frame
				if json.Unmarshal(b, &f) != nil {
					continue
				}
				mu.Lock()
				switch {
				case f.Status == "received":
					acked[f.ID] = true
				case f.Content != "":
					replied[f.ID] = true
				}
				if len(acked) >= 300 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-ctx.Done():
		t.Fatal("not enough acknowledgements")
	}
	began := time.Now()
	require.NoError(t, e.stop())
	t.Logf("shutdown took %s", time.Since(began))
	wg.Wait()

	for i, code := range closeCodes {
		require.Equal(t, websocket.StatusGoingAway, code, "client %d got a close frame", i)
	}
	ids := make([]string, 0, len(acked))
	for id := range acked {
		require.True(t, replied[id], "message %s was acknowledged and answered before the close", id)
		ids = append(ids, "acme:"+id)
	}
	t.Logf("%d acknowledged at shutdown", len(ids))
	require.Equal(t, len(ids), e.count(`SELECT COUNT(*) FROM messages WHERE role = 'user' AND client_id = ANY($1)`, ids),
		"every acknowledged message is stored")
	require.Equal(t, len(ids), e.count(`SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND client_id = ANY($1)`, withSuffix(ids, ":reply")))
	var tokens int
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT COALESCE(SUM(tokens_used), 0) FROM usage_records`).Scan(&tokens))
	require.Equal(t, e.count(`SELECT COALESCE(SUM(tokens), 0) FROM messages WHERE role = 'assistant'`), tokens, "usage flushed at shutdown")
	_, _, err := e.dial(ctx, tok, 1)
	require.True(t, err != nil && !errors.Is(err, context.DeadlineExceeded), "no longer accepting")
}

func withSuffix(ids []string, suffix string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id + suffix
	}
	return out
}

// A responder that does not answer in time: at the shutdown deadline it is
// canceled, the client is told, and the message it acknowledged is stored.
func TestShutdownDeadlineCancelsResponders(t *testing.T) {
	t.Parallel()
	e := start(t, Options{ResponderDelay: time.Hour})
	tok := e.tenant("acme")
	conv := e.conversation(tok, "c")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := e.dial(ctx, tok, conv)
	require.NoError(t, err)
	defer func() { _ = c.CloseNow() }()
	send(t, ctx, c, map[string]string{"content": "anyone there?", "id": "q"})
	require.Equal(t, frame{Status: "received", ID: "q"}, recv(t, ctx, c))

	stopped := make(chan error, 1)
	go func() { stopped <- e.stopWithin(300 * time.Millisecond) }()
	require.Equal(t, frame{ID: "q", Error: "no reply: server shutting down"}, recv(t, ctx, c))
	_, _, err = c.Read(ctx)
	require.Equal(t, websocket.StatusGoingAway, websocket.CloseStatus(err))
	require.NoError(t, <-stopped)
	require.Equal(t, 1, e.count(`SELECT COUNT(*) FROM messages WHERE client_id = 'acme:q'`))
}
