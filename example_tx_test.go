package pgkit_test

import (
	"context"
	"fmt"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
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

func ExampleInTx() {
	url, drop := pgtest.ForExample()
	defer drop()
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: url, MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	var userID int64
	_, _ = db.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')`)
	_ = db.QueryRow(ctx, `INSERT INTO users (tenant_id, email) VALUES ('acme', 'ann@acme.test') RETURNING id`).Scan(&userID)

	if _, err := createConversation(ctx, db, "acme", userID, "Support"); err != nil {
		panic(err)
	}
	// All or nothing: user 0 does not exist, so the conversation's insert
	// fails and nothing of the operation is left.
	_, err = createConversation(ctx, db, "acme", 0, "Broken")
	fmt.Println("second operation failed:", err != nil)

	var conversations, messages, usage int
	_ = db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM conversations), (SELECT COUNT(*) FROM messages),
		(SELECT COUNT(*) FROM usage_records)`).Scan(&conversations, &messages, &usage)
	fmt.Println("conversations:", conversations, "messages:", messages, "usage records:", usage)
	// Output:
	// second operation failed: true
	// conversations: 1 messages: 1 usage records: 1
}
