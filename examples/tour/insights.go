package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
)

// insightsThreshold is the slow-query threshold of this part of the tour:
// low, as a staging service might run it, so that a sequential scan of a
// 200,000-row table counts as slow and an index lookup does not.
const insightsThreshold = 5 * time.Millisecond

// messagesOfConversation is the query of this part: one conversation's
// messages, counted, on a foreign key without an index.
const messagesOfConversation = `SELECT count(*) FROM messages WHERE conversation_id = $1`

// insightsTour shows why a request is slow: a query in a loop caught with
// its line, a slow query's plan, an index verified with HypoPG, applied, and
// the query no longer slow; then the server's own view.
func insightsTour(ctx context.Context, db *pgkit.DB, serverURL string, logger *slog.Logger) error {
	convIDs, hypo, err := seedInsights(ctx, serverURL)
	if err != nil {
		return err
	}
	fmt.Printf("messages: 200,000 over %d conversations, no index on messages.conversation_id (the foreign key)\n", len(convIDs))

	// An N+1 loop: one query per conversation in a request.
	countEach := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := pgkit.WithQueryName(r.Context(), "messages_of_conversation")
		for _, id := range convIDs[:20] {
			var n int
			if err := db.QueryRow(ctx, messagesOfConversation, id).Scan(&n); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
	})
	// The same answer in one statement.
	countAll := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := pgkit.WithQueryName(r.Context(), "messages_of_conversations")
		rows, err := db.Query(ctx, `SELECT conversation_id, count(*) FROM messages WHERE conversation_id = ANY($1) GROUP BY 1`, convIDs[:20])
		if err == nil {
			var id, n int64
			_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { return nil })
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	fmt.Println("GET /conversations/counts, a query per conversation (the warning above names the loop's line):")
	loop, err := serve(pgkit.Middleware(countEach))
	if err != nil {
		return err
	}
	if !strings.Contains(loop, "N+1 messages_of_conversation") {
		return fmt.Errorf("the N+1 loop was not reported: Server-Timing %q", loop)
	}
	fmt.Printf("  Server-Timing: %s\n", loop)
	fixed, err := serve(pgkit.Middleware(countAll))
	if err != nil {
		return err
	}
	fmt.Printf("the same with = ANY($1), one statement:\n  Server-Timing: %s\n", fixed)

	// A slow query's plan and an index for it, on a pool that explains
	// slow queries.
	insights, err := pgkit.Open(ctx, pgkit.Config{
		URL:                withSearchPath(serverURL, demoSchema),
		ApplicationName:    "pgkit-tour-insights",
		Logger:             logger,
		SlowQueryThreshold: insightsThreshold,
		ExplainSlowQueries: true,
	})
	if err != nil {
		return err
	}
	defer insights.Close()
	fmt.Printf("\na pool with SlowQueryThreshold %s and ExplainSlowQueries: one conversation's messages, read by a scan of the whole table:\n", insightsThreshold)
	plan, err := capturePlan(ctx, insights, convIDs[0])
	if err != nil {
		return err
	}
	fmt.Printf("  plan: %s, estimated cost %.0f, %.0f rows\n", plan.TopNode, plan.Cost, plan.Rows)
	for _, s := range plan.SeqScans {
		fmt.Printf("  sequential scan of %s (%.0f rows) filtering on %s: %s\n", s.Table, s.TableRows, strings.Join(s.Columns, ", "), s.Filter)
	}
	if len(plan.Suggestions) == 0 {
		return errors.New("no index suggested for the scan")
	}
	s := plan.Suggestions[0]
	if s.Verified {
		fmt.Printf("  suggested: %s\n  verified with a hypothetical index (HypoPG): estimated cost %.0f -> %.0f, %.0fx lower\n",
			s.SQL, plan.Cost, s.CostAfter, plan.Cost/s.CostAfter)
	} else {
		fmt.Printf("  suggested: %s\n  %s\n", s.SQL, s.Note)
		if hypo {
			return errors.New("HypoPG is installed but the suggestion was not verified")
		}
	}

	fmt.Println("\napplying it:", s.SQL)
	start := time.Now()
	if err := insights.WithStatementTimeout(ctx, time.Minute, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, s.SQL)
		return err
	}); err != nil {
		return err
	}
	fmt.Printf("  built in %s\n", time.Since(start).Round(time.Millisecond))
	fastest := time.Hour
	for range 5 {
		start := time.Now()
		var n int
		if err := insights.QueryRow(pgkit.WithQueryName(ctx, "messages_of_conversation"),
			messagesOfConversation, convIDs[0]).Scan(&n); err != nil {
			return err
		}
		fastest = min(fastest, time.Since(start))
	}
	if fastest >= insightsThreshold {
		return fmt.Errorf("still slow with the index: fastest of 5 runs %s", fastest)
	}
	fmt.Printf("  the same query now: fastest of 5 runs %s, under the %s threshold\n", fastest.Round(time.Microsecond), insightsThreshold)
	return printServerView(ctx, db)
}

// serve runs one request through h and returns its Server-Timing header.
func serve(h http.Handler) (string, error) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/conversations/counts", nil))
	if rec.Code != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", rec.Code, rec.Body)
	}
	return rec.Header().Get("Server-Timing"), nil
}

// capturePlan runs the slow query until pgkit has its plan (captured in the
// background on a connection of its own).
func capturePlan(ctx context.Context, db *pgkit.DB, convID int64) (*pgkit.QueryPlan, error) {
	ctx = pgkit.WithQueryName(ctx, "messages_of_conversation")
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		var n int
		if err := db.QueryRow(ctx, messagesOfConversation, convID).Scan(&n); err != nil {
			return nil, err
		}
		for _, q := range db.SlowQueries() {
			if q.Name == "messages_of_conversation" && q.Plan != nil {
				fmt.Printf("  db.SlowQueries(): %s took %s: %s\n", q.Name, q.Duration.Round(time.Microsecond), q.SQL)
				return q.Plan, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, errors.New("no plan was captured for the slow query in 20s")
}

// seedInsights adds 2,000 conversations and 200,000 messages and drops the
// index on messages.conversation_id. It returns the conversations' ids and
// whether the HypoPG extension could be created.
func seedInsights(ctx context.Context, serverURL string) ([]int64, bool, error) {
	conn, err := pgx.Connect(ctx, withSearchPath(serverURL, demoSchema))
	if err != nil {
		return nil, false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS hypopg`)
	hypo := err == nil
	if !hypo {
		fmt.Printf("HypoPG is not available (%v): index suggestions will be unverified; on Debian: apt-get install postgresql-15-hypopg\n", err)
	}
	// For the server's view: its statement statistics, where the server
	// preloads the module (the throwaway one does).
	_, _ = conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	rows, err := conn.Query(ctx, `
		INSERT INTO conversations (tenant_id, user_id, title)
		SELECT 'acme', (SELECT min(id) FROM users), 'chat ' || i FROM generate_series(1, 2000) i RETURNING id`)
	if err != nil {
		return nil, false, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, false, err
	}
	for _, sql := range []string{
		`DROP INDEX messages_conversation_idx`,
		`INSERT INTO messages (tenant_id, conversation_id, role, content)
			SELECT 'acme', ($1::bigint[])[1 + i % 2000], 'user', 'message ' || i FROM generate_series(1, 200000) i`,
		`ANALYZE messages`,
	} {
		args := []any{}
		if strings.Contains(sql, "$1") {
			args = append(args, ids)
		}
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return nil, false, err
		}
	}
	return ids, hypo, nil
}

// printServerView prints a few lines of what the server says about the
// work on it, beside pgkit's query names.
func printServerView(ctx context.Context, db *pgkit.DB) error {
	v, err := db.ServerView(ctx)
	if err != nil {
		return err
	}
	fmt.Println("\nthe server's own view (db.ServerView):")
	if v.StatementsNote != "" {
		fmt.Println("  top statements:", v.StatementsNote)
	}
	for i, s := range v.Statements {
		if i == 3 {
			break
		}
		name := s.Name
		if name == "" {
			name = "-"
		}
		fmt.Printf("  top statement %d: %d calls, %.1f ms total, pgkit name %s: %.60s\n", i+1, s.Calls, s.TotalSeconds*1000, name, s.Query)
	}
	for _, t := range v.SeqScanTables {
		fmt.Printf("  sequentially scanned: %s, %d scans\n", t.Table, t.SeqScans)
	}
	for _, c := range v.Connections {
		fmt.Printf("  connections: %s %s: %d of max_connections %d\n", c.Application, c.State, c.Count, v.MaxConnections)
	}
	return nil
}
