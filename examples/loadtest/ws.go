package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit/cache"
)

type wsConfig struct {
	url, token, adminToken, databaseURL string
	clients, messages, conversations    int
	timeout                             time.Duration
}

func parseWSFlags(args []string) (wsConfig, error) {
	var c wsConfig
	fs := flag.NewFlagSet("loadtest ws", flag.ContinueOnError)
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "the chat service")
	fs.StringVar(&c.token, "token", os.Getenv("CHAT_TOKEN"), "a tenant's token ($CHAT_TOKEN)")
	fs.StringVar(&c.adminToken, "admin-token", os.Getenv("CHAT_ADMIN_TOKEN"), "without -token: create a tenant of the run's own with this admin token ($CHAT_ADMIN_TOKEN)")
	fs.StringVar(&c.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "the service's database, as a superuser or owner (RLS would hide the rows), to check that every acknowledged message was stored ($DATABASE_URL)")
	fs.IntVar(&c.clients, "clients", 100, "concurrent WebSocket clients")
	fs.IntVar(&c.messages, "messages", 10, "messages per client")
	fs.IntVar(&c.conversations, "conversations", 0, "conversations the clients share; 0: one per client")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "bound of the whole run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case c.token == "" && c.adminToken == "":
		return c, errors.New("-token or -admin-token is required")
	case c.databaseURL == "":
		return c, errors.New("-database-url is required: the run checks that every acknowledged message was stored")
	case c.clients < 1 || c.messages < 1:
		return c, errors.New("-clients and -messages must be positive")
	}
	if c.conversations <= 0 || c.conversations > c.clients {
		c.conversations = c.clients
	}
	c.url = strings.TrimRight(c.url, "/")
	return c, nil
}

// wsResult is the ws test's line.
type wsResult struct {
	Test                string  `json:"test"`
	Clients             int     `json:"clients"`
	MessagesPerClient   int     `json:"messages_per_client"`
	Connected           int64   `json:"connected"`
	ConnectErrors       int64   `json:"connect_errors"`
	Sent                int64   `json:"sent"`
	Acks                int64   `json:"acks"`
	Replies             int64   `json:"replies"`
	ErrorFrames         int64   `json:"error_frames"`
	Unanswered          int64   `json:"unanswered"`
	Seconds             float64 `json:"seconds"`
	MessagesPerSec      float64 `json:"messages_per_sec"`
	ConnectP50ms        float64 `json:"connect_p50_ms"`
	ConnectP99ms        float64 `json:"connect_p99_ms"`
	AckP50ms            float64 `json:"ack_p50_ms"`
	AckP95ms            float64 `json:"ack_p95_ms"`
	AckP99ms            float64 `json:"ack_p99_ms"`
	ReplyP50ms          float64 `json:"reply_p50_ms"`
	ReplyP95ms          float64 `json:"reply_p95_ms"`
	ReplyP99ms          float64 `json:"reply_p99_ms"`
	ClientPeakHeapBytes uint64  `json:"client_peak_heap_bytes"`
	ServerPeakHeapBytes uint64  `json:"server_peak_heap_bytes"`
	ServerPeakWSConns   int64   `json:"server_peak_ws_connections"`
	Persisted           int64   `json:"persisted"`
	Verified            bool    `json:"verified"`
	FirstError          string  `json:"first_error,omitempty"`
}

// wsRun is the state shared by the clients of one run.
type wsRun struct {
	cfg    wsConfig
	http   *http.Client
	token  string
	tenant string
	runID  string

	connected, connectErrs, sent, acks, replies, errFrames atomic.Int64

	mu       sync.Mutex
	connLat  []time.Duration
	ackLat   []time.Duration
	replyLat []time.Duration
	ackedIDs []string
	firstErr string
}

func (r *wsRun) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.firstErr == "" {
		r.firstErr = err.Error()
	}
}

func runWS(ctx context.Context, c wsConfig, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	defer transport.CloseIdleConnections()
	r := &wsRun{cfg: c, http: &http.Client{Transport: transport, Timeout: time.Minute}, token: c.token, runID: randomHex(4)}
	if r.token == "" {
		r.tenant = "lt-" + r.runID
		var created struct {
			Token string `json:"token"`
		}
		if err := r.api(ctx, "POST", "/api/admin/tenants", c.adminToken, map[string]string{"id": r.tenant}, &created); err != nil {
			return fmt.Errorf("create a tenant: %w", err)
		}
		r.token = created.Token
	}
	db, err := pgx.Connect(ctx, c.databaseURL)
	if err != nil {
		return fmt.Errorf("-database-url: %w", err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	if r.tenant == "" {
		sum := sha256.Sum256([]byte(r.token))
		if err := db.QueryRow(ctx, `SELECT id FROM tenants WHERE token_hash = $1`, sum[:]).Scan(&r.tenant); err != nil {
			return fmt.Errorf("find the token's tenant in the database: %w", err)
		}
	}
	convs, err := r.createConversations(ctx)
	if err != nil {
		return err
	}

	// Every client connects, then all send at once, so that C connections
	// are open together; the clock runs from the first message.
	sampler := newSampler(r.http, c.url+"/metrics")
	var dialed, wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range c.clients {
		wg.Add(1)
		dialed.Add(1)
		go func() {
			defer wg.Done()
			r.client(ctx, i, convs[i%len(convs)], dialed.Done, gate)
		}()
	}
	dialed.Wait()
	// Every client is connected now. A dial returns on the server's 101,
	// which the server writes before it counts the connection: sample until
	// it counts them all (or 5 s pass: the result then shows the shortfall).
	sampler.sampleUntil(int64(c.clients), 5*time.Second)
	started := time.Now()
	close(gate)
	wg.Wait()
	elapsed := time.Since(started)
	clientHeap, serverHeap, serverConns := sampler.stop()

	res := wsResult{Test: "ws", Clients: c.clients, MessagesPerClient: c.messages,
		Connected: r.connected.Load(), ConnectErrors: r.connectErrs.Load(), Sent: r.sent.Load(), Acks: r.acks.Load(),
		Replies: r.replies.Load(), ErrorFrames: r.errFrames.Load(), Seconds: round(elapsed.Seconds()),
		MessagesPerSec:      round2(float64(r.acks.Load()) / elapsed.Seconds()),
		ClientPeakHeapBytes: clientHeap, ServerPeakHeapBytes: serverHeap, ServerPeakWSConns: serverConns}
	res.Unanswered = res.Acks - res.Replies
	res.ConnectP50ms, _, res.ConnectP99ms = percentiles(r.connLat)
	res.AckP50ms, res.AckP95ms, res.AckP99ms = percentiles(r.ackLat)
	res.ReplyP50ms, res.ReplyP95ms, res.ReplyP99ms = percentiles(r.replyLat)

	res.Persisted, err = r.verify(ctx, db)
	if err != nil {
		r.fail(fmt.Errorf("verify: %w", err))
	}
	res.Verified = err == nil && res.Persisted == res.Acks
	res.FirstError = r.firstErr
	if err := emit(out, res); err != nil {
		return err
	}
	if !res.Verified || res.ConnectErrors > 0 || res.Acks != res.Sent || res.Unanswered != 0 {
		return errFailed
	}
	return nil
}

// createConversations makes the run's conversations, 16 requests at a time.
func (r *wsRun) createConversations(ctx context.Context) ([]int64, error) {
	convs := make([]int64, r.cfg.conversations)
	errs := make(chan error, len(convs))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range convs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var c struct {
				ID int64 `json:"id"`
			}
			if err := r.api(ctx, "POST", "/api/conversations", r.token, map[string]string{"title": "load test " + r.runID}, &c); err != nil {
				errs <- err
				return
			}
			convs[i] = c.ID
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("create conversations: %w", err)
	}
	return convs, nil
}

// client connects, sends its messages back to back (as fast as the server
// reads them) and reads until every message has its reply or an error.
func (r *wsRun) client(ctx context.Context, i int, conv int64, dialed func(), gate <-chan struct{}) {
	wsURL := "ws" + strings.TrimPrefix(r.cfg.url, "http") + "/api/ws/conversations/" + strconv.FormatInt(conv, 10)
	t0 := time.Now()
	c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: r.http,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + r.token}}})
	dialed()
	if resp != nil && resp.Body != nil { // only on failure: a copy of the body
		_ = resp.Body.Close()
	}
	if err != nil {
		r.connectErrs.Add(1)
		r.fail(fmt.Errorf("dial: %w", err))
		return
	}
	defer func() { _ = c.CloseNow() }()
	connLat := time.Since(t0)
	r.connected.Add(1)
	select {
	case <-gate:
	case <-ctx.Done():
		return
	}

	n := r.cfg.messages
	sentAt := make([]time.Time, n)
	var sentMu sync.Mutex
	ackLat := make([]time.Duration, 0, n)
	replyLat := make([]time.Duration, 0, n)
	var acked []string
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		answered := 0
		for answered < n {
			_, b, err := c.Read(ctx)
			if err != nil {
				r.fail(fmt.Errorf("read: %w", err))
				return
			}
			var f struct{ Status, ID, Content, Error string }
			if err := json.Unmarshal(b, &f); err != nil {
				r.fail(fmt.Errorf("bad frame: %w", err))
				continue
			}
			j, ok := r.index(f.ID, i)
			if !ok || j >= n {
				continue
			}
			sentMu.Lock()
			at := sentAt[j]
			sentMu.Unlock()
			switch {
			case f.Status == "received":
				ackLat = append(ackLat, time.Since(at))
				acked = append(acked, cache.Key(r.tenant, f.ID))
				r.acks.Add(1)
			case f.Error != "":
				r.errFrames.Add(1)
				r.fail(errors.New("server: " + f.Error))
				answered++
			default:
				replyLat = append(replyLat, time.Since(at))
				r.replies.Add(1)
				answered++
			}
		}
	}()
	for j := range n {
		b, _ := json.Marshal(map[string]string{"id": r.id(i, j), "content": fmt.Sprintf("message %d of client %d: how are you today?", j, i)})
		sentMu.Lock()
		sentAt[j] = time.Now()
		sentMu.Unlock()
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			r.fail(fmt.Errorf("write: %w", err))
			break
		}
		r.sent.Add(1)
	}
	<-readDone
	_ = c.Close(websocket.StatusNormalClosure, "")

	r.mu.Lock()
	r.connLat = append(r.connLat, connLat)
	r.ackLat = append(r.ackLat, ackLat...)
	r.replyLat = append(r.replyLat, replyLat...)
	r.ackedIDs = append(r.ackedIDs, acked...)
	r.mu.Unlock()
}

// id is message j of client i: unique to the run, so the check finds
// exactly this run's rows.
func (r *wsRun) id(i, j int) string { return fmt.Sprintf("lt%s-c%d-m%d", r.runID, i, j) }

// index parses an id of client i back to its message number.
func (r *wsRun) index(id string, i int) (int, bool) {
	rest, ok := strings.CutPrefix(id, fmt.Sprintf("lt%s-c%d-m", r.runID, i))
	if !ok {
		return 0, false
	}
	j, err := strconv.Atoi(rest)
	return j, err == nil
}

// verify waits (up to 30s: the service's writer flushes every 100ms) until
// every acknowledged message is in the database, and returns how many are.
func (r *wsRun) verify(ctx context.Context, db *pgx.Conn) (int64, error) {
	want := int64(len(r.ackedIDs))
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int64
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM messages WHERE role = 'user' AND client_id = ANY($1)`, r.ackedIDs).Scan(&n); err != nil {
			return 0, err
		}
		if n >= want || time.Now().After(deadline) {
			return n, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return n, ctx.Err()
		}
	}
}

// api calls the chat service's JSON API.
func (r *wsRun) api(ctx context.Context, method, path, token string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, r.cfg.url+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	return json.Unmarshal(raw, out)
}

// sampler records this process's peak heap and, from the service's
// /metrics, its peak heap and WebSocket connections, every 250ms.
type sampler struct {
	httpc          *http.Client
	url            string
	mu             sync.Mutex
	quit, done     chan struct{}
	client, server uint64
	serverConns    int64
}

func newSampler(client *http.Client, metricsURL string) *sampler {
	s := &sampler{quit: make(chan struct{}), done: make(chan struct{}), httpc: client, url: metricsURL}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sample()
			select {
			case <-s.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// sampleUntil samples until the server reports at least conns WebSocket
// connections, or for at most d.
func (s *sampler) sampleUntil(conns int64, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		s.sample()
		s.mu.Lock()
		enough := s.serverConns >= conns
		s.mu.Unlock()
		if enough || time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sample takes one sample; safe for concurrent use.
func (s *sampler) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap, conns, ok := scrape(s.httpc, s.url)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client = max(s.client, ms.HeapInuse)
	if ok {
		s.server = max(s.server, heap)
		s.serverConns = max(s.serverConns, conns)
	}
}

func (s *sampler) stop() (client, server uint64, serverConns int64) {
	close(s.quit)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client, s.server, s.serverConns
}

// scrape reads go_memstats_heap_inuse_bytes and chat_websocket_connections.
func scrape(client *http.Client, url string) (heap uint64, conns int64, ok bool) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, found := strings.Cut(sc.Text(), " ")
		if !found {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			heap, ok = uint64(f), true
		case "chat_websocket_connections":
			conns = int64(f)
		}
	}
	return heap, conns, ok
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
