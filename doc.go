// Package pgkit is a database layer for Go services on PostgreSQL: a tuned
// [github.com/jackc/pgx/v5/pgxpool] pool behind one [Open], instrumented for
// Prometheus and slog, with transactions that retry and isolate tenants, bulk
// writes, a background writer, health and statistics handlers, and what it
// takes past one server. Every call is bounded even without a deadline.
//
// # Open
//
// Open a [DB] once per process and share it; [Config] documents every field
// and its default (a 5s acquire timeout, a 60s statement_timeout, lifetime
// recycling with jitter, TCP keepalives, JIT off):
//
//	db, err := pgkit.Open(ctx, pgkit.Config{
//		URL:        os.Getenv("DATABASE_URL"),
//		Logger:     slog.Default(),
//		Registerer: prometheus.DefaultRegisterer,
//	})
//	if err != nil {
//		return err
//	}
//	defer db.Close()
//
// [DB] has every method of *pgxpool.Pool but Config, so sqlc's DBTX and code
// written for pgxpool take it; [DB.Pool] is the pool itself. pgxpool's hooks
// are [Config.BeforeConnect], [Config.AfterConnect], [Config.PrepareConn] and
// [Config.AfterRelease]; [Config.DialFunc] and [Config.TLSConfig] bring your
// own dialer and TLS. [DB.SQLDB] is a *sql.DB over the same pool, for
// database/sql code such as a migration tool. [DB.Shutdown] closes within a
// deadline and names what still held connections.
//
// # Errors and bounds
//
// A wait for a connection is bounded by [Config.AcquireTimeout] and a
// statement by [Config.ClientTimeout], so a server that stops answering
// cannot hold a caller:
//
//	_, err := db.Exec(ctx, "UPDATE users SET name = $1 WHERE id = $2", name, id)
//	var down *pgkit.UnreachableError
//	switch {
//	case errors.As(err, &down): // the server cannot be reached: answer 503 at once
//	case errors.Is(err, pgkit.ErrAcquireTimeout): // the pool is exhausted
//	}
//
// # Instrumentation
//
// Every statement is named ([WithQueryName], else its SQL's shape) and timed
// into Prometheus histograms when [Config.Registerer] is set; statements past
// [Config.SlowQueryThreshold] are logged without their argument values
// ([DB.SlowQueries] keeps the recent ones); [Middleware] totals each
// request's database time into a Server-Timing header and [StatsFrom];
// connections held too long are reported with the stack that took them
// ([Config.LeakThreshold]). [Config.Tracer] chains a pgx tracer of yours.
//
// # Transactions
//
// [InTx] commits when fn returns nil and rolls back on an error or a panic;
// on a [Tx] it makes a savepoint. It runs on any [TxStarter]: a *DB, a
// *pgxpool.Pool, a *pgx.Conn or a pgx.Tx. Options: [WithRetry] (serialization
// failures, deadlocks, a connection lost before COMMIT), [WithTenant] (for
// row-level security), [WithIsolation], [ReadOnly], [OnReplica],
// [WithTimeout], [WithStatementTimeout] for a long job. [Tx.OnCommit] runs
// effects after the commit only.
//
//	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
//		_, err := tx.Exec(ctx, "INSERT INTO messages (tenant_id, body) VALUES ($1, $2)", tenant, body)
//		return err
//	}, pgkit.WithTenant(tenant), pgkit.WithRetry(pgkit.RetryPolicy{}))
//
// Functions that only run statements take a [Querier], which *DB, pgx.Tx and
// *pgxpool.Conn satisfy.
//
// # Bulk writes
//
// [CopyInsert], [InsertReturning], [UpdateMany] and [UpsertMany] write slices
// of structs in chunks; [NewWriter] starts a [Writer] that batches rows in the
// background into COPY and accounts for every item it accepted.
//
// # Monitoring
//
// [DB.Health] and [DB.PoolStats] report the database's state;
// [HealthHandler], [StatsHandler] and [DashboardHandler] serve them over HTTP
// (the details behind [BearerToken] or your own authorizer). The alert rules
// and a Grafana dashboard are in examples/monitoring.
//
// # Past one server
//
// [Config.PgBouncer] adapts the pool to PgBouncer's transaction pooling, and
// [Config.ReplicaURLs] adds streaming replicas that [DB.Reader] and
// [OnReplica] spread reads over, setting aside a replica that lags. The cache,
// over memory or Redis, is package github.com/pgkit-dev/pgkit/cache; a
// database per test for your own tests is github.com/pgkit-dev/pgkit/pgkittest.
//
// The guides, one per topic, are in the repository's docs directory.
package pgkit
