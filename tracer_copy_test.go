package pgkit_test

import (
	"context"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/prometheus/client_golang/prometheus"
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
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs)})
	createMoods(t, db)
	// k = 0 breaks the CHECK: the COPY fails on the server, and is logged.
	_, err := pgkit.CopyInsertFrom(context.Background(), db, "copy_moods", []string{"k", "mood", "ref"},
		pgx.CopyFromRows([][]any{{0, "calm", "9b2f6f7e-64b4-4f5e-9d0c-1a4f1c2b3d4e"}}))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "23514", pgErr.Code)
	attrs, ok := logs.Find("query failed", "op", "copy")
	require.True(t, ok, logs.Text())
	require.Equal(t, `COPY "copy_moods" ( "k", "mood", "ref" ) FROM STDIN BINARY`, attrs["sql"].String())
}

// TestCopyEncodeFailureIsAnError: a COPY the client aborts because a value
// does not encode (a Go string that is not a uuid, into a uuid column) comes
// back from the server as 57014, the code of a canceled statement. Nobody
// canceled it: it is a failure, logged at Error and counted in the error
// metrics, through CopyInsert and through the Writer. A COPY whose context
// was canceled is still "canceled".
func TestCopyEncodeFailureIsAnError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	logs := &testkit.LogRecorder{}
	db := openTest(t, pgkit.Config{Logger: slog.New(logs), Registerer: reg, Name: "copyfail"})
	createMoods(t, db)

	_, err := pgkit.CopyInsert(pgkit.WithQueryName(ctx, "moods_bulk"), db, "copy_moods",
		[]moodRow{{K: 1, Mood: "calm", Ref: "not-a-uuid"}})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "57014", pgErr.Code, "the server's answer to the client's CopyFail")
	attrs, ok := logs.Find("query failed", "name", "moods_bulk")
	require.True(t, ok, "logged at Error as a failure:\n%s", logs.Text())
	require.Equal(t, "copy", attrs["op"].String())
	require.NotContains(t, logs.Text(), "not-a-uuid", "the value stays out of the log")
	g := testkit.Gather(t, reg)
	require.Equal(t, 1.0, g.Value(t, "pgkit_query_duration_seconds", map[string]string{"name": "moods_bulk", "op": "copy", "outcome": "error"}))
	require.Nil(t, g.Find("pgkit_query_duration_seconds", map[string]string{"name": "moods_bulk", "outcome": "canceled"}))
	require.Equal(t, 1.0, g.Value(t, "pgkit_query_errors_total", map[string]string{"name": "moods_bulk", "sqlstate_class": "57"}))

	// The Writer's COPY of the same row: a failure too.
	var failed []moodRow
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[moodRow]{Table: "copy_moods", Name: "moods_writer",
		OnError: func(items []moodRow, _ error) { failed = append(failed, items...) }})
	require.NoError(t, err)
	require.NoError(t, w.Write(ctx, moodRow{K: 2, Mood: "glum", Ref: "also-not-a-uuid"}))
	require.Error(t, w.Close(ctx))
	require.Len(t, failed, 1)
	g = testkit.Gather(t, reg)
	require.Equal(t, 1.0, g.Value(t, "pgkit_query_errors_total", map[string]string{"name": "copy_moods", "sqlstate_class": "57"}))
	require.Nil(t, g.Find("pgkit_query_duration_seconds", map[string]string{"name": "copy_moods", "outcome": "canceled"}))

	// A COPY whose caller gave up: canceled, not an error.
	cctx, cancel := context.WithCancel(pgkit.WithQueryName(ctx, "moods_gave_up"))
	sent := 0
	_, err = pgkit.CopyInsertFrom(cctx, db, "copy_moods", []string{"k", "mood"}, pgx.CopyFromFunc(func() ([]any, error) {
		sent++
		if sent == 100 {
			cancel()
		}
		if cctx.Err() != nil {
			return nil, cctx.Err()
		}
		return []any{100 + sent, "meh"}, nil
	}))
	require.Error(t, err)
	g = testkit.Gather(t, reg)
	require.Equal(t, 1.0, g.Value(t, "pgkit_query_duration_seconds", map[string]string{"name": "moods_gave_up", "op": "copy", "outcome": "canceled"}))
	require.Nil(t, g.Find("pgkit_query_errors_total", map[string]string{"name": "moods_gave_up"}))
}
