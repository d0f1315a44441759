// Command chat is a multi-tenant chat backend on pgkit:
// a JSON API for conversations and messages, a WebSocket endpoint that
// acknowledges a message at once, stores it through a background writer and
// answers through a Responder, per-tenant dashboard statistics through a
// cache, and the operations endpoints (/metrics, /healthz, /readyz,
// /api/admin/db-stats, /debug/pgkit/). Every request's queries run in a
// transaction scoped to its tenant, as a role that row-level security
// applies to.
//
// With no database URL it starts a throwaway PostgreSQL server (local
// binaries, else Docker) and removes it on exit.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/pgkit-dev/pgkit/cache/redisstore"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

// config is what flags and the environment set; a flag wins over its
// variable.
type config struct {
	listen, databaseURL, adminToken, redisURL, readyFile, rolePassword, logLevel string
	responderDelay, shutdownTimeout                                              time.Duration
	maxConns, maxContent                                                         int
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", env("CHAT_LISTEN", "127.0.0.1:8080"), "listen address ($CHAT_LISTEN)")
	fs.StringVar(&c.databaseURL, "database-url", env("CHAT_DATABASE_URL", os.Getenv("DATABASE_URL")),
		"a superuser URL (or the tables' owner, with CREATEROLE); setup creates the roles the service runs as ($CHAT_DATABASE_URL, $DATABASE_URL); empty: a throwaway server")
	fs.StringVar(&c.adminToken, "admin-token", env("CHAT_ADMIN_TOKEN", ""), "bearer token for /api/admin/* and /debug/pgkit/ ($CHAT_ADMIN_TOKEN); empty: admin endpoints refuse everyone")
	fs.StringVar(&c.redisURL, "redis-url", env("CHAT_REDIS_URL", ""), "Redis for the dashboard cache ($CHAT_REDIS_URL); empty: in memory")
	fs.StringVar(&c.rolePassword, "role-password", env("CHAT_ROLE_PASSWORD", ""), "password set on the service's roles ($CHAT_ROLE_PASSWORD); empty: random per start")
	fs.StringVar(&c.readyFile, "ready-file", "", "once serving, write {\"url\":..., \"database_url\":...} to this file (for scripts)")
	fs.StringVar(&c.logLevel, "log-level", env("CHAT_LOG_LEVEL", "info"), "debug, info, warn or error ($CHAT_LOG_LEVEL)")
	fs.DurationVar(&c.responderDelay, "responder-delay", envDuration("CHAT_RESPONDER_DELAY", 200*time.Millisecond), "the local responder's delay, standing in for the AI call ($CHAT_RESPONDER_DELAY)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", envDuration("CHAT_SHUTDOWN_TIMEOUT", 15*time.Second), "how long replies in flight may take at shutdown ($CHAT_SHUTDOWN_TIMEOUT)")
	fs.IntVar(&c.maxConns, "max-conns", envInt("CHAT_MAX_CONNS", 0), "request pool size ($CHAT_MAX_CONNS); 0: pgkit's default")
	fs.IntVar(&c.maxContent, "max-content", envInt("CHAT_MAX_CONTENT", 8<<10), "largest message content in bytes ($CHAT_MAX_CONTENT)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, nil
}

func run(ctx context.Context, args []string) error {
	c, err := parseFlags(args)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dbURL := c.databaseURL
	if dbURL == "" {
		logger.Info("no -database-url: starting a throwaway PostgreSQL server")
		startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		cluster, err := pgtest.Start(startCtx)
		cancel()
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Close(); err != nil {
				logger.Error("chat: removing the throwaway server", slog.String("error", err.Error()))
			}
		}()
		dbURL = cluster.URL()
	}
	if c.adminToken == "" {
		logger.Warn("no -admin-token: /api/admin/* and /debug/pgkit/ refuse every request")
	}
	opts := Options{DatabaseURL: dbURL, RolePassword: c.rolePassword, AdminToken: c.adminToken,
		ResponderDelay: c.responderDelay, MaxContentBytes: c.maxContent, MaxConns: int32(c.maxConns), Logger: logger}
	if c.redisURL != "" {
		ropts, err := redis.ParseURL(c.redisURL)
		if err != nil {
			return fmt.Errorf("-redis-url: %w", err)
		}
		ropts.ContextTimeoutEnabled = true
		client := redis.NewClient(ropts)
		defer func() { _ = client.Close() }()
		if opts.CacheStore, err = redisstore.New(client, "chat:"); err != nil {
			return err
		}
	}
	setupCtx, cancel := context.WithTimeout(ctx, time.Minute)
	srv, err := NewServer(setupCtx, opts)
	cancel()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	logger.Info("chat: serving", slog.String("url", url))
	if c.readyFile != "" {
		b, _ := json.Marshal(map[string]string{"url": url, "database_url": dbURL})
		if err := os.WriteFile(c.readyFile, b, 0o600); err != nil {
			logger.Error("chat: -ready-file", slog.String("error", err.Error()))
		}
	}

	select {
	case <-ctx.Done():
		logger.Info("chat: shutting down")
	case err := <-served:
		_ = srv.Shutdown(context.Background())
		return err
	}
	return shutdown(hs, srv, served, c.shutdownTimeout, logger)
}

// shutdown stops accepting (new connections and requests), lets requests
// finish, drains and closes the WebSockets, then closes the writer and the
// pools: see Server.Shutdown.
func shutdown(hs *http.Server, srv *Server, served chan error, timeout time.Duration, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errHTTP := hs.Shutdown(ctx)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		errHTTP = errors.Join(errHTTP, err)
	}
	err := errors.Join(errHTTP, srv.Shutdown(ctx))
	if err == nil {
		logger.Info("chat: stopped; every acknowledged message is stored")
	}
	return err
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}
