package pgkit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Under transaction pooling (Config.PgBouncer) a client connection is bound
// to a server connection only for the length of a transaction, so nothing may
// be left on a server connection for later: no prepared statement, no
// session setting.

// sessionSettings are the settings Config turns into startup parameters
// without PgBouncer. PgBouncer refuses them in the startup packet ("unsupported
// startup parameter"), and a SET would stay on a server connection that other
// clients get next; with PgBouncer they are SET LOCAL in each transaction.
var sessionSettings = []string{"statement_timeout", "idle_in_transaction_session_timeout", "jit"}

// configurePgBouncer adapts a pool config made by Config.configure to
// transaction pooling.
//
// A canceled context keeps pgx's default: pgx sends a cancel request, waits
// until PgBouncer has forwarded it and closed the cancel connection, then
// closes the connection; the server stops the statement (TestPgBouncerCancel).
// pgx's other handler, which keeps the connection, closes the cancel
// connection as soon as the statement has ended, and that crashes PgBouncer
// 1.18 to 1.20 (pgbouncer/pgbouncer#801, #928; reproduced with Debian's
// 1.18), so pgkit does not use it.
func configurePgBouncer(pcfg *pgxpool.Config, params map[string]string) {
	cc := pcfg.ConnConfig
	for _, name := range sessionSettings {
		delete(cc.RuntimeParams, name)
	}
	// Exec sends each statement unnamed, parsed, described and run in one
	// round trip, and keeps nothing between statements. CacheDescribe, the
	// other mode that leaves no statement on the server, was as fast
	// (BenchmarkPgBouncer/exec-mode: 0.98 of Exec's throughput over nine
	// runs, within their ±6% spread) but keeps result descriptions per
	// connection, which a migration can make stale.
	if _, ok := params["default_query_exec_mode"]; !ok {
		cc.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
}

// localSettings returns what follows BEGIN in every transaction under
// Config.PgBouncer: the session settings as SET LOCAL, or "" without
// PgBouncer (they are startup parameters then).
func (cfg *Config) localSettings() string {
	if !cfg.PgBouncer {
		return ""
	}
	var b strings.Builder
	if cfg.StatementTimeout > 0 {
		b.WriteString("; SET LOCAL statement_timeout = " + serverMillis(cfg.StatementTimeout))
	}
	if cfg.IdleInTransactionTimeout > 0 {
		b.WriteString("; SET LOCAL idle_in_transaction_session_timeout = " + serverMillis(cfg.IdleInTransactionTimeout))
	}
	if cfg.EnableJIT {
		b.WriteString("; SET LOCAL jit = on")
	} else {
		b.WriteString("; SET LOCAL jit = off")
	}
	return b.String()
}

// withLocalSettings returns opts with the SET LOCALs of Config.PgBouncer appended to
// its BEGIN. pgx sends a BEGIN without arguments as one simple-protocol
// message, so BEGIN and the settings still take one round trip.
func (db *DB) withLocalSettings(opts pgx.TxOptions) pgx.TxOptions {
	if db.localSettings == "" || opts.BeginQuery != "" {
		return opts
	}
	var b strings.Builder
	b.WriteString("BEGIN")
	if opts.IsoLevel != "" {
		b.WriteString(" ISOLATION LEVEL " + strings.ToUpper(string(opts.IsoLevel)))
	}
	if opts.AccessMode != "" {
		b.WriteString(" " + strings.ToUpper(string(opts.AccessMode)))
	}
	if opts.DeferrableMode != "" {
		b.WriteString(" " + strings.ToUpper(string(opts.DeferrableMode)))
	}
	b.WriteString(db.localSettings)
	opts.BeginQuery = b.String()
	return opts
}

// checkPoolerSettings warns when statements outside a transaction, which
// run with the server's settings under Config.PgBouncer, would run with
// other settings than Config asks for.
func (db *DB) checkPoolerSettings(ctx context.Context, conn *pgx.Conn) error {
	var timeout, idle, jit string
	err := conn.QueryRow(ctx, `SELECT current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout'), current_setting('jit')`).
		Scan(&timeout, &idle, &jit)
	if err != nil {
		return err
	}
	wantJIT := "off"
	if db.cfg.EnableJIT {
		wantJIT = "on"
	}
	var differ []string
	check := func(name, got string, want time.Duration) {
		if want > 0 && serverDuration(got) != want {
			differ = append(differ, fmt.Sprintf("%s is %s, Config asks %s", name, got, want))
		}
	}
	check("statement_timeout", timeout, db.cfg.StatementTimeout)
	check("idle_in_transaction_session_timeout", idle, db.cfg.IdleInTransactionTimeout)
	if jit != wantJIT {
		differ = append(differ, fmt.Sprintf("jit is %s, Config asks %s", jit, wantJIT))
	}
	if len(differ) > 0 {
		db.cfg.alerts.LogAttrs(ctx, slog.LevelWarn,
			"pgkit: behind PgBouncer, statements outside a transaction run with the server's settings, which differ from Config; "+
				"set them on the role, e.g. ALTER ROLE <user> SET statement_timeout = '60s'",
			slog.String("differences", strings.Join(differ, "; ")))
	}
	return nil
}

// pgBouncerHint explains the error of a server that refuses the session
// settings pgkit puts in the startup packet: it is PgBouncer, and Config
// should say so.
func pgBouncerHint(err error, pgBouncer bool) error {
	if !pgBouncer && err != nil && strings.Contains(err.Error(), "unsupported startup parameter") {
		return fmt.Errorf("%w (the server looks like PgBouncer: set Config.PgBouncer)", err)
	}
	return err
}
