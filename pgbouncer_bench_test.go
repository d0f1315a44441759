package pgkit_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// benchBouncerQuery is a typical read: the last ten messages of a
// conversation, by an indexed key passed as an argument.
const benchBouncerQuery = `SELECT id, role, content FROM messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT 10`

// BenchmarkPgBouncer measures pgkit through a PgBouncer in transaction mode
// (8 server connections) from 64 goroutines on 64 client connections:
//
//   - exec-mode: the query modes that leave nothing on a server connection,
//     QueryExecModeExec (Config.PgBouncer's default) against
//     QueryExecModeCacheDescribe; exec-mode-bulk: the same for UpdateMany of
//     10,000 rows (arrays as parameters);
//
//   - vs-direct: pgkit direct to PostgreSQL on 8 connections (prepared
//     statements) against pgkit through PgBouncer; vs-direct-exec: the same
//     with the direct side in Exec mode too, which leaves PgBouncer's hop;
//
//   - tx: a short InTx (BEGIN with the SET LOCALs, the query, COMMIT),
//     direct against through PgBouncer.
//
//     go test -run '^$' -bench BenchmarkPgBouncer -benchtime 20000x -count 3
func BenchmarkPgBouncer(b *testing.B) {
	url := pgtest.NewDatabase(b)
	direct := benchDBOn(b, url, 8, pgkit.Config{})
	directExec := benchDBOn(b, url+"&default_query_exec_mode=exec", 8, pgkit.Config{})
	convID := newConversation(b, direct)
	rows := messages(convID, 10000, 0)
	require.NoError(b, pgkit.InsertReturning(context.Background(), direct, "messages", rows))
	bouncer := pgtest.StartPgBouncer(b, url, pgtest.PgBouncerOptions{DefaultPoolSize: 8})
	exec := benchDBOn(b, bouncer, 64, pgkit.Config{PgBouncer: true})
	describe := benchDBOn(b, bouncer+"&default_query_exec_mode=cache_describe", 64, pgkit.Config{PgBouncer: true})

	read := func(q pgkit.Querier) func(context.Context) error {
		return func(ctx context.Context) error {
			rows, err := q.Query(ctx, benchBouncerQuery, convID)
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
				ID            int64
				Role, Content string
			}])
			if err == nil && len(got) != 10 {
				err = fmt.Errorf("got %d rows, want 10", len(got))
			}
			return err
		}
	}
	inTx := func(db *pgkit.DB) func(context.Context) error {
		return func(ctx context.Context) error {
			return pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return read(tx)(ctx) })
		}
	}
	updateMany := func(db *pgkit.DB) func(context.Context) error {
		return func(ctx context.Context) error {
			n, err := pgkit.UpdateMany(ctx, db, "messages", rows, []string{"id"}, pgkit.Columns("id", "tokens"))
			if err == nil && n != int64(len(rows)) {
				err = fmt.Errorf("updated %d rows, want %d", n, len(rows))
			}
			return err
		}
	}
	b.Run("exec-mode", func(b *testing.B) { benchAB(b, 64, "exec", read(exec), "cache-describe", read(describe)) })
	b.Run("exec-mode-bulk", func(b *testing.B) { benchAB(b, 1, "exec", updateMany(exec), "cache-describe", updateMany(describe)) })
	b.Run("vs-direct", func(b *testing.B) { benchAB(b, 64, "direct", read(direct), "pgbouncer", read(exec)) })
	b.Run("vs-direct-exec", func(b *testing.B) { benchAB(b, 64, "direct", read(directExec), "pgbouncer", read(exec)) })
	b.Run("tx", func(b *testing.B) { benchAB(b, 64, "direct", inTx(direct), "pgbouncer", inTx(exec)) })
}
