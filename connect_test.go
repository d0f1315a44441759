package pgkit_test

import (
	"context"
	"errors"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestConnectBackoffDuringOutage: 64 goroutines query without pause while
// the server is down for 3.4 s (the proxy cuts the open connections and
// resets every new one, counting them). The outage costs the server tens of
// connection attempts, not thousands; callers fail fast with the connection
// error rather than wait; the first query succeeds well within a second of
// the server being back; and the outage is logged twice, not per call.
func TestConnectBackoffDuringOutage(t *testing.T) {
	t.Parallel()
	const (
		outage      = 3400 * time.Millisecond
		maxAttempts = 100                     // TCP connections; measured 24–30 (each attempt and pgx's cancel request), 21,000–25,000 without the backoff
		maxRecovery = 1500 * time.Millisecond // measured 0.04–0.42 s (DefaultConnectBackoff 500 ms)
	)
	url, proxy := proxied(t)
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 4, ConnectTimeout: time.Second, Logger: slog.New(logs)})
	ctx := context.Background()

	var (
		oks         atomic.Int64
		upAt        atomic.Int64 // UnixNano when the server was back; 0 before
		firstOK     atomic.Int64 // UnixNano of the first success after upAt
		outageFails atomic.Int64
		unreachable atomic.Int64 // of outageFails, *pgkit.UnreachableError
		slowestFail atomic.Int64 // nanoseconds
		mu          sync.Mutex
		unexpected  []error
		stop        = make(chan struct{})
		wg          sync.WaitGroup
	)
	for range 64 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				_, err := db.Exec(ctx, `SELECT 1`)
				end := time.Now()
				if err == nil {
					oks.Add(1)
					if upAt.Load() != 0 {
						firstOK.CompareAndSwap(0, end.UnixNano())
					}
					continue
				}
				if upAt.Load() != 0 {
					continue // until the recovery, calls may still fail
				}
				outageFails.Add(1)
				if took := int64(end.Sub(start)); took > slowestFail.Load() {
					slowestFail.Store(took) // racy max, good enough for a bound
				}
				var ue *pgkit.UnreachableError
				var ce *pgconn.ConnectError
				switch {
				case errors.As(err, &ue):
					unreachable.Add(1)
					if !errors.As(err, &ce) || errors.Is(err, pgkit.ErrAcquireTimeout) {
						mu.Lock()
						unexpected = append(unexpected, err)
						mu.Unlock()
					}
				case errors.Is(err, pgkit.ErrAcquireTimeout):
					mu.Lock()
					unexpected = append(unexpected, err)
					mu.Unlock()
				}
			}
		})
	}
	require.Eventually(t, func() bool { return oks.Load() > 500 }, 10*time.Second, 5*time.Millisecond)

	before := proxy.Accepted()
	down := time.Now()
	proxy.Refuse(true)
	proxy.ResetAll()
	require.Eventually(t, func() bool { return time.Since(down) >= outage }, 2*outage, 10*time.Millisecond)
	attempts := proxy.Accepted() - before
	up := time.Now()
	upAt.Store(up.UnixNano())
	proxy.Refuse(false)
	require.Eventually(t, func() bool { return firstOK.Load() != 0 }, 10*time.Second, time.Millisecond, "the pool recovers")
	recovery := time.Duration(firstOK.Load() - up.UnixNano())
	close(stop)
	wg.Wait()

	t.Logf("%s outage under 64 goroutines: %d connection attempts, %d failed calls (%d fast-failed by the backoff, slowest %s); first success %s after the server was back",
		outage, attempts, outageFails.Load(), unreachable.Load(), time.Duration(slowestFail.Load()), recovery)
	require.Empty(t, unexpected, "during the outage callers get the connection error, never ErrAcquireTimeout")
	require.LessOrEqual(t, attempts, int64(maxAttempts), "connection attempts during the outage")
	require.Less(t, recovery, maxRecovery, "recovery after the server is back")
	require.Positive(t, unreachable.Load(), "callers fail fast while pgkit backs off")
	require.Less(t, time.Duration(slowestFail.Load()), time.Second, "no caller waits out AcquireTimeout (5 s) while the server is down")

	// The outage is logged once when the backoff starts and once when the
	// pool connects again, not per call.
	text := logs.Text()
	require.Equal(t, 1, strings.Count(text, "pgkit: cannot connect to the database"), text)
	require.Equal(t, 1, strings.Count(text, "pgkit: connected to the database again"), text)
	_, ok := logs.Find("pgkit: connected to the database again", "addr", proxy.Addr())
	require.True(t, ok, text)
}

// TestAcquireTimeoutSaysUnreachable: when AcquireTimeout ends a wait during
// which connection attempts were failing, the error says the database could
// not be reached and carries pgx's connection error, while still matching
// ErrAcquireTimeout and context.DeadlineExceeded: a service tells a database
// that is down from a pool that is busy.
func TestAcquireTimeoutSaysUnreachable(t *testing.T) {
	t.Parallel()
	const acquireTimeout = 300 * time.Millisecond
	url, proxy := proxied(t)
	proxy.Refuse(true)
	db := openTest(t, pgkit.Config{URL: url, LazyConnect: true, MaxConns: 2, AcquireTimeout: acquireTimeout, ConnectTimeout: 5 * time.Second})
	ctx := context.Background()

	// The first attempt is reset at once: pgx's connection error, as it is.
	_, err := db.Exec(ctx, `SELECT 1`)
	var ce *pgconn.ConnectError
	require.ErrorAs(t, err, &ce)
	require.NotErrorIs(t, err, pgkit.ErrAcquireTimeout)

	// Now the server accepts connections and never answers: the next
	// attempt hangs past AcquireTimeout.
	proxy.Refuse(false)
	proxy.Pause()
	start := time.Now()
	_, err = db.Exec(ctx, `SELECT 1`)
	took := time.Since(start)
	require.Error(t, err)
	require.ErrorIs(t, err, pgkit.ErrAcquireTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorAs(t, err, &ce, "the connection failure is carried: %v", err)
	require.Contains(t, err.Error(), "could not be reached")
	require.GreaterOrEqual(t, took, acquireTimeout)
	require.Less(t, took, acquireTimeout+time.Second)
}

// TestConnectBackoffSettings: one call after another against a server that
// resets every connection. By default, after two failures in a row the
// calls fail at once with *pgkit.UnreachableError (carrying pgx's error)
// instead of connecting; with ConnectBackoff Disabled each call connects,
// as with pgxpool. Bad values are refused, naming the field.
func TestConnectBackoffSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		backoff time.Duration
	}{{"default", 0}, {"disabled", pgkit.Disabled}} {
		url, proxy := proxied(t)
		proxy.Refuse(true)
		db := openTest(t, pgkit.Config{URL: url, LazyConnect: true, MaxConns: 2, ConnectBackoff: c.backoff})
		var attempts, fastFailed int
		for range 20 {
			before := proxy.Accepted()
			_, err := db.Exec(ctx, `SELECT 1`)
			require.Error(t, err)
			var ce *pgconn.ConnectError
			require.ErrorAs(t, err, &ce, c.name)
			if proxy.Accepted() > before {
				attempts++
			}
			var ue *pgkit.UnreachableError
			if errors.As(err, &ue) {
				fastFailed++
				require.False(t, ue.AcquireTimeout)
				require.NotErrorIs(t, err, pgkit.ErrAcquireTimeout)
				require.GreaterOrEqual(t, ue.Failures, 2)
				require.Contains(t, err.Error(), "pgkit: the database could not be reached")
			}
		}
		if c.backoff == pgkit.Disabled {
			require.Equal(t, pgkit.Disabled, db.Config().ConnectBackoff)
			require.Equal(t, 20, attempts, "disabled: every call connects")
			require.Zero(t, fastFailed)
		} else {
			require.Equal(t, pgkit.DefaultConnectBackoff, db.Config().ConnectBackoff)
			require.Positive(t, fastFailed, "default: calls fail fast after two failures")
			require.Less(t, attempts, 20)
		}
	}

	url := "postgres://postgres@127.0.0.1:5432/postgres"
	for _, c := range []struct {
		field string
		cfg   pgkit.Config
	}{
		{"ConnectBackoff", pgkit.Config{URL: url, ConnectBackoff: -2 * time.Second}},
		{"ConnectBackoff", pgkit.Config{URL: url, ConnectBackoff: -time.Millisecond}},
	} {
		db, err := pgkit.Open(ctx, c.cfg)
		require.Nil(t, db)
		var cerr *pgkit.ConfigError
		require.ErrorAs(t, err, &cerr)
		require.Equal(t, c.field, cerr.Field)
		require.True(t, strings.HasPrefix(err.Error(), "pgkit: invalid Config."+c.field+": "), err.Error())
	}
}

// TestCloseDuringConnectsLogsNoOutage: Close while connections are being
// made, on a healthy server. Closing refuses the attempts' dials (and cuts
// short those already reading), which says nothing about the server: a
// shutdown logs no "cannot connect" warning, and the calls waiting get
// ErrClosed.
func TestCloseDuringConnectsLogsNoOutage(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogRecorder{}
	const conns = 6
	entered := make(chan struct{}, conns)
	db, err := pgkit.Open(context.Background(), pgkit.Config{URL: pgtest.NewDatabase(t), MaxConns: conns,
		LazyConnect: true, Logger: slog.New(logs),
		// Holds each attempt until Close cancels it, then lets it dial:
		// every dial comes after Close began.
		BeforeConnect: func(ctx context.Context, _ *pgx.ConnConfig) error {
			entered <- struct{}{}
			<-ctx.Done()
			return nil
		}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, conns)
	for range conns {
		go func() { _, err := db.Exec(ctx, "SELECT 1"); errs <- err }()
	}
	for range conns {
		<-entered
	}
	closed := make(chan struct{})
	go func() { db.Close(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
	for range conns {
		require.ErrorIs(t, <-errs, pgkit.ErrClosed)
	}
	_, warned := logs.Find("pgkit: cannot connect to the database; new connection attempts back off until one succeeds")
	require.False(t, warned, "closing logged an outage:\n%s", logs.Text())
	_, again := logs.Find("pgkit: connected to the database again")
	require.False(t, again, "closing logged a recovery:\n%s", logs.Text())
}
