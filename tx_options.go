package pgkit

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// TxOption configures InTx.
type TxOption func(*txOptions)

type txOptions struct {
	tx      pgx.TxOptions
	timeout time.Duration
	retry   *RetryPolicy
	tenant  *string
	replica bool
	err     error

	statementTimeout time.Duration
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

// WithStatementTimeout sets the server's statement_timeout to d for this
// transaction alone (SET LOCAL), and ClientTimeout on its connection to d
// plus DefaultClientTimeoutMargin, so a report or a migration step that runs
// longer than Config.StatementTimeout allows can run, still bounded. d must
// be positive. A context with a deadline still ends the transaction at that
// deadline.
func WithStatementTimeout(d time.Duration) TxOption {
	return func(o *txOptions) {
		if d <= 0 {
			o.err = fmt.Errorf("pgkit: WithStatementTimeout: the timeout must be positive (got %s); every statement stays bounded", d)
		}
		o.statementTimeout = d
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
// loses its connection before COMMIT is sent, or finds no server to connect
// to for BEGIN (a *pgconn.ConnectError or *UnreachableError: nothing ran; a
// server refusing the connection, as for a wrong password, is not retried),
// or has a write refused because its server became a standby (25006 after a
// failover), or when the server refused a connection's cached prepared
// statement before running it (0A000 "cached plan must not change result
// type" after a migration changed its result columns, or 26000); that last
// one runs again at once, without backoff. Any other error returns at once. A connection lost during COMMIT leaves the
// outcome unknown: that returns *AmbiguousCommitError and is never retried.
// After the last attempt the error is a *RetryError. The option may be made
// once and shared by concurrent calls.
func WithRetry(p RetryPolicy) TxOption {
	// Settled here, not per call: the option is often a package-level
	// variable that concurrent InTx calls share, and must only be read.
	err := p.setDefaults()
	return func(o *txOptions) {
		if err != nil {
			o.err = err
		}
		o.retry = &p
	}
}
