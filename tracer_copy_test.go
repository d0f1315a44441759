package pgkit_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

// moodRow goes into copy_moods, whose ref is a uuid: a Ref that is not one
// cannot be encoded by the client.
type moodRow struct {
	K    int    `db:"k"`
	Mood string `db:"mood"`
	Ref  string `db:"ref"`
}

func createMoods(t *testing.T, db *pgkit.DB) {
	t.Helper()
	_, err := db.Exec(context.Background(), `CREATE TABLE copy_moods (k int PRIMARY KEY CHECK (k > 0), mood text, ref uuid)`)
	require.NoError(t, err)
}

// TestCopyLogQuotesEachColumn: the logged COPY lists its columns each quoted
// and separated by commas, as pgx sends it; not joined by dots as if they
// were the parts of one qualified name.
func TestCopyLogQuotesEachColumn(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs)})
	createMoods(t, db)
	// k = 0 breaks the CHECK: the COPY fails on the server, and is logged.
	_, err := pgkit.CopyInsertFrom(context.Background(), db, "copy_moods", []string{"k", "mood", "ref"},
		pgx.CopyFromRows([][]any{{0, "calm", "9b2f6f7e-64b4-4f5e-9d0c-1a4f1c2b3d4e"}}))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "23514", pgErr.Code)
	attrs, ok := logs.find("query failed", "op", "copy")
	require.True(t, ok, logs.text())
	require.Equal(t, `COPY "copy_moods" ( "k", "mood", "ref" ) FROM STDIN BINARY`, attrs["sql"].String())
}
