package pgkit_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

// The bulk benchmarks write benchRows rows per operation through a pgkit
// helper and through the raw pgx code it replaces, on one pool:
//
//	go test -run '^$' -bench 'BenchmarkBulk' -benchtime 10x
const benchRows = 10_000

func benchBulkSetup(b *testing.B) (*pgkit.DB, int64) {
	_, db := benchPools(b, 2, pgkit.Config{})
	return db, newConversation(b, db)
}

// rawMessageArrays is what raw pgx code builds for unnest: one slice per column.
func rawMessageArrays(rows []messageRow) (tenants []string, convs []int64, roles, contents []string, tokens []int32) {
	for _, r := range rows {
		tenants, convs, roles = append(tenants, r.TenantID), append(convs, r.ConversationID), append(roles, r.Role)
		contents, tokens = append(contents, r.Content), append(tokens, r.Tokens)
	}
	return
}

const rawInsertReturning = `INSERT INTO messages (tenant_id, conversation_id, role, content, tokens)
	SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::int[]) RETURNING id, created_at`

func BenchmarkBulkCopyInsert(b *testing.B) {
	db, convID := benchBulkSetup(b)
	rows := messages(convID, benchRows, 0)
	cols := []string{"tenant_id", "conversation_id", "role", "content", "tokens"}
	a, k := benchAB(b, 1,
		"raw-CopyFrom", func(ctx context.Context) error {
			_, err := db.CopyFrom(ctx, pgx.Identifier{"messages"}, cols, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
				r := &rows[i]
				return []any{r.TenantID, r.ConversationID, r.Role, r.Content, r.Tokens}, nil
			}))
			return err
		},
		"CopyInsert", func(ctx context.Context) error { _, err := pgkit.CopyInsert(ctx, db, "messages", rows); return err })
	reportRows(b, benchRows, "raw-CopyFrom", a, "CopyInsert", k)
}

func BenchmarkBulkInsertReturning(b *testing.B) {
	db, convID := benchBulkSetup(b)
	rows := messages(convID, benchRows, 0)
	a, k := benchAB(b, 1,
		"raw-unnest", func(ctx context.Context) error {
			t, c, r, co, to := rawMessageArrays(rows)
			pgRows, err := db.Query(ctx, rawInsertReturning, t, c, r, co, to)
			if err != nil {
				return err
			}
			i := 0
			for pgRows.Next() {
				if err := pgRows.Scan(&rows[i].ID, &rows[i].CreatedAt); err != nil {
					return err
				}
				i++
			}
			return pgRows.Err()
		},
		"InsertReturning", func(ctx context.Context) error { return pgkit.InsertReturning(ctx, db, "messages", rows) })
	reportRows(b, benchRows, "raw-unnest", a, "InsertReturning", k)
}

// BenchmarkBulkInsertReturningVsRowAtATime is an ORM's add_all + refresh:
// one INSERT ... RETURNING per row, in one transaction.
func BenchmarkBulkInsertReturningVsRowAtATime(b *testing.B) {
	db, convID := benchBulkSetup(b)
	rows := messages(convID, benchRows, 0)
	a, k := benchAB(b, 1,
		"row-at-a-time", func(ctx context.Context) error {
			return pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				for i := range rows {
					r := &rows[i]
					if err := tx.QueryRow(ctx, `INSERT INTO messages (tenant_id, conversation_id, role, content, tokens)
						VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at`, r.TenantID, r.ConversationID, r.Role, r.Content, r.Tokens,
					).Scan(&r.ID, &r.CreatedAt); err != nil {
						return err
					}
				}
				return nil
			})
		},
		"InsertReturning", func(ctx context.Context) error { return pgkit.InsertReturning(ctx, db, "messages", rows) })
	reportRows(b, benchRows, "row-at-a-time", a, "InsertReturning", k)
}

func BenchmarkBulkUpdateMany(b *testing.B) {
	db, convID := benchBulkSetup(b)
	rows := messages(convID, benchRows, 0)
	require.NoError(b, pgkit.InsertReturning(context.Background(), db, "messages", rows))
	ids := make([]int64, len(rows))
	tokens := make([]int32, len(rows))
	for i := range rows {
		ids[i], tokens[i] = rows[i].ID, int32(i)
	}
	a, k := benchAB(b, 1,
		"raw-unnest", func(ctx context.Context) error {
			ids, tokens := make([]int64, len(rows)), make([]int32, len(rows))
			for i := range rows {
				ids[i], tokens[i] = rows[i].ID, rows[i].Tokens
			}
			_, err := db.Exec(ctx, `UPDATE messages AS t SET tokens = v.tokens FROM unnest($1::bigint[], $2::int[]) AS v(id, tokens) WHERE t.id = v.id`, ids, tokens)
			return err
		},
		"UpdateMany", func(ctx context.Context) error {
			_, err := pgkit.UpdateMany(ctx, db, "messages", rows, []string{"id"}, pgkit.Columns("id", "tokens"))
			return err
		})
	reportRows(b, benchRows, "raw-unnest", a, "UpdateMany", k)
}

// BenchmarkBulkUpdateManyVsRowAtATime is one UPDATE per row, in one
// transaction, against UpdateMany.
func BenchmarkBulkUpdateManyVsRowAtATime(b *testing.B) {
	db, convID := benchBulkSetup(b)
	rows := messages(convID, benchRows, 0)
	require.NoError(b, pgkit.InsertReturning(context.Background(), db, "messages", rows))
	a, k := benchAB(b, 1,
		"row-at-a-time", func(ctx context.Context) error {
			return pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				for i := range rows {
					if _, err := tx.Exec(ctx, `UPDATE messages SET tokens = $1 WHERE id = $2`, rows[i].Tokens, rows[i].ID); err != nil {
						return err
					}
				}
				return nil
			})
		},
		"UpdateMany", func(ctx context.Context) error {
			_, err := pgkit.UpdateMany(ctx, db, "messages", rows, []string{"id"}, pgkit.Columns("id", "tokens"))
			return err
		})
	reportRows(b, benchRows, "row-at-a-time", a, "UpdateMany", k)
}

func BenchmarkBulkUpsertMany(b *testing.B) {
	db, convID := benchBulkSetup(b)
	rows := messages(convID, benchRows, 0)
	require.NoError(b, pgkit.InsertReturning(context.Background(), db, "messages", rows))
	cols := pgkit.Columns("id", "tenant_id", "conversation_id", "role", "content", "tokens")
	a, k := benchAB(b, 1,
		"raw-unnest", func(ctx context.Context) error {
			ids := make([]int64, len(rows))
			for i := range rows {
				ids[i] = rows[i].ID
			}
			t, c, r, co, to := rawMessageArrays(rows)
			_, err := db.Exec(ctx, `INSERT INTO messages (id, tenant_id, conversation_id, role, content, tokens) OVERRIDING SYSTEM VALUE
				SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::int[])
				ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, conversation_id = EXCLUDED.conversation_id,
				role = EXCLUDED.role, content = EXCLUDED.content, tokens = EXCLUDED.tokens`, ids, t, c, r, co, to)
			return err
		},
		"UpsertMany", func(ctx context.Context) error {
			_, err := pgkit.UpsertMany(ctx, db, "messages", rows, []string{"id"}, cols)
			return err
		})
	reportRows(b, benchRows, "raw-unnest", a, "UpsertMany", k)
}

// BenchmarkChunkSize is the sweep behind DefaultChunkSize: 50,000 rows
// through InsertReturning and UpdateMany at each chunk size.
func BenchmarkChunkSize(b *testing.B) {
	const n = 50_000
	db, convID := benchBulkSetup(b)
	rows := messages(convID, n, 0)
	for _, size := range []int{500, 1000, 5000, 10000, 50000} {
		b.Run(fmt.Sprintf("InsertReturning/chunk=%d", size), func(b *testing.B) {
			for b.Loop() {
				require.NoError(b, pgkit.InsertReturning(context.Background(), db, "messages", rows, pgkit.ChunkSize(size)))
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
		b.Run(fmt.Sprintf("UpdateMany/chunk=%d", size), func(b *testing.B) {
			for b.Loop() {
				_, err := pgkit.UpdateMany(context.Background(), db, "messages", rows, []string{"id"}, pgkit.Columns("id", "tokens"), pgkit.ChunkSize(size))
				require.NoError(b, err)
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
