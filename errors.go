package pgkit

import (
	"context"
	"errors"
	"strings"
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

// ConfigError is returned by Open when a Config field holds a value pgkit
// refuses. Field is the name of the Config field, such as "MaxConns".
type ConfigError struct {
	Field  string
	Reason string
	Err    error // the underlying cause, if any (for example from parsing URL)
}

func (e *ConfigError) Error() string {
	msg := "pgkit: invalid Config." + e.Field + ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ConfigError) Unwrap() error { return e.Err }

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

// isAcquireTimeout reports whether err is pgkit's acquire timeout.
func isAcquireTimeout(err error) bool { return errors.Is(err, ErrAcquireTimeout) }
