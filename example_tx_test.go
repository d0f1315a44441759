package pgkit_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
)

// createConversation is a complex conversation operation: a
// conversation, its welcome message and a usage record, all or nothing, in
// the tenant's transaction. RETURNING gives the ids an ORM needs a flush
// for.
func createConversation(ctx context.Context, db *pgkit.DB, tenant string, userID int64, title string) (convID int64, err error) {
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO conversations (tenant_id, user_id, title) VALUES ($1, $2, $3) RETURNING id`,
			tenant, userID, title).Scan(&convID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO messages (tenant_id, conversation_id, role, content) VALUES ($1, $2, 'system', $3)`,
			tenant, convID, "Welcome to "+title); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO usage_records (tenant_id, user_id, conversation_id, tokens_used) VALUES ($1, $2, $3, 0)`,
			tenant, userID, convID)
		return err
	}, pgkit.WithTenant(tenant), pgkit.WithRetry(pgkit.RetryPolicy{}))
	return convID, err
}

// ExampleInTx runs a conversation operation all or nothing. DATABASE_URL
// names a database with the chat schema of testdata/schema.sql.
func ExampleInTx() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	tenant := fmt.Sprint("acme-", time.Now().UnixNano()) // a tenant of this run's own
	var userID int64
	if err := db.QueryRow(ctx, `WITH t AS (INSERT INTO tenants (id, name) VALUES ($1, 'Acme') RETURNING id)
		INSERT INTO users (tenant_id, email) SELECT id, 'ann@acme.test' FROM t RETURNING id`, tenant).Scan(&userID); err != nil {
		panic(err)
	}

	if _, err := createConversation(ctx, db, tenant, userID, "Support"); err != nil {
		panic(err)
	}
	// All or nothing: user 0 does not exist, so the conversation's insert
	// fails and nothing of the operation is left.
	_, err = createConversation(ctx, db, tenant, 0, "Broken")
	fmt.Println("second operation failed:", err != nil)

	var conversations, messages, usage int
	_ = db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM conversations WHERE tenant_id = $1), (SELECT COUNT(*) FROM messages WHERE tenant_id = $1),
		(SELECT COUNT(*) FROM usage_records WHERE tenant_id = $1)`, tenant).Scan(&conversations, &messages, &usage)
	fmt.Println("conversations:", conversations, "messages:", messages, "usage records:", usage)
	// Output:
	// second operation failed: true
	// conversations: 1 messages: 1 usage records: 1
}

// ExampleInTx_pgxpool runs InTx on a plain *pgxpool.Pool, and inside it on
// the pgx.Tx as a savepoint: the inner failure is undone, the outer work
// commits.
func ExampleInTx_pgxpool() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	var kept, undone int
	err = pgkit.InTx(ctx, pool, func(tx pgkit.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE notes (body text) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO notes VALUES ('kept')`); err != nil {
			return err
		}
		inner := pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error {
			if _, err := sp.Exec(ctx, `INSERT INTO notes VALUES ('undone')`); err != nil {
				return err
			}
			_, err := sp.Exec(ctx, `SELECT 1 / 0`)
			return err
		})
		fmt.Println("savepoint failed:", inner != nil)
		return tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE body = 'kept'), count(*) FILTER (WHERE body = 'undone') FROM notes`).Scan(&kept, &undone)
	}, pgkit.WithRetry(pgkit.RetryPolicy{}))
	fmt.Println(err, kept, undone)
	// Output:
	// savepoint failed: true
	// <nil> 1 0
}

// ExampleWithStatementTimeout gives one report more time than
// Config.StatementTimeout allows every other statement.
func ExampleWithStatementTimeout() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2, StatementTimeout: 100 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	report := func(opts ...pgkit.TxOption) error {
		return pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
			_, err := tx.Exec(ctx, `SELECT pg_sleep(0.3)`) // a report longer than 100ms
			return err
		}, opts...)
	}
	var pgErr *pgconn.PgError
	fmt.Println("without:", errors.As(report(), &pgErr) && pgErr.Code == "57014")
	fmt.Println("with:", report(pgkit.WithStatementTimeout(10*time.Minute)))
	// Output:
	// without: true
	// with: <nil>
}
