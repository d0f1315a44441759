package pgkit

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// probe is the one check Health and the replica checks run: sql, scanned
// into dest, on pool within ctx (bounded by the caller's cfg.HealthTimeout). It
// gives the pool half of timeout to lend a connection, so that when none
// comes because every one is checked out, the other half can open a
// connection of the probe's own (untraced, outside the pool) and tell a busy
// pool (the server answers) from a server that does not. busy reports that
// the pool had no connection to lend; latency is the query's round trip.
func probe(ctx context.Context, pool *pgxpool.Pool, cfg *Config, sql string, dest ...any) (busy bool, latency time.Duration, err error) {
	ctx = WithQueryName(ctx, healthQueryName)
	acquireCtx, cancel := context.WithTimeout(ctx, cfg.HealthTimeout/2)
	conn, err := pool.Acquire(acquireCtx)
	cancel()
	if err == nil {
		defer conn.Release()
		start := time.Now()
		err = conn.QueryRow(ctx, sql).Scan(dest...)
		return false, time.Since(start), err
	}
	if !busyPool(pool, err) {
		return false, 0, err
	}
	// Every connection is checked out: busy callers, or callers stuck on a
	// server that stopped answering. A connection of the probe's own tells.
	direct, err := connectDirect(ctx, pool, cfg)
	if err != nil {
		return true, 0, err
	}
	defer direct.Close(context.WithoutCancel(ctx))
	start := time.Now()
	err = direct.QueryRow(ctx, sql).Scan(dest...)
	return true, time.Since(start), err
}

// busyPool reports whether an Acquire on pool failed with err because every
// connection was checked out until it timed out: the pool is busy, which
// says nothing yet about the server.
func busyPool(pool *pgxpool.Pool, err error) bool {
	st := pool.Stat()
	return (isAcquireTimeout(err) || errors.Is(err, context.DeadlineExceeded)) && st.AcquiredConns() >= st.MaxConns()
}

// connectDirect opens a connection to pool's server outside the pool and
// untraced, so that neither AcquireTimeout nor the pool's metrics have a say
// in it. cfg.BeforeConnect has its say: it may hold the password.
func connectDirect(ctx context.Context, pool *pgxpool.Pool, cfg *Config) (*pgx.Conn, error) {
	cc := pool.Config().ConnConfig
	cc.Tracer = nil
	return connectConfig(ctx, cc, cfg)
}

// connectConfig opens a connection with cc (a copy of its own: BeforeConnect
// may change it) after cfg.BeforeConnect.
func connectConfig(ctx context.Context, cc *pgx.ConnConfig, cfg *Config) (*pgx.Conn, error) {
	cc = cc.Copy()
	if cfg.BeforeConnect != nil {
		if err := cfg.BeforeConnect(ctx, cc); err != nil {
			return nil, err
		}
	}
	return pgx.ConnectConfig(ctx, cc)
}
