package pgkit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrAcquireTimeout is returned when no pool connection became free within
// Config.AcquireTimeout. It also matches context.DeadlineExceeded, so code that
// already handles deadlines keeps working:
//
//	if errors.Is(err, pgkit.ErrAcquireTimeout) { /* pool exhausted: shed load */ }
var ErrAcquireTimeout error = acquireTimeoutError{}

type acquireTimeoutError struct{}

func (acquireTimeoutError) Error() string {
	return "pgkit: no pool connection became free within Config.AcquireTimeout"
}

// Is makes errors.Is(err, context.DeadlineExceeded) true.
func (acquireTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Timeout reports true, like context.DeadlineExceeded and net.Error timeouts.
func (acquireTimeoutError) Timeout() bool { return true }

// ErrClosed is returned by every DB method called after Close: Exec, Query
// (and its Rows' Err), QueryRow's Scan, SendBatch's results, CopyFrom,
// Begin, BeginTx, Acquire, Ping, InTx, and the Querier of Reader, whenever it
// was taken. Nothing is sent to the server.
//
//	if errors.Is(err, pgkit.ErrClosed) { /* shutting down: stop, don't retry */ }
var ErrClosed = errors.New("pgkit: the DB is closed")

// ErrEmptyTenant is returned by InTx with WithTenant("") before anything is
// sent to the server: an empty tenant id would match no row, or every row of
// a policy written carelessly.
var ErrEmptyTenant = errors.New("pgkit: WithTenant: empty tenant id")

// AmbiguousCommitError is returned by InTx when the connection was lost
// while COMMIT was in flight: the transaction may or may not have committed,
// so it is never retried. Check the database before doing the work again.
type AmbiguousCommitError struct {
	Err error // what pgx returned from COMMIT
}

func (e *AmbiguousCommitError) Error() string {
	return "pgkit: connection lost during COMMIT, the transaction may or may not have committed: " + e.Err.Error()
}

func (e *AmbiguousCommitError) Unwrap() error { return e.Err }

// RetryError is returned by InTx with WithRetry when the last attempt failed
// with an error that would have been retried. It unwraps to that error.
type RetryError struct {
	Attempts int
	Err      error
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("pgkit: transaction failed after %d attempts: %v", e.Attempts, e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }

// ConfigError is returned when a configuration field holds a value pgkit
// refuses: by Open for Config, and by the constructors of every other
// configuration struct (NewWriter's WriterConfig, WithRetry's RetryPolicy,
// cache.New's cache.Config, cache.NewMemoryStore's cache.MemoryStoreConfig).
// Struct names the struct and Field the field, such as "MaxConns".
type ConfigError struct {
	Struct string // "Config", "WriterConfig", "RetryPolicy", "cache.Config", "cache.MemoryStoreConfig"
	Field  string
	Reason string
	Err    error // the underlying cause, if any (for example from parsing URL)
}

func (e *ConfigError) Error() string {
	st := e.Struct
	if st == "" {
		st = "Config"
	}
	msg := "pgkit: invalid " + st + "." + e.Field + ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ConfigError) Unwrap() error { return e.Err }

// cfgField is a configuration field's name and value, for notNegative.
type cfgField struct {
	name string
	v    int64
}

// notNegative is a *ConfigError for the first negative of fields of struct
// st, or nil.
func notNegative(st string, fields ...cfgField) error {
	for _, f := range fields {
		if f.v < 0 {
			return &ConfigError{Struct: st, Field: f.name, Reason: fmt.Sprintf("must not be negative (got %d)", f.v)}
		}
	}
	return nil
}

// UnreachableError is returned by a call that needed a new connection when
// the database could not be reached. Err is the last connection attempt's
// error, as pgx returned it (a *pgconn.ConnectError), which errors.As
// reaches.
//
// A call gets it at once, without connecting, while pgkit backs off after
// connection attempts failed in a row (Config.ConnectBackoff). It also ends
// a wait that AcquireTimeout cut short while attempts were failing; then
// AcquireTimeout is set, and it matches ErrAcquireTimeout and
// context.DeadlineExceeded too, so code that sheds load on a timeout keeps
// working, and code that checks for this error first can tell a database
// that is down from a pool that is busy:
//
//	var down *pgkit.UnreachableError
//	switch {
//	case errors.As(err, &down): // 503: the database cannot be reached
//	case errors.Is(err, pgkit.ErrAcquireTimeout): // 503: busy, retry later
//	}
type UnreachableError struct {
	Err            error         // the last failed connection attempt's error
	Failures       int           // connection attempts that failed in a row
	FailingFor     time.Duration // since the first of them failed
	AcquireTimeout bool          // the call waited AcquireTimeout for a connection
}

func (e *UnreachableError) Error() string {
	msg := "pgkit: the database could not be reached"
	if e.AcquireTimeout {
		msg = "pgkit: no pool connection within Config.AcquireTimeout: the database could not be reached"
	}
	return fmt.Sprintf("%s (connection attempts failed in a row: %d, over %s): %v",
		msg, e.Failures, e.FailingFor.Round(time.Millisecond), e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrAcquireTimeout) and errors.Is(err,
// context.DeadlineExceeded) true when AcquireTimeout ended the wait.
func (e *UnreachableError) Is(target error) bool {
	return e.AcquireTimeout && (target == ErrAcquireTimeout || target == context.DeadlineExceeded)
}

// Timeout reports whether AcquireTimeout ended the wait, like
// ErrAcquireTimeout's Timeout.
func (e *UnreachableError) Timeout() bool { return e.AcquireTimeout }

// redactedError hides a secret (the password from Config.URL) in the message of
// the error it wraps, while errors.Is/As still reach the cause.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// redact returns err with every occurrence of secret in its message replaced.
// pgx already leaves passwords out of its errors; this is the second lock.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), secret, "xxxxx"), cause: err}
}

// parseError is what Open keeps of pgx's refusal to parse a connection
// string: its message, the password masked, over the cause pgx found (such
// as a strconv error). pgconn's *ParseConfigError itself is left out of the
// chain: its exported ConnString is the raw string, password included, which
// errors.As or %#v would show.
func parseError(err error, password string) error {
	var pce *pgconn.ParseConfigError
	if !errors.As(err, &pce) {
		return redact(err, password)
	}
	msg := err.Error()
	if password != "" {
		msg = strings.ReplaceAll(msg, password, "xxxxx")
	}
	var cause error
	if inner := errors.Unwrap(pce); inner != nil {
		cause = parseError(inner, password)
	}
	return &redactedError{msg: msg, cause: cause}
}

// openError is err as Open returns it: the password masked in its message
// (redact), and in the *pgconn.ConnectError it may hold, whose exported
// Config is the connection's, password included. That error is Open's own
// (its check connection failed), so its Config is swapped for a copy
// without the password; errors.As still finds the ConnectError.
func openError(err error, password string) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && ce.Config != nil && ce.Config.Password != "" {
		cc := ce.Config.Copy()
		cc.Password = ""
		ce.Config = cc
	}
	return redact(err, password)
}
