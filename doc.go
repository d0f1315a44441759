// Package pgkit turns a pgx pool into a production database layer for Go
// services: a tuned pgxpool behind one Open, with an acquire timeout, lifetime
// recycling with jitter, a liveness ping on checkout, server-side timeouts,
// JIT off and TCP keepalives; health checks and pool statistics with HTTP
// handlers.
//
// Open a DB once per process and share it:
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
// DB has the method set of *pgxpool.Pool (Exec, Query, QueryRow, SendBatch,
// CopyFrom, Begin, BeginTx, Acquire, Ping, Stat), and Pool returns the pool
// itself. DB.Shutdown closes it within a context's deadline, naming what
// still held connections. Every call is bounded even without a deadline of
// its own: the wait for a connection by Config.AcquireTimeout, a statement
// by Config.ClientTimeout (a server that stops answering cannot hold it):
//
//	_, err := db.Exec(ctx, "UPDATE users SET name = $1 WHERE id = $2", name, id)
//	var down *pgkit.UnreachableError
//	switch {
//	case errors.As(err, &down):
//		// the database cannot be reached (pgkit backs off connecting,
//		// Config.ConnectBackoff): answer 503 at once
//	case errors.Is(err, pgkit.ErrAcquireTimeout):
//		// the pool is exhausted: answer 503 rather than queue forever
//	}
//
// Health and statistics:
//
//	mux.Handle("/healthz", pgkit.HealthHandler(db))
//	mux.Handle("/admin/db-stats", pgkit.StatsHandler(db, pgkit.BearerToken(adminToken)))
//
// Functions that only run statements take a Querier, which *DB, pgx.Tx and
// *pgxpool.Conn all satisfy, so they work inside or outside a transaction.
//
// Past one server: Config.PgBouncer adapts the pool to PgBouncer's
// transaction pooling, and Config.ReplicaURLs adds streaming replicas that
// DB.Reader (and InTx with OnReplica) spreads reads over:
//
//	rows, err := db.Reader().Query(ctx, "SELECT ... WHERE conversation_id = $1", id)
package pgkit
