package pgkit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Tx is a transaction (or a savepoint inside one) run by InTx: a pgx.Tx, so
// every Querier helper takes it, plus OnCommit.
type Tx interface {
	pgx.Tx
	// OnCommit registers fn to run after the outermost transaction commits,
	// in registration order, with the context given to InTx. It never runs
	// after a rollback, nor for an attempt that WithRetry retried; hooks
	// registered inside a savepoint that rolled back are dropped.
	OnCommit(fn func(ctx context.Context))
}

// TxStarter is what InTx runs on: anything with pgx's Begin. A *DB, a
// *pgxpool.Pool, a *pgxpool.Conn or a *pgx.Conn begins a new transaction; a
// Tx, or any other pgx.Tx, makes a savepoint inside its transaction. A fake
// in a unit test needs only Begin.
type TxStarter interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// txOptionsStarter is a TxStarter that takes transaction options, as
// *pgxpool.Pool, *pgxpool.Conn and *pgx.Conn do.
type txOptionsStarter interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// InTx runs fn in a transaction on q:
//
//   - on a *DB, or any other TxStarter that is not a transaction (a
//     *pgxpool.Pool, a *pgxpool.Conn, a *pgx.Conn), it begins a transaction with the options,
//     commits when fn returns nil, and rolls back when fn returns an error
//     (returned unchanged) or panics (the panic goes on after the rollback;
//     the connection goes back to the pool);
//   - on a Tx, or any other pgx.Tx, it makes a savepoint: an error inside
//     rolls back to it and leaves the outer transaction usable. Options that
//     belong to the outer transaction (isolation, access mode, OnReplica,
//     WithRetry, WithTenant, WithStatementTimeout) are refused there, before
//     fn runs; WithTimeout is allowed. OnCommit inside a savepoint of a
//     pgx.Tx that pgkit did not begin is refused too (see TxStarter).
//
// Only a *DB records the transaction's metrics, knows its replicas
// (OnReplica) and applies Config.TenantSetting; elsewhere WithTenant sets
// DefaultTenantSetting. On a TxStarter without BeginTx (a fake), options
// that set isolation or access mode are refused.
//
// With WithRetry, fn runs again in a new transaction after a serialization
// failure, a deadlock, a connection lost before COMMIT was sent, no server
// to connect to for BEGIN, a write refused by a server that became a
// standby, or a cached statement the server refused after a migration, so fn must not have
// effects outside the database that cannot be repeated (use OnCommit for
// those).
func InTx(ctx context.Context, q TxStarter, fn func(tx Tx) error, opts ...TxOption) error {
	if fn == nil {
		return errors.New("pgkit: InTx: fn is nil")
	}
	if v := reflect.ValueOf(q); !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
		return fmt.Errorf("pgkit: InTx: nil TxStarter (%T)", q)
	}
	o := txOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.replica {
		o.tx.AccessMode = pgx.ReadOnly
		if o.tx.IsoLevel == pgx.Serializable && o.err == nil {
			o.err = errors.New("pgkit: OnReplica: a standby cannot run SERIALIZABLE transactions; use repeatable read, or the primary")
		}
	}
	if o.err != nil {
		return o.err
	}
	switch s := q.(type) {
	case *DB:
		return s.inTx(ctx, fn, &o)
	case *tx:
		return savepoint(ctx, s.Tx, s, fn, &o)
	case pgx.Tx:
		return savepoint(ctx, s, nil, fn, &o)
	}
	if o.replica {
		return fmt.Errorf("pgkit: InTx: OnReplica needs a *pgkit.DB, which knows the replicas (got %T)", q)
	}
	r := txRun{tenantSetting: DefaultTenantSetting}
	if s, ok := q.(txOptionsStarter); ok {
		r.begin = func(ctx context.Context) (pgx.Tx, error) { return s.BeginTx(ctx, o.tx) }
	} else if o.tx != (pgx.TxOptions{}) {
		return fmt.Errorf("pgkit: InTx: %T has no BeginTx, so isolation, access mode and deferrable cannot be set", q)
	} else {
		r.begin = q.Begin
	}
	return r.run(ctx, fn, &o)
}

// tx is pgkit's Tx: pgx's transaction or savepoint, and the hooks to run
// after the outermost commit.
type tx struct {
	pgx.Tx
	catalog *sync.Map // the DB's table cache for the bulk helpers; nil: the connection's

	mu    sync.Mutex
	hooks []func(context.Context)

	misused  atomic.Bool // fn called Commit or Rollback
	connLost bool        // set by rollback: the connection was closed
	standby  bool        // set by rollback: the connection's server is a standby
}

// ErrTxManaged is returned by Commit and Rollback on the Tx that InTx gives
// fn, which send nothing: InTx ends the transaction itself (return nil to
// commit, an error to roll back). InTx then rolls back and returns an error
// that matches ErrTxManaged, so a transaction fn tried to end is never
// committed by surprise.
var ErrTxManaged = errors.New("pgkit: InTx commits or rolls back itself: fn must not call Commit or Rollback (return nil to commit, an error to roll back)")

// Commit refuses: see ErrTxManaged.
func (t *tx) Commit(context.Context) error {
	t.misused.Store(true)
	return ErrTxManaged
}

// Rollback refuses: see ErrTxManaged.
func (t *tx) Rollback(context.Context) error {
	t.misused.Store(true)
	return ErrTxManaged
}

func (t *tx) OnCommit(fn func(ctx context.Context)) {
	t.mu.Lock()
	t.hooks = append(t.hooks, fn)
	t.mu.Unlock()
}

// errHooksOutside refuses OnCommit inside a savepoint of a transaction
// pgkit did not begin: its commit is out of sight, so the hooks could not
// run when they promise to.
var errHooksOutside = errors.New("pgkit: InTx on a pgx.Tx pgkit did not begin cannot see its commit, so OnCommit cannot be kept; run the outer transaction with InTx too")

// savepoint runs fn in a savepoint of outer. parent is outer as pgkit's Tx,
// which takes the savepoint's OnCommit hooks; nil when pgkit did not begin
// outer.
func savepoint(ctx context.Context, outer pgx.Tx, parent *tx, fn func(Tx) error, o *txOptions) error {
	if o.tx != (pgx.TxOptions{}) || o.retry != nil || o.tenant != nil || o.replica || o.statementTimeout != 0 {
		return errors.New("pgkit: InTx on a Tx makes a savepoint: isolation, access mode, OnReplica, WithRetry, WithTenant and WithStatementTimeout belong to the outer transaction")
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	sp, err := outer.Begin(ctx)
	if err != nil {
		return err
	}
	child := &tx{Tx: sp}
	if parent != nil {
		child.catalog = parent.catalog
	}
	if err := runFn(ctx, child, fn); err != nil {
		return err
	}
	if parent == nil && len(child.hooks) > 0 {
		rollback(ctx, child)
		return errHooksOutside
	}
	if err := sp.Commit(ctx); err != nil {
		return err
	}
	if parent != nil {
		parent.mu.Lock()
		parent.hooks = append(parent.hooks, child.hooks...)
		parent.mu.Unlock()
	}
	return nil
}

// runFn runs fn and rolls back on its error or panic. The rollback gets a
// context of its own, so a canceled ctx does not also cost the connection.
func runFn(ctx context.Context, t *tx, fn func(Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			rollback(ctx, t)
			panic(p)
		}
	}()
	err = fn(t)
	if t.misused.Load() && !errors.Is(err, ErrTxManaged) {
		err = errors.Join(ErrTxManaged, err)
	}
	if err != nil {
		rollback(ctx, t)
	}
	return err
}

// rollback ends t and records whether its connection was lost: closed
// already, or closed by the failed ROLLBACK (pgx closes the connection, and
// the server rolls back). It is read after the connection went back to the
// pool, where asking the connection itself would race with its next user.
func rollback(ctx context.Context, t *tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	conn := t.Conn() // nil from a fake in a unit test
	closed := conn != nil && conn.IsClosed()
	t.standby = conn != nil && isStandby(conn.PgConn())
	t.connLost = t.Tx.Rollback(ctx) != nil || closed
}

// inTx runs fn in a transaction of the DB's: on a replica when o says so,
// with the DB's local settings, tenant setting and metrics.
func (db *DB) inTx(ctx context.Context, fn func(Tx) error, o *txOptions) error {
	if db.closed.Load() {
		return ErrClosed
	}
	r := txRun{tenantSetting: db.cfg.TenantSetting, obs: db.obs, catalog: &db.catalog}
	opts := db.withLocalSettings(o.tx)
	r.begin = func(ctx context.Context) (pgx.Tx, error) {
		pool, rep := db.pool, (*replica)(nil)
		if o.replica && db.replicas != nil {
			pool, rep = db.replicas.pick()
		}
		ptx, err := pool.BeginTx(ctx, opts)
		if err != nil {
			if db.closedErr(err) {
				return nil, ErrClosed // Close ran meanwhile
			}
			if rep != nil {
				rep.failed(err)
			}
		}
		return ptx, err
	}
	return r.run(ctx, fn, o)
}

// txRun is InTx's loop of attempts, each in a transaction of its own.
type txRun struct {
	begin         func(ctx context.Context) (pgx.Tx, error) // one attempt's BEGIN
	tenantSetting string                                    // what WithTenant sets
	obs           *observer                                 // nil: no metrics
	catalog       *sync.Map                                 // the DB's table cache; nil: none
}

// run runs fn, retried as o says.
func (r *txRun) run(ctx context.Context, fn func(Tx) error, o *txOptions) error {
	start := time.Now()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	maxAttempts := 1
	if o.retry != nil {
		maxAttempts = o.retry.MaxAttempts
	}
	attempt := 1
	defer func() {
		if p := recover(); p != nil {
			r.done(txRollback, attempt, start) // runFn rolled back
			panic(p)
		}
	}()
	for ; ; attempt++ {
		t, err := r.attempt(ctx, fn, o)
		if err == nil {
			r.done(txCommit, attempt, start)
			for _, hook := range t.hooks {
				hook(ctx)
			}
			return nil
		}
		// A standby is expected under OnReplica: its refusal of a write is the
		// caller's mistake, not a failover.
		reason := retryReason(err, t != nil && t.connLost, t != nil && t.standby && !o.replica)
		outcome := txError // BEGIN or COMMIT failed
		if t != nil && !t.committing {
			outcome = txRollback // fn (or a setting) failed and was rolled back
		}
		if o.retry == nil || reason == "" {
			r.done(outcome, attempt, start)
			return err
		}
		if attempt >= maxAttempts {
			r.done(outcome, attempt, start)
			return &RetryError{Attempts: attempt, Err: err}
		}
		if r.obs != nil {
			r.obs.txRetry(reason)
		}
		if reason == "plan" {
			continue // not contention: nothing to wait for, pgx prepares the statement afresh
		}
		if werr := sleepBackoff(ctx, o.retry, attempt); werr != nil {
			r.done(outcome, attempt, start)
			return &RetryError{Attempts: attempt, Err: err}
		}
	}
}

func (r *txRun) done(out txOutcome, attempts int, start time.Time) {
	if r.obs != nil {
		r.obs.txDone(out, attempts, time.Since(start))
	}
}

// attemptTx is one attempt's transaction, and whether it got as far as
// sending COMMIT.
type attemptTx struct {
	*tx
	committing bool
}

// attempt is one BEGIN … COMMIT. It returns the attempt's tx when it got
// one, so the caller can run its hooks or judge a failure.
func (r *txRun) attempt(ctx context.Context, fn func(Tx) error, o *txOptions) (*attemptTx, error) {
	ptx, err := r.begin(ctx)
	if err != nil {
		return nil, err
	}
	a := &attemptTx{tx: &tx{Tx: ptx, catalog: r.catalog}}
	if o.statementTimeout > 0 {
		liftClientBound(ptx.Conn(), o.statementTimeout)
	}
	if err := r.settings(ctx, ptx, o); err != nil {
		rollback(ctx, a.tx)
		return a, err
	}
	if err := runFn(ctx, a.tx, fn); err != nil {
		return a, err
	}
	a.committing = true
	if err := ptx.Commit(ctx); err != nil {
		if commitFailed(err) {
			return a, err
		}
		return a, &AmbiguousCommitError{Err: err}
	}
	return a, nil
}

// settings sends what o sets for the transaction alone, in one round trip.
func (r *txRun) settings(ctx context.Context, ptx pgx.Tx, o *txOptions) error {
	switch {
	case o.tenant != nil && o.statementTimeout > 0:
		_, err := ptx.Exec(ctx, "SELECT set_config($1, $2, true), set_config('statement_timeout', $3, true)",
			r.tenantSetting, *o.tenant, serverMillis(o.statementTimeout))
		return err
	case o.tenant != nil:
		_, err := ptx.Exec(ctx, "SELECT set_config($1, $2, true)", r.tenantSetting, *o.tenant)
		return err
	case o.statementTimeout > 0:
		_, err := ptx.Exec(ctx, "SELECT set_config('statement_timeout', $1, true)", serverMillis(o.statementTimeout))
		return err
	}
	return nil
}

func sleepBackoff(ctx context.Context, p *RetryPolicy, attempt int) error {
	ceiling := p.BaseDelay << min(attempt-1, 30)
	if ceiling <= 0 || ceiling > p.MaxDelay {
		ceiling = p.MaxDelay
	}
	wait := time.NewTimer(rand.N(ceiling + 1))
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wait.C:
		return nil
	}
}
