package pgkit

import (
	"database/sql"

	"github.com/jackc/pgx/v5/stdlib"
)

// SQLDB returns a *sql.DB over the primary pool, for code that speaks
// database/sql: a migration tool (goose, golang-migrate), sqlx, an ORM. Its
// connections are the pool's, so they are traced and named like any other
// (WithQueryName on the context works), bounded by MaxConns, AcquireTimeout
// and ClientTimeout (except PingContext: pgx sends pings past the tracer,
// so give it a deadline, or use DB.Ping), and run with the pool's settings
// and hooks. It keeps no idle connection of its own: each goes back to the
// pool after use, so none looks leaked. Every call returns the same *sql.DB,
// so don't close it yourself (a closed one stays closed); Close closes it.
func (db *DB) SQLDB() *sql.DB {
	db.sqlMu.Lock()
	defer db.sqlMu.Unlock()
	if db.sqlDB == nil {
		db.sqlDB = stdlib.OpenDBFromPool(db.pool)
		if db.closed.Load() {
			_ = db.sqlDB.Close()
		}
	}
	return db.sqlDB
}

// closeSQLDB closes SQLDB's *sql.DB, when there is one.
func (db *DB) closeSQLDB() {
	db.sqlMu.Lock()
	defer db.sqlMu.Unlock()
	if db.sqlDB != nil {
		_ = db.sqlDB.Close()
	}
}
