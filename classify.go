package pgkit

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// The one home of pgkit's error rules: what the tracer counts as an error or
// a cancellation, what InTx retries, what the Writer retries, when a replica
// is set aside, and how Health names a server's refusal. Every SQLSTATE pgkit
// acts on is named here.
const (
	sqlstateSerialization     = "40001" // serialization_failure
	sqlstateDeadlock          = "40P01" // deadlock_detected
	sqlstateQueryCanceled     = "57014" // query_canceled: a cancel request or statement_timeout
	sqlstateAdminShutdown     = "57P01" // admin_shutdown: pg_terminate_backend, or a fast shutdown
	sqlstateCrashShutdown     = "57P02" // crash_shutdown: another backend crashed
	sqlstateCannotConnectNow  = "57P03" // cannot_connect_now: starting up or shutting down
	sqlstateIdleSession       = "57P05" // idle_session_timeout ended the session
	sqlstateTooManyClients    = "53300" // too_many_connections
	sqlstateInvalidAuth       = "28000" // invalid_authorization_specification
	sqlstateInvalidPassword   = "28P01" // invalid_password
	sqlstateNoPrivilege       = "42501" // insufficient_privilege
	sqlstateNoDatabase        = "3D000" // invalid_catalog_name
	sqlstateClassConnection   = "08"    // connection_exception and its subclasses
	sqlstateClassResources    = "53"    // insufficient_resources
	sqlstateResultTypeChanged = "0A000" // feature_not_supported, raised by plan revalidation; see replanCode
	sqlstateNoStatement       = "26000" // invalid_sql_statement_name: "prepared statement … does not exist"
	sqlstateReadOnly          = "25006" // read_only_sql_transaction: a write on a standby, or in a READ ONLY transaction
)

// onStandby reports whether err is a write refused because conn's server is
// a hot standby (after a failover, the old primary comes back as one): not
// a READ ONLY transaction's refusal, which the server sends to a primary
// too.
func onStandby(conn *pgx.Conn, err error) bool {
	return conn != nil && sqlstate(err) == sqlstateReadOnly && isStandby(conn.PgConn())
}

// isStandby reports whether conn's server is a hot standby, as it says in
// in_hot_standby (PostgreSQL 14 and later; kept current as it changes, so a
// promotion turns it off). Older servers never say so.
func isStandby(conn *pgconn.PgConn) bool {
	return conn.ParameterStatus("in_hot_standby") == "on"
}

// sqlstate is the SQLSTATE of the server error in err's chain, or "" when
// the server did not answer with an error (a lost connection, a timeout).
func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// stateClass is the two-character class of a server error's SQLSTATE ("23"
// for integrity violations), or "client" for errors raised before or without
// the server (a lost connection, an encoding error): the "class" label of
// pgkit_query_errors_total.
func stateClass(err error) string {
	if code := sqlstate(err); len(code) == 5 {
		return code[:2]
	}
	return "client"
}

// classify is a statement's outcome for the tracer: ok, canceled (by the
// caller's context, or by the server on a cancel request or
// statement_timeout), or error. A 57014 is the server's answer to the
// client's CopyFail too (a COPY whose source failed): that is an error
// unless the caller's context ended.
func classify(ctx context.Context, err error) outcome {
	if err == nil {
		return outcomeOK
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return outcomeCanceled
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == sqlstateQueryCanceled && (ctx.Err() != nil || !isCopyFail(pgErr)) {
		return outcomeCanceled
	}
	return outcomeError
}

// isCopyFail reports whether pgErr is the server's answer to the client's
// CopyFail message: by the routine that raises it (not translated), else by
// its English message.
func isCopyFail(pgErr *pgconn.PgError) bool {
	return pgErr.Routine == "CopyGetData" || strings.HasPrefix(pgErr.Message, "COPY from stdin failed")
}

// sessionLost reports whether a SQLSTATE says the session is gone, and with
// it any transaction it had open: connection exceptions, and the server
// ending it (terminated, shutting down, starting up, idle too long).
func sessionLost(code string) bool {
	switch code {
	case sqlstateAdminShutdown, sqlstateCrashShutdown, sqlstateCannotConnectNow, sqlstateIdleSession:
		return true
	}
	return strings.HasPrefix(code, sqlstateClassConnection)
}

// conflict names a transaction that lost a race and may simply run again:
// "serialization" or "deadlock", else "".
func conflict(code string) string {
	switch code {
	case sqlstateSerialization:
		return "serialization"
	case sqlstateDeadlock:
		return "deadlock"
	}
	return ""
}

// standbyError is a write refused because the primary's connection reached
// a standby, in a way the server reports without 25006 (the Writer's
// pg_current_xact_id: "cannot assign TransactionIds during recovery",
// XX000). Transient: the primary will be found again.
type standbyError struct{ err error }

func (e *standbyError) Error() string {
	return "pgkit: the server is a standby (a failover in progress?): " + e.err.Error()
}
func (e *standbyError) Unwrap() error { return e.err }

// retryReason says why a transaction attempt that failed with err may run
// again ("serialization", "deadlock", "connection", "plan"), or "" when it
// must not. connClosed reports whether the attempt's connection is closed,
// standby whether its server turned out to be a standby (onStandby): the
// transaction wrote nothing and runs again on a new connection, which finds
// the new primary. A BEGIN that found no server to connect to (a
// *pgconn.ConnectError, an *UnreachableError) ran nothing and is retried
// too; a server's refusal of the connection (a wrong password) is not. An
// *AmbiguousCommitError is never retried.
func retryReason(err error, connClosed, standby bool) string {
	var ambiguous *AmbiguousCommitError
	if errors.As(err, &ambiguous) {
		return ""
	}
	if code := sqlstate(err); code != "" {
		switch {
		case conflict(code) != "":
			return conflict(code)
		case replanCode(err) != "":
			// The server refused a cached prepared statement before
			// running it; pgx dropped it from the connection's cache.
			return "plan"
		case sessionLost(code), standby && code == sqlstateReadOnly:
			// Before COMMIT, the transaction died with the session, or
			// could not write on a server that is no longer the primary.
			return "connection"
		}
		return ""
	}
	var connectErr *pgconn.ConnectError
	var unreachable *UnreachableError
	switch {
	case pgconn.SafeToRetry(err):
		return "connection"
	case errors.As(err, &connectErr), errors.As(err, &unreachable):
		// No connection could be had for BEGIN: nothing ran. During a
		// failover, until the new primary takes connections.
		return "connection"
	case connClosed && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		// The connection died before COMMIT was sent: the server rolled
		// the transaction back, so running it again is safe.
		return "connection"
	}
	return ""
}

// commitFailed reports whether a COMMIT error proves the transaction did not
// commit: the server answered with an error, turned the COMMIT into a
// ROLLBACK, or the context ended before COMMIT was sent. Anything else may
// have committed. pgconn.SafeToRetry alone is no proof here: when the
// connection drops while pgx reads COMMIT's answer, pgx can report
// "conn closed" as safe to retry although COMMIT was sent (seen with a proxy
// that cuts the connection after the server's reply; TestAmbiguousCommit).
func commitFailed(err error) bool {
	return sqlstate(err) != "" || errors.Is(err, pgx.ErrTxCommitRollback) ||
		pgconn.SafeToRetry(err) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// transient tells the Writer's failures worth retrying (the server or the
// connection is away, too many clients, the server is a standby during a
// failover, or the transaction lost a race) from the database refusing the
// data.
func transient(err error) bool {
	var standby *standbyError
	if errors.As(err, &standby) {
		return true
	}
	if code := sqlstate(err); code != "" {
		return conflict(code) != "" || sessionLost(code) || code == sqlstateTooManyClients || code == sqlstateReadOnly
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	// Not an answer from the server: a connection that failed or was lost, an
	// acquire that timed out, a server not accepting connections.
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	return errors.Is(err, ErrAcquireTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &netErr) || errors.As(err, &connectErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// refusal names, in general terms fit for the public, what a server's
// refusal of a health check means.
func refusal(code string) string {
	switch {
	case code == sqlstateInvalidAuth || code == sqlstateInvalidPassword || code == sqlstateNoPrivilege:
		return "authentication or authorization refused"
	case code == sqlstateNoDatabase:
		return "database does not exist"
	case code == sqlstateTooManyClients:
		return "too many connections"
	case code == sqlstateAdminShutdown || code == sqlstateCrashShutdown || code == sqlstateCannotConnectNow:
		return "server shutting down or starting up"
	case code == sqlstateQueryCanceled:
		return "check canceled by the server"
	case strings.HasPrefix(code, sqlstateClassConnection):
		return "connection failure"
	case strings.HasPrefix(code, sqlstateClassResources):
		return "server out of resources"
	default:
		return "server error"
	}
}

// replanCode returns the SQLSTATE of err when the server refused to run a
// cached prepared statement before running any of it, so that the statement
// did nothing and can run again: 26000 (a DEALLOCATE ALL or DISCARD ALL on
// the connection, or a pooler that switched server connections), or 0A000
// "cached plan must not change result type" from plan revalidation (its
// result columns changed since it was prepared: a SELECT * after ALTER
// TABLE … ADD COLUMN). Other 0A000 errors say the statement itself is
// unsupported, and running it again would fail the same way. It returns ""
// for any other error. The 0A000 is recognised by the server's routine,
// which does not depend on lc_messages, or by its English message when a
// server does not send the routine. The codes are the label values of
// pgkit_query_replans_total.
func replanCode(err error) string {
	var pgErr *pgconn.PgError
	if err == nil || !errors.As(err, &pgErr) {
		return ""
	}
	switch {
	case pgErr.Code == sqlstateNoStatement:
		return sqlstateNoStatement
	case pgErr.Code == sqlstateResultTypeChanged &&
		(pgErr.Routine == "RevalidateCachedQuery" || strings.Contains(pgErr.Message, "cached plan must not change result type")):
		return sqlstateResultTypeChanged
	}
	return ""
}

// isAcquireTimeout reports whether err is pgkit's acquire timeout.
func isAcquireTimeout(err error) bool { return errors.Is(err, ErrAcquireTimeout) }

// closedPool reports whether err is pgxpool's refusal to lend a connection
// because the pool was closed (puddle's ErrClosedPool, "closed pool"): a call
// that passed DB's closed check while Close ran.
func closedPool(err error) bool { return errors.Is(err, puddle.ErrClosedPool) }
