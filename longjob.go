package pgkit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// WithStatementTimeout runs fn on a connection of its own whose
// statement_timeout is d, for long work that cannot run in a transaction
// (CREATE INDEX CONCURRENTLY, VACUUM, a migration tool's own statements); in
// a transaction use InTx with the WithStatementTimeout option. ClientTimeout
// on the connection becomes d plus DefaultClientTimeoutMargin, so the work
// stays bounded. d must be positive.
//
// After fn, even when it panics, the connection's statement_timeout is reset
// to its value at connect; when that fails the connection is closed, never
// returned to the pool with d. Under Config.PgBouncer it is refused: in
// transaction pooling a session setting stays on a server connection that
// other clients get next.
func (db *DB) WithStatementTimeout(ctx context.Context, d time.Duration, fn func(conn *pgxpool.Conn) error) error {
	switch {
	case fn == nil:
		return errors.New("pgkit: WithStatementTimeout: fn is nil")
	case d <= 0:
		return fmt.Errorf("pgkit: WithStatementTimeout: the timeout must be positive (got %s); every statement stays bounded", d)
	case db.cfg.PgBouncer:
		return errors.New("pgkit: WithStatementTimeout: under PgBouncer a session setting would outlive the call on a shared server connection; run the work in InTx with the WithStatementTimeout option")
	}
	conn, err := db.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	liftClientBound(conn.Conn(), d)
	if _, err := conn.Exec(ctx, "SELECT set_config('statement_timeout', $1, false)", serverMillis(d)); err != nil {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(rctx, "RESET statement_timeout"); err != nil {
			_ = conn.Conn().Close(rctx) // Release destroys a closed connection
		}
	}()
	return fn(conn)
}
