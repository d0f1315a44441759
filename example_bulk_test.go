package pgkit_test

import (
	"context"
	"fmt"
	"time"

	"os"

	"github.com/pgkit-dev/pgkit"
)

// Message is a row of messages as an ORM model has it.
type Message struct {
	ID             int64     `db:"id"` // identity: filled by the database
	TenantID       string    `db:"tenant_id"`
	ConversationID int64     `db:"conversation_id"`
	Role           string    `db:"role"`
	Content        string    `db:"content"`
	CreatedAt      time.Time `db:"created_at,default"` // the column default: filled by the database
}

// UsageUpdate is an ORM's bindparam-style bulk update of usage_records.
type UsageUpdate struct {
	ID         int64   `db:"id"`
	TokensUsed int32   `db:"tokens_used"`
	CostCents  float64 `db:"cost_cents"`
}

// An ORM's batch_create_messages (add_all, commit, refresh of every row:
// one round trip per row) and batch_update_usage, as two statements.
// DATABASE_URL names a database with the chat schema of
// testdata/schema.sql.
func ExampleInsertReturning() {
	ctx := context.Background()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: os.Getenv("DATABASE_URL"), MaxConns: 2})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	tenant := fmt.Sprint("acme-", time.Now().UnixNano()) // a tenant of this run's own
	var convID, userID int64
	if err := db.QueryRow(ctx, `WITH t AS (INSERT INTO tenants (id, name) VALUES ($1, 'Acme') RETURNING id),
		u AS (INSERT INTO users (tenant_id, email) SELECT id, 'ann@acme' FROM t RETURNING id, tenant_id)
		INSERT INTO conversations (tenant_id, user_id) SELECT tenant_id, id FROM u RETURNING id, user_id`, tenant).Scan(&convID, &userID); err != nil {
		panic(err)
	}

	// batch_create_messages: ids and timestamps come back into the structs.
	msgs := make([]Message, 10_000)
	for i := range msgs {
		msgs[i] = Message{TenantID: tenant, ConversationID: convID, Role: "user", Content: fmt.Sprint("message ", i)}
	}
	if err := pgkit.InsertReturning(ctx, db, "messages", msgs); err != nil {
		panic(err)
	}
	fmt.Println("ids in order:", msgs[9999].ID-msgs[0].ID == 9999, "timestamps set:", !msgs[0].CreatedAt.IsZero())

	// batch_update_usage: one UPDATE ... FROM unnest for all records.
	var ids []int64
	rows, _ := db.Query(ctx, `INSERT INTO usage_records (tenant_id, user_id) SELECT $1, $2 FROM generate_series(1, 3) RETURNING id`, tenant, userID)
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	updates := []UsageUpdate{{ids[0], 100, 0.25}, {ids[1], 200, 0.5}, {ids[2], 300, 0.75}}
	n, err := pgkit.UpdateMany(ctx, db, "usage_records", updates, []string{"id"})
	if err != nil {
		panic(err)
	}
	var tokens int
	var cost float64
	_ = db.QueryRow(ctx, `SELECT SUM(tokens_used), SUM(cost_cents)::float8 FROM usage_records WHERE tenant_id = $1`, tenant).Scan(&tokens, &cost)
	fmt.Println("updated:", n, "tokens:", tokens, "cost:", cost)
	// Output:
	// ids in order: true timestamps set: true
	// updated: 3 tokens: 600 cost: 1.5
}
