package pgkit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

	begin(ctx context.Context, fn func(Tx) error, o *txOptions) error
}

// TxStarter is what InTx runs on: a *DB (a new transaction) or a Tx (a
// savepoint inside it).
type TxStarter interface {
	begin(ctx context.Context, fn func(Tx) error, o *txOptions) error
}

// InTx runs fn in a transaction on q, a *DB or a Tx:
//
//   - on a *DB it begins a transaction with the options, commits when fn
//     returns nil, and rolls back when fn returns an error (returned
//     unchanged) or panics (the panic goes on after the rollback; the
//     connection goes back to the pool);
//   - on a Tx it makes a savepoint: an error inside rolls back to it and
//     leaves the outer transaction usable.
//
// With WithRetry, fn runs again in a new transaction after a serialization
// failure, a deadlock, a connection lost before COMMIT was sent or a cached
// statement the server refused after a migration, so fn must not have
// effects outside the database that cannot be repeated (use OnCommit for
// those).
func InTx(ctx context.Context, q TxStarter, fn func(tx Tx) error, opts ...TxOption) error {
	if fn == nil {
		return errors.New("pgkit: InTx: fn is nil")
	}
	if q == nil {
		return errors.New("pgkit: InTx: nil *DB or Tx")
	}
	if db, ok := q.(*DB); ok && db == nil {
		return errors.New("pgkit: InTx: nil *DB")
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
	return q.begin(ctx, fn, &o)
}

// TxOption configures InTx.
type TxOption func(*txOptions)

type txOptions struct {
	tx      pgx.TxOptions
	timeout time.Duration
	retry   *RetryPolicy
	tenant  *string
	replica bool
	err     error
}

// WithIsolation sets the isolation level, e.g. pgx.Serializable. Default: the
// server's (read committed).
func WithIsolation(level pgx.TxIsoLevel) TxOption {
	return func(o *txOptions) { o.tx.IsoLevel = level }
}

// ReadOnly makes the transaction READ ONLY.
func ReadOnly() TxOption { return func(o *txOptions) { o.tx.AccessMode = pgx.ReadOnly } }

// OnReplica lets the transaction run on one of Config.ReplicaURLs, picked as
// DB.Reader picks (the primary when none is healthy), and makes it READ ONLY.
// Without it a transaction always runs on the primary, ReadOnly or not: a
// replica lags behind, and only the caller knows whether that is fine. A
// standby cannot run SERIALIZABLE transactions, so OnReplica with
// WithIsolation(pgx.Serializable) is refused.
func OnReplica() TxOption {
	return func(o *txOptions) { o.replica = true }
}

// Deferrable makes a SERIALIZABLE READ ONLY transaction DEFERRABLE: it may
// wait to start, then never fails with a serialization error.
func Deferrable() TxOption { return func(o *txOptions) { o.tx.DeferrableMode = pgx.Deferrable } }

// WithTimeout bounds the whole InTx call, every attempt and backoff
// included.
func WithTimeout(d time.Duration) TxOption {
	return func(o *txOptions) {
		if d <= 0 {
			o.err = fmt.Errorf("pgkit: WithTimeout: the timeout must be positive (got %s)", d)
		}
		o.timeout = d
	}
}

// WithTenant makes the transaction's first statement
// SELECT set_config(<Config.TenantSetting>, id, true), so row-level security
// policies that read current_setting('app.tenant_id') see only this tenant's
// rows. The id is a bound parameter, never spliced into SQL. An empty id is
// refused with ErrEmptyTenant before anything is sent.
func WithTenant(id string) TxOption {
	return func(o *txOptions) {
		if id == "" {
			o.err = ErrEmptyTenant
		}
		o.tenant = &id
	}
}

// Defaults WithRetry applies to RetryPolicy fields left at zero.
const (
	DefaultRetryMaxAttempts = 5
	DefaultRetryBaseDelay   = 10 * time.Millisecond
	DefaultRetryMaxDelay    = time.Second
)

// RetryPolicy is how WithRetry retries. Zero fields take their defaults;
// negative ones make InTx return a *ConfigError naming the field.
type RetryPolicy struct {
	// MaxAttempts is the most times fn runs, the first included. Default 5.
	MaxAttempts int
	// BaseDelay is the backoff before the second attempt; it doubles with each
	// attempt, up to MaxDelay, and each wait is drawn uniformly from zero to
	// that ("full jitter"). Default 10ms.
	BaseDelay time.Duration
	// MaxDelay caps the backoff. Default 1s.
	MaxDelay time.Duration
}

// setDefaults refuses negative fields, naming the first, and fills the zero
// ones.
func (p *RetryPolicy) setDefaults() error {
	if err := notNegative("RetryPolicy", cfgField{"MaxAttempts", int64(p.MaxAttempts)}, cfgField{"BaseDelay", int64(p.BaseDelay)},
		cfgField{"MaxDelay", int64(p.MaxDelay)}); err != nil {
		return err
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultRetryMaxAttempts
	}
	if p.BaseDelay == 0 {
		p.BaseDelay = DefaultRetryBaseDelay
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = DefaultRetryMaxDelay
	}
	return nil
}

// WithRetry runs fn again, in a new transaction, when the transaction fails
// with a serialization failure (SQLSTATE 40001) or a deadlock (40P01), or
// loses its connection before COMMIT is sent, or when the server refused a
// connection's cached prepared statement before running it (0A000 "cached
// plan must not change result type" after a migration changed its result
// columns, or 26000); that last one runs again at once, without backoff. Any
// other error returns at once. A connection lost during COMMIT leaves the
// outcome unknown: that returns *AmbiguousCommitError and is never retried.
// After the last attempt the error is a *RetryError.
func WithRetry(p RetryPolicy) TxOption {
	return func(o *txOptions) {
		if err := p.setDefaults(); err != nil {
			o.err = err
		}
		o.retry = &p
	}
}

// tx is pgkit's Tx: pgx's transaction or savepoint, and the hooks to run
// after the outermost commit.
type tx struct {
	pgx.Tx
	db *DB

	mu    sync.Mutex
	hooks []func(context.Context)

	misused  atomic.Bool // fn called Commit or Rollback
	connLost bool        // set by rollback: the connection was closed
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

// begin on a Tx runs fn in a savepoint.
func (t *tx) begin(ctx context.Context, fn func(Tx) error, o *txOptions) error {
	if o.tx != (pgx.TxOptions{}) || o.retry != nil || o.tenant != nil || o.replica {
		return errors.New("pgkit: InTx on a Tx makes a savepoint: isolation, access mode, OnReplica, WithRetry and WithTenant belong to the outer transaction")
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	sp, err := t.Begin(ctx)
	if err != nil {
		return err
	}
	child := &tx{Tx: sp, db: t.db}
	if err := runFn(ctx, child, fn); err != nil {
		return err
	}
	if err := sp.Commit(ctx); err != nil {
		return err
	}
	t.mu.Lock()
	t.hooks = append(t.hooks, child.hooks...)
	t.mu.Unlock()
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
	closed := t.Conn().IsClosed()
	t.connLost = t.Tx.Rollback(ctx) != nil || closed
}

// begin on a DB runs fn in a transaction of its own, retried as o says.
func (db *DB) begin(ctx context.Context, fn func(Tx) error, o *txOptions) error {
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
	if db.closed.Load() {
		return ErrClosed
	}
	m := db.obs
	attempt := 1
	defer func() {
		if p := recover(); p != nil {
			m.txDone(txRollback, attempt, time.Since(start)) // runFn rolled back
			panic(p)
		}
	}()
	for ; ; attempt++ {
		t, err := db.attempt(ctx, fn, o)
		if err == nil {
			m.txDone(txCommit, attempt, time.Since(start))
			for _, hook := range t.hooks {
				hook(ctx)
			}
			return nil
		}
		reason := retryReason(err, t != nil && t.connLost)
		outcome := txError // BEGIN or COMMIT failed
		if t != nil && !t.committing {
			outcome = txRollback // fn (or the tenant setting) failed and was rolled back
		}
		if o.retry == nil || reason == "" {
			m.txDone(outcome, attempt, time.Since(start))
			return err
		}
		if attempt >= maxAttempts {
			m.txDone(outcome, attempt, time.Since(start))
			return &RetryError{Attempts: attempt, Err: err}
		}
		m.txRetry(reason)
		if reason == "plan" {
			continue // not contention: nothing to wait for, pgx prepares the statement afresh
		}
		if werr := sleepBackoff(ctx, o.retry, attempt); werr != nil {
			m.txDone(outcome, attempt, time.Since(start))
			return &RetryError{Attempts: attempt, Err: err}
		}
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
func (db *DB) attempt(ctx context.Context, fn func(Tx) error, o *txOptions) (*attemptTx, error) {
	pool, r := db.pool, (*replica)(nil)
	if o.replica && db.replicas != nil {
		pool, r = db.replicas.pick()
	}
	ptx, err := pool.BeginTx(ctx, db.withLocalSettings(o.tx))
	if err != nil {
		if db.closedErr(err) {
			return nil, ErrClosed // Close ran meanwhile
		}
		if r != nil {
			r.failed(err)
		}
		return nil, err
	}
	a := &attemptTx{tx: &tx{Tx: ptx, db: db}}
	if o.tenant != nil {
		if _, err := ptx.Exec(ctx, "SELECT set_config($1, $2, true)", db.cfg.TenantSetting, *o.tenant); err != nil {
			rollback(ctx, a.tx)
			return a, err
		}
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
