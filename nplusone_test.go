package pgkit_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// seedConversations makes n conversations of one tenant and returns their
// ids.
func seedConversations(t *testing.T, db *pgkit.DB, tenant string, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	_, err := db.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $1)`, tenant)
	require.NoError(t, err)
	rows, err := db.Query(ctx, `WITH u AS (INSERT INTO users (tenant_id, email) VALUES ($1, 'ann@example.test') RETURNING id)
		INSERT INTO conversations (tenant_id, user_id) SELECT $1, u.id FROM u, generate_series(1, $2) RETURNING id`, tenant, n)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return ids
}

// openNPlusOne opens a DB that logs to a recorder and counts into a
// registry of its own.
func openNPlusOne(t *testing.T, cfg pgkit.Config) (*pgkit.DB, *testkit.LogRecorder, *prometheus.Registry) {
	t.Helper()
	logs, reg := &testkit.LogRecorder{}, prometheus.NewPedanticRegistry()
	cfg.Logger, cfg.Registerer = slog.New(logs), reg
	return openTest(t, cfg), logs, reg
}

func TestNPlusOneCaughtWithItsLine(t *testing.T) {
	t.Parallel()
	db, logs, reg := openNPlusOne(t, pgkit.Config{MaxConns: 4})
	ids := seedConversations(t, db, "acme", 15)
	const secret = "sekret-tenant-9f3a" // an argument value: never in the report

	var loopLine int
	handler := pgkit.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := pgkit.WithQueryName(r.Context(), "messages_by_conversation")
		for _, id := range ids {
			var n int
			err := db.QueryRow(ctx, `SELECT count(*) FROM messages WHERE conversation_id = $1 AND tenant_id <> $2`, id, secret).Scan(&n)
			_, _, loopLine, _ = runtime.Caller(0)
			loopLine--
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		stats, _ := pgkit.StatsFrom(r.Context())
		require.Len(t, stats.NPlusOne, 1)
		require.Equal(t, int64(15), stats.NPlusOne[0].Runs, "counted to the end of the unit")
		require.Positive(t, stats.NPlusOne[0].Duration)
		w.WriteHeader(http.StatusNoContent)
	}))

	for request := 1; request <= 2; request++ {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/conversations", nil))
		require.Equal(t, http.StatusNoContent, rec.Code)
		timing := rec.Header().Get("Server-Timing")
		require.Contains(t, timing, `desc="15 queries; N+1 messages_by_conversation x15"`)
		require.NotContains(t, timing, secret)

		g := testkit.Gather(t, reg)
		require.Equal(t, float64(request), g.Value(t, "pgkit_nplusone_total", map[string]string{"name": "messages_by_conversation"}),
			"once per unit of work")
	}

	attrs, ok := logs.Find("N+1 query loop", "name", "messages_by_conversation")
	require.True(t, ok, logs.Text())
	require.Equal(t, int64(11), attrs["runs"].Int64(), "reported as it crossed the threshold of 10")
	_, file, _, _ := runtime.Caller(0)
	require.Equal(t, filepath.Base(file)+":"+strconv.Itoa(loopLine), filepath.Base(attrs["caller"].String()), "the line in the loop")
	require.Equal(t, 2, strings.Count(logs.Text(), "N+1 query loop"), "one warning per unit")
	require.NotContains(t, logs.Text(), secret)
}

func TestNPlusOneGroupsBySQLShapeAndSparesWhatIsNotALoop(t *testing.T) {
	t.Parallel()
	db, logs, _ := openNPlusOne(t, pgkit.Config{MaxConns: 4})
	ids := seedConversations(t, db, "shapes", 12)

	// Values written into the SQL: one statement all the same.
	ctx := pgkit.WithStats(context.Background())
	for _, id := range ids {
		_, err := db.Exec(ctx, fmt.Sprintf(`UPDATE conversations SET title = 'seen %d' WHERE id = %d`, id, id))
		require.NoError(t, err)
	}
	stats, _ := pgkit.StatsFrom(ctx)
	require.Len(t, stats.NPlusOne, 1)
	require.Equal(t, int64(12), stats.NPlusOne[0].Runs)
	require.Contains(t, stats.NPlusOne[0].Caller, "nplusone_test.go:")

	// Up to the threshold, different statements, and one batch of many
	// statements (one round trip) are not loops.
	ctx = pgkit.WithStats(context.Background())
	for i := range 10 {
		var n int
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM messages WHERE conversation_id = $1`, ids[i]).Scan(&n))
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM users WHERE id = $1`, ids[i]).Scan(&n))
	}
	b := &pgx.Batch{}
	for _, id := range ids {
		b.Queue(`SELECT count(*) FROM messages WHERE conversation_id = $1`, id)
	}
	require.NoError(t, db.SendBatch(ctx, b).Close())
	stats, _ = pgkit.StatsFrom(ctx)
	require.Empty(t, stats.NPlusOne)
	require.Equal(t, 1, strings.Count(logs.Text(), "N+1 query loop"), "only the first unit's")

	// Turned off.
	off, offLogs, offReg := openNPlusOne(t, pgkit.Config{URL: db.Config().URL, MaxConns: 2, NPlusOneThreshold: -1})
	ctx = pgkit.WithStats(context.Background())
	for _, id := range ids {
		_, err := off.Exec(ctx, `UPDATE conversations SET title = 'off' WHERE id = $1`, id)
		require.NoError(t, err)
	}
	stats, _ = pgkit.StatsFrom(ctx)
	require.Empty(t, stats.NPlusOne)
	require.NotContains(t, offLogs.Text(), "N+1")
	require.Nil(t, testkit.Gather(t, offReg).Find("pgkit_nplusone_total", nil))
}

// TestNPlusOneAllocatesNothingPerStatement: counting statements in a unit
// of work adds no allocation to a statement's.
func TestNPlusOneAllocatesNothingPerStatement(t *testing.T) {
	db := openTest(t, pgkit.Config{MaxConns: 1, NPlusOneThreshold: 1_000_000})
	plain := context.Background()
	unit := pgkit.WithStats(plain)
	var n int
	query := func(ctx context.Context) func() {
		return func() { _ = db.QueryRow(ctx, `SELECT $1::int`, 1).Scan(&n) }
	}
	base := testing.AllocsPerRun(200, query(plain))
	require.Equal(t, base, testing.AllocsPerRun(200, query(unit)))
}
