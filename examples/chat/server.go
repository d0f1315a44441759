package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configures a Server. Zero fields take the defaults shown.
type Options struct {
	// DatabaseURL is an owner (or superuser) URL: setup runs there and
	// creates the roles the service then connects as. Required.
	DatabaseURL string
	// RolePassword is set on the two roles setup creates. Default: random
	// per start (fine for one instance; give every instance the same one
	// when running several).
	RolePassword string
	// AdminToken guards /api/admin/* and /debug/pgkit/. Empty: they answer 401.
	AdminToken string
	// Responder answers messages. Default LocalResponder{Delay: ResponderDelay}.
	Responder Responder
	// ResponderDelay is the default responder's delay. Default 0.
	ResponderDelay time.Duration
	// MaxContentBytes bounds a message's content. Default 8 KiB.
	MaxContentBytes int
	// MaxConns bounds the request pool. Default pgkit.DefaultMaxConns().
	MaxConns int32
	// InFlightPerConn bounds the messages of one WebSocket awaiting their
	// reply; reading stops when it is reached. Default 16.
	InFlightPerConn int
	// WriteTimeout bounds one WebSocket write; a client that does not read
	// for that long is disconnected. Default 10s.
	WriteTimeout time.Duration
	// UsageFlushInterval is how often usage records are updated. Default 1s.
	UsageFlushInterval time.Duration
	// WriterFlushInterval is the background writer's. Default 100ms.
	WriterFlushInterval time.Duration
	// CacheStore holds the dashboard cache. Default: in memory.
	CacheStore cache.Store
	// Logger. Default: discard.
	Logger *slog.Logger
}

// Server is the chat backend.
type Server struct {
	opts     Options
	log      *slog.Logger
	roles    roles
	registry *prometheus.Registry
	db       *pgkit.DB // app role: requests, always with a tenant
	wdb      *pgkit.DB // writer role: the background Writer only
	writer   *pgkit.Writer[messageRow]
	cache    *cache.Cache[dashboardStats]
	memStore *cache.MemoryStore
	usage    *usageMeter
	hub      *hub
	handler  http.Handler
	closing  atomic.Bool

	wsConns    prometheus.Gauge
	wsMessages *prometheus.CounterVec
	wsSlow     prometheus.Counter
}

// messageRow is a row of messages as the Writer writes it.
type messageRow struct {
	TenantID       string `db:"tenant_id"`
	ConversationID int64  `db:"conversation_id"`
	Role           string `db:"role"`
	Content        string `db:"content"`
	ClientID       string `db:"client_id"`
	Tokens         int32  `db:"tokens"`
}

// NewServer sets up the database and opens the pools, the writer, the cache
// and the usage meter. Close it with Shutdown.
func NewServer(ctx context.Context, o Options) (_ *Server, err error) {
	if o.DatabaseURL == "" {
		return nil, errors.New("chat: Options.DatabaseURL is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Responder == nil {
		o.Responder = LocalResponder{Delay: o.ResponderDelay}
	}
	if o.MaxContentBytes <= 0 {
		o.MaxContentBytes = 8 << 10
	}
	if o.InFlightPerConn <= 0 {
		o.InFlightPerConn = 16
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.UsageFlushInterval <= 0 {
		o.UsageFlushInterval = time.Second
	}
	if o.WriterFlushInterval <= 0 {
		o.WriterFlushInterval = 100 * time.Millisecond
	}
	s := &Server{opts: o, log: o.Logger, registry: prometheus.NewRegistry()}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	if s.roles, err = setup(ctx, o.DatabaseURL, o.RolePassword); err != nil {
		return nil, err
	}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.wsConns = prometheus.NewGauge(prometheus.GaugeOpts{Name: "chat_websocket_connections", Help: "Open WebSocket connections."})
	s.wsMessages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_websocket_messages_total",
		Help: "WebSocket messages by outcome: acked (queued for the database), replied, rejected (not stored), failed (no reply), lost (acked, then refused by the database or out of retries)."},
		[]string{"outcome"})
	s.wsSlow = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_websocket_slow_disconnects_total",
		Help: "WebSockets closed because the client did not read for WriteTimeout."})
	s.registry.MustRegister(s.wsConns, s.wsMessages, s.wsSlow)

	if s.db, err = pgkit.Open(ctx, pgkit.Config{URL: s.roles.AppURL, Name: "chat", ApplicationName: "chat",
		MaxConns: o.MaxConns, Registerer: s.registry, Logger: o.Logger}); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, s.db.Close)
	if s.wdb, err = pgkit.Open(ctx, pgkit.Config{URL: s.roles.WriterURL, Name: "chat_writer", ApplicationName: "chat-writer",
		MaxConns: 2, Registerer: s.registry, Logger: o.Logger}); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, s.wdb.Close)
	if s.writer, err = pgkit.NewWriter(s.wdb, pgkit.WriterConfig[messageRow]{
		Table: "messages", Name: "chat_messages", DedupeKey: "client_id",
		FlushInterval: o.WriterFlushInterval, BatchSize: 1000,
		// Only after WriterConfig.RetryFor (1 min) of outage, or a row the
		// database refuses: say so loudly, these were acknowledged.
		OnError: func(items []messageRow, err error) {
			s.wsMessages.WithLabelValues("lost").Add(float64(len(items)))
			o.Logger.Error("chat: acknowledged messages could not be stored",
				slog.Int("count", len(items)), slog.String("error", err.Error()))
		},
	}); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { _ = s.writer.Close(context.WithoutCancel(ctx)) })

	store := o.CacheStore
	if store == nil {
		if s.memStore, err = cache.NewMemoryStore(cache.MemoryStoreConfig{MaxEntries: 10_000}); err != nil {
			return nil, err
		}
		cleanup = append(cleanup, s.memStore.Close)
		store = s.memStore
	}
	if s.cache, err = cache.New[dashboardStats](store, cache.Config{Name: "dashboard_stats",
		Registerer: s.registry, Logger: o.Logger}); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, s.cache.Close)
	s.usage = newUsageMeter(s.db, s.writer, s.cache, o.UsageFlushInterval, o.Logger)
	s.hub = newHub()
	s.handler = s.routes()
	return s, nil
}

// Handler serves the HTTP API, the WebSocket endpoint and the operations
// endpoints.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern string, h http.Handler) { mux.Handle(pattern, pgkit.Middleware(h)) }
	api("POST /api/conversations", s.authed(s.createConversation))
	api("GET /api/conversations", s.authed(s.listConversations))
	api("POST /api/conversations/{id}/messages", s.authed(s.postMessage))
	api("GET /api/conversations/{id}/messages", s.authed(s.listMessages))
	api("GET /api/dashboard", s.authed(s.dashboard))
	mux.Handle("GET /api/ws/conversations/{id}", s.authed(s.websocket))

	admin := pgkit.BearerToken(s.opts.AdminToken)
	api("POST /api/admin/tenants", s.adminOnly(admin, s.createTenant))
	mux.Handle("GET /api/admin/db-stats", pgkit.StatsHandler(s.db, admin))
	mux.Handle("/debug/pgkit/", http.StripPrefix("/debug/pgkit", pgkit.DashboardHandler(s.db, admin,
		pgkit.WithDashboardSource("dashboard_stats", s.cache.DashboardStats),
		pgkit.WithDashboardWriter(s.writer),
		pgkit.WithDashboardSource("websockets", func() map[string]float64 {
			return map[string]float64{"connections": float64(s.hub.count())}
		}))))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.Handle("GET /healthz", pgkit.HealthHandler(s.db))
	mux.HandleFunc("GET /readyz", s.ready)
	return jsonNotFound(mux)
}

// ready is 200 while the service takes traffic: not shutting down, and the
// database answers.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	if h := s.db.Health(r.Context()); h.Status == pgkit.StatusDown {
		writeError(w, http.StatusServiceUnavailable, "database down: "+h.Reason)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Shutdown ends the service once the HTTP server has stopped accepting
// (http.Server.Shutdown): WebSockets finish the replies in flight (until
// ctx's deadline, then their responders are canceled) and are closed with
// a close frame (1001 going away); then the writer writes everything it
// acknowledged, the usage meter flushes, and the pools close. Every message
// acknowledged before Shutdown is in the database when it returns nil.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.hub.shutdown(ctx)
	// The usage meter's last flush waits for the writer (Flush), so it goes
	// first; the writer's Close is not bounded by ctx: acknowledged messages
	// are written (or, after WriterConfig.RetryFor of outage, logged).
	errs := []error{s.usage.close(ctx), s.writer.Close(context.WithoutCancel(ctx))}
	s.cache.Close()
	if s.memStore != nil {
		s.memStore.Close()
	}
	// The pools get a bound of their own (ctx may be spent by now): a
	// connection still held after it is a leak, named in the error, and
	// closed anyway rather than holding the process.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), poolShutdownTimeout)
	defer cancel()
	errs = append(errs, s.wdb.Shutdown(pctx), s.db.Shutdown(pctx))
	return errors.Join(errs...)
}

// poolShutdownTimeout bounds the wait for the pools' connections at
// shutdown, once every request and the writer are done.
const poolShutdownTimeout = 5 * time.Second
