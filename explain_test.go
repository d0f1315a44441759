package pgkit_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"github.com/stretchr/testify/require"
)

// explainSecrets are an argument value and a literal of the slow statement:
// neither may reach a plan, a suggestion, a log line or JSON.
const (
	explainArg     = "argument-sekret-51c2"
	explainLiteral = "literal-sekret-7d1e"
)

// seedUnindexedMessages gives db 200,000 messages over 2,000 conversations
// with no index on messages.conversation_id, the foreign key, and returns a
// conversation id.
func seedUnindexedMessages(t *testing.T, db *pgkit.DB) int64 {
	t.Helper()
	ctx := context.Background()
	ids := seedConversations(t, db, "plans", 2000)
	_, err := db.Exec(ctx, `DROP INDEX messages_conversation_idx`)
	require.NoError(t, err)
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO messages (tenant_id, conversation_id, role, content)
			SELECT 'plans', $1::bigint + (i % 2000), 'user', 'message ' || i FROM generate_series(1, 200000) i`, ids[0])
		return err
	}, pgkit.WithStatementTimeout(time.Minute)))
	_, err = db.Exec(ctx, `ANALYZE messages`)
	require.NoError(t, err)
	return ids[0]
}

// slowPlan runs the slow statement until its plan is captured and returns it.
func slowPlan(t *testing.T, db *pgkit.DB, convID int64, logs *testkit.LogRecorder) *pgkit.QueryPlan {
	t.Helper()
	ctx := pgkit.WithQueryName(context.Background(), "messages_of_conversation")
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		var n int
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM messages WHERE conversation_id = $1 AND content <> $2 AND role <> '`+explainLiteral+`'`,
			convID, explainArg).Scan(&n))
		require.Equal(t, 100, n)
		for _, q := range db.SlowQueries() {
			if q.Name == "messages_of_conversation" && q.Plan != nil {
				return q.Plan
			}
		}
		<-time.After(50 * time.Millisecond) // the plan is captured in the background
	}
	t.Fatalf("no plan for the slow statement; log:\n%s", logs.Text())
	return nil
}

func TestSlowQueryPlanAndVerifiedIndex(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), ExplainSlowQueries: true, SlowQueryThreshold: time.Millisecond})
	ctx := context.Background()
	// In a schema off the search_path, as services that keep extensions
	// apart do: pgkit must find it there.
	_, err := db.Exec(ctx, `CREATE SCHEMA extensions; CREATE EXTENSION hypopg SCHEMA extensions`)
	require.NoError(t, err, "the HypoPG extension: install postgresql-15-hypopg (scripts/provision.sh does)")
	convID := seedUnindexedMessages(t, db)

	plan := slowPlan(t, db, convID, logs)
	require.Equal(t, "Aggregate", plan.TopNode)
	require.Len(t, plan.SeqScans, 1)
	scan := plan.SeqScans[0]
	require.Equal(t, "messages", scan.Table)
	require.GreaterOrEqual(t, scan.TableRows, 150_000.0)
	require.Equal(t, []string{"conversation_id"}, scan.Columns, "the equality column; <> is no use to an index")
	require.Contains(t, scan.Filter, "conversation_id = $1")
	require.Len(t, plan.Suggestions, 1)
	s := plan.Suggestions[0]
	require.Equal(t, "CREATE INDEX CONCURRENTLY ON messages (conversation_id)", s.SQL)
	require.True(t, s.Verified)
	require.GreaterOrEqual(t, plan.Cost/s.CostAfter, 10.0, "cost %.0f -> %.0f", plan.Cost, s.CostAfter)

	attrs, ok := logs.Find("slow query plan", "name", "messages_of_conversation")
	require.True(t, ok, logs.Text())
	require.Contains(t, attrs["suggestion"].String(), "CREATE INDEX CONCURRENTLY ON messages (conversation_id)")
	body, err := json.Marshal(db.SlowQueries())
	require.NoError(t, err)
	for _, text := range []string{logs.Text(), string(body)} {
		require.NotContains(t, text, explainArg)
		require.NotContains(t, text, explainLiteral)
	}
	require.Equal(t, 1, strings.Count(logs.Text(), "slow query plan name=messages_of_conversation"), "one capture per name per minute")

	// The suggestion applied, the statement is no longer slow.
	require.NoError(t, db.WithStatementTimeout(ctx, time.Minute, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, s.SQL)
		return err
	}))
	// Asserted on the plan, not on a time: a shared machine can make even an
	// index lookup take longer than the slow-query threshold.
	var after string
	require.NoError(t, db.QueryRow(ctx, `EXPLAIN (FORMAT JSON) SELECT count(*) FROM messages WHERE conversation_id = $1 AND content <> $2`, convID, explainArg).Scan(&after))
	require.NotContains(t, after, `"Seq Scan"`, after)
	require.Contains(t, after, `"Index Name": "messages_conversation_id_idx"`, after)
}

func TestSlowQueryPlanWithoutHypoPG(t *testing.T) {
	t.Parallel()
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), ExplainSlowQueries: true, SlowQueryThreshold: time.Millisecond})
	convID := seedUnindexedMessages(t, db)
	plan := slowPlan(t, db, convID, logs)
	require.Len(t, plan.Suggestions, 1)
	require.False(t, plan.Suggestions[0].Verified)
	require.Contains(t, plan.Suggestions[0].Note, "HypoPG")
	require.Equal(t, "CREATE INDEX CONCURRENTLY ON messages (conversation_id)", plan.Suggestions[0].SQL)
}
