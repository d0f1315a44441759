package pgkit

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// connectFailuresBeforeBackoff is how many connection attempts in a row
// must fail before a pool backs off: one failure can be one bad connection
// (a backend killed while starting, a race with a restart), two in a row
// say the server is not taking connections.
const connectFailuresBeforeBackoff = 2

// connectBackoff is one pool's memory of its connection attempts. After
// connectFailuresBeforeBackoff failures in a row it lets no attempt through
// until a jittered wait has passed (ConnectBackoffStart, doubling with each
// further failure up to Config.ConnectBackoff), then lets one through; the
// calls that need a connection meanwhile fail at once with an
// *UnreachableError carrying the last attempt's error. The first success
// ends it.
//
// Without it, every call that finds no idle connection makes an attempt of
// its own: a server that is down and refuses at once gets thousands of them
// a second from a busy service (TestConnectBackoffDuringOutage).
//
// It is pgxpool's BeforeConnect (the check) and sees each attempt end
// through its pool's poolTracer. Attempts that were failing also explain an
// Acquire that AcquireTimeout ended (timeoutError).
type connectBackoff struct {
	max     time.Duration // the longest wait; 0: never wait (ConnectBackoff Disabled)
	logger  *slog.Logger
	addr    string      // host:port (every host of a multi-host URL), for the log
	closing func() bool // whether the DB is closing

	mu       sync.Mutex
	failures int       // attempts failed in a row, since the last success
	lastErr  error     // the latest failed attempt's error
	firstAt  time.Time // when the first of failures failed
	lastAt   time.Time // when the latest failed
	retryAt  time.Time // while backing off: no attempt before this
	probing  bool      // the one attempt let through after retryAt has not ended
	inFlight int       // attempts started and not ended
}

func newConnectBackoff(cfg *Config, pcfg *pgxpool.Config, closing func() bool) *connectBackoff {
	return &connectBackoff{
		max:     max(cfg.ConnectBackoff, 0),
		logger:  cfg.alerts,
		addr:    hostsOf(pcfg),
		closing: closing,
	}
}

// beforeConnect is the pool's BeforeConnect: nil lets the attempt go on.
func (b *connectBackoff) beforeConnect(context.Context, *pgx.ConnConfig) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.backingOff() {
		if b.probing || time.Now().Before(b.retryAt) {
			return b.unreachable(false)
		}
		b.probing = true
	}
	b.inFlight++
	return nil
}

func (b *connectBackoff) backingOff() bool {
	return b.max > 0 && b.failures >= connectFailuresBeforeBackoff
}

// ended records the outcome of an attempt that beforeConnect let through.
func (b *connectBackoff) ended(err error) {
	now := time.Now()
	b.mu.Lock()
	b.inFlight = max(b.inFlight-1, 0)
	b.probing = false
	var logStart, logEnd bool
	var failures int
	var downFor time.Duration
	switch {
	case err == nil:
		logEnd = b.backingOff()
		failures, downFor = b.failures, now.Sub(b.firstAt)
		b.failures, b.lastErr = 0, nil
	case errors.Is(err, context.Canceled) || b.closing():
		// The DB is closing: the pool cancels the attempts in progress, and
		// the DB refuses their dials and cuts short their reads. That says
		// nothing about the server, and a shutdown logs no outage.
	default:
		if b.failures == 0 {
			b.firstAt = now
		}
		b.failures++
		b.lastErr, b.lastAt = err, now
		if b.backingOff() {
			logStart = b.failures == connectFailuresBeforeBackoff
			d := min(ConnectBackoffStart, b.max) << min(b.failures-connectFailuresBeforeBackoff, 30)
			if d <= 0 || d > b.max {
				d = b.max
			}
			b.retryAt = now.Add(d/2 + rand.N(d/2+1)) // between half and all of d
		}
		failures = b.failures
	}
	b.mu.Unlock()
	switch {
	case logStart:
		b.logger.LogAttrs(context.Background(), slog.LevelWarn,
			"pgkit: cannot connect to the database; new connection attempts back off until one succeeds",
			slog.String("addr", b.addr), slog.Int("failed_attempts", failures), slog.Duration("max_backoff", b.max),
			slog.String("error", err.Error()))
	case logEnd:
		b.logger.LogAttrs(context.Background(), slog.LevelInfo, "pgkit: connected to the database again",
			slog.String("addr", b.addr), slog.Int("failed_attempts", failures), slog.Duration("down_for", downFor))
	}
}

// timeoutError explains an Acquire that started at waitStart and that
// AcquireTimeout ended: an *UnreachableError when connection attempts were
// failing during the wait (the last one failed, and it either ended during
// the wait or another is still trying), else nil: the pool was busy.
func (b *connectBackoff) timeoutError(waitStart time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures == 0 || b.inFlight == 0 && b.lastAt.Before(waitStart) {
		return nil
	}
	return b.unreachable(true)
}

func (b *connectBackoff) unreachable(acquireTimeout bool) *UnreachableError {
	return &UnreachableError{Err: b.lastErr, Failures: b.failures, FailingFor: time.Since(b.firstAt), AcquireTimeout: acquireTimeout}
}

// poolTracer is the tracer as one pool sees it: the tracer of the DB's
// pools of that role, and this pool's connectBackoff. It is what
// Config.trace installs on a pool's connections.
type poolTracer struct {
	*tracer
	conns *connectBackoff
}

// TraceConnectEnd implements pgx.ConnectTracer.
func (pt *poolTracer) TraceConnectEnd(ctx context.Context, data pgx.TraceConnectEndData) {
	pt.tracer.TraceConnectEnd(ctx, data)
	pt.conns.ended(data.Err)
}

// TraceAcquireStart implements pgxpool.AcquireTracer.
func (pt *poolTracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	return pt.acquireStart(ctx, pt.conns)
}
