package pgkit_test

import (
	"context"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// planSQL is a statement whose result columns change with its table's: the
// SELECT * that a migration's ADD COLUMN or ALTER COLUMN TYPE invalidates.
const planSQL = `SELECT * FROM plan_items WHERE id = $1`

func createPlanItems(t *testing.T, db *pgkit.DB, rows int) {
	t.Helper()
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TABLE plan_items (id int PRIMARY KEY, v text NOT NULL)`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `INSERT INTO plan_items SELECT g, 'v' || g FROM generate_series(1, $1::int) g`, rows)
	require.NoError(t, err)
}

// planCall is one way to run planSQL outside a transaction; it returns how
// many columns the row had.
type planCall struct {
	name string
	run  func(ctx context.Context, q pgkit.Querier, id int) (int, error)
}

var planCalls = []planCall{
	{"Exec", func(ctx context.Context, q pgkit.Querier, id int) (int, error) {
		tag, err := q.Exec(ctx, planSQL, id)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("Exec: %d rows, want 1", tag.RowsAffected())
		}
		return -1, err // Exec does not see the columns
	}},
	{"Query", func(ctx context.Context, q pgkit.Querier, id int) (int, error) {
		rows, err := q.Query(ctx, planSQL, id)
		if err != nil {
			return 0, err
		}
		n, cols := 0, 0
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				rows.Close()
				return 0, err
			}
			n, cols = n+1, len(vals)
		}
		if err := rows.Err(); err != nil {
			return 0, err
		}
		if n != 1 {
			return 0, fmt.Errorf("Query: %d rows, want 1", n)
		}
		return cols, nil
	}},
	{"QueryRow", func(ctx context.Context, q pgkit.Querier, id int) (int, error) {
		var r anyRow
		err := q.QueryRow(ctx, planSQL, id).Scan(&r)
		return r.n, err
	}},
}

// anyRow scans a row of any width and keeps how many columns it had.
type anyRow struct{ n int }

// ScanRow implements pgx.RowScanner.
func (r *anyRow) ScanRow(rows pgx.Rows) error {
	vals, err := rows.Values()
	r.n = len(vals)
	return err
}

// TestStatementRetriedAfterPlanChange: each of Exec, Query and QueryRow runs
// a cached SELECT *, the table changes under it (ADD COLUMN, ALTER COLUMN
// TYPE), or its prepared statement disappears (DEALLOCATE ALL), and the next
// run succeeds with the new columns instead of failing with 0A000 or 26000.
// One connection, so that each change meets the cached statement.
func TestStatementRetriedAfterPlanChange(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{MaxConns: 1, Registerer: reg})
	createPlanItems(t, db, 3)
	ctx := context.Background()

	cols := 2
	for i, c := range planCalls {
		// Cache the statement on the connection.
		n, err := c.run(ctx, db, 1)
		require.NoError(t, err, c.name)
		if n >= 0 {
			require.Equal(t, cols, n, c.name)
		}
		// The migration: a new column (even calls) or a new type (odd).
		if i%2 == 0 {
			_, err = db.Exec(ctx, fmt.Sprintf(`ALTER TABLE plan_items ADD COLUMN c%d int`, i))
			cols++
		} else {
			_, err = db.Exec(ctx, `ALTER TABLE plan_items ALTER COLUMN v TYPE varchar(100)`)
		}
		require.NoError(t, err)
		n, err = c.run(ctx, db, 2)
		require.NoError(t, err, "%s after the table changed", c.name)
		if n >= 0 {
			require.Equal(t, cols, n, "%s sees the new columns", c.name)
		}
	}
	for _, c := range planCalls {
		_, err := db.Exec(ctx, `DEALLOCATE ALL`) // what DISCARD ALL or a pooler does
		require.NoError(t, err)
		_, err = c.run(ctx, db, 3)
		require.NoError(t, err, "%s after DEALLOCATE ALL", c.name)
	}

	g := testkit.Gather(t, reg)
	require.Equal(t, 3.0, g.Value(t, "pgkit_query_replans_total", map[string]string{"sqlstate": "0A000"}))
	require.Equal(t, 3.0, g.Value(t, "pgkit_query_replans_total", map[string]string{"sqlstate": "26000"}))
	require.Equal(t, int32(0), db.PoolStats().Acquired, "every connection went back")
}

// TestInTxRetriesPlanChange: a transaction whose cached statement the table
// change invalidated fails with 0A000 without WithRetry (the error is the
// server's, unchanged), and commits with it, counted as reason "plan".
func TestInTxRetriesPlanChange(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{MaxConns: 1, Registerer: reg})
	createPlanItems(t, db, 3)
	ctx := context.Background()
	body := func(tx pgkit.Tx) error {
		var r anyRow
		if err := tx.QueryRow(ctx, planSQL, 1).Scan(&r); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE plan_items SET v = v || '+' WHERE id = $1`, 1)
		return err
	}
	require.NoError(t, pgkit.InTx(ctx, db, body))

	_, err := db.Exec(ctx, `ALTER TABLE plan_items ADD COLUMN a int`)
	require.NoError(t, err)
	err = pgkit.InTx(ctx, db, body)
	require.ErrorContains(t, err, "0A000", "without WithRetry the error returns")
	require.NoError(t, pgkit.InTx(ctx, db, body), "pgx dropped the statement: the next transaction prepares it again")

	_, err = db.Exec(ctx, `ALTER TABLE plan_items ADD COLUMN b int`)
	require.NoError(t, err)
	require.NoError(t, pgkit.InTx(ctx, db, body, pgkit.WithRetry(pgkit.RetryPolicy{MaxAttempts: 2})))

	var v string
	require.NoError(t, db.QueryRow(ctx, `SELECT v FROM plan_items WHERE id = 1`).Scan(&v))
	require.Equal(t, "v1+++", v, "the failed transactions did not commit, the others did, once each")
	g := testkit.Gather(t, reg)
	require.Equal(t, 1.0, g.Value(t, "pgkit_tx_retries_total", map[string]string{"reason": "plan"}))
}

// TestMigrationUnderLoad is issue 15's scenario: goroutines run a cached
// SELECT * through Exec, Query, QueryRow and InTx with WithRetry while the
// table is altered five times (new columns, a new type). Not one request
// fails, and the retries are counted.
func TestMigrationUnderLoad(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{MaxConns: 4, MinConns: 4, Registerer: reg})
	const items = 50
	createPlanItems(t, db, items)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const workers = 8 // two per kind, more than the pool's connections
	var (
		stop     atomic.Bool
		ops      [workers]atomic.Int64
		failures atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, &err)
	}
	for w := range workers {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				id := 1 + (w*31+i)%items
				var err error
				if kind := w % 4; kind < 3 {
					_, err = planCalls[kind].run(ctx, db, id)
				} else {
					err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
						var r anyRow
						return tx.QueryRow(ctx, planSQL, id).Scan(&r)
					}, pgkit.WithRetry(pgkit.RetryPolicy{MaxAttempts: 10}))
				}
				if err != nil {
					fail(err)
				}
				ops[w].Add(1)
			}
		})
	}
	// waitRounds waits until every worker has run n more statements, so
	// that every connection has cached the statement before each change.
	waitRounds := func(n int64) {
		var base [workers]int64
		for w := range workers {
			base[w] = ops[w].Load()
		}
		for w := range workers {
			require.Eventually(t, func() bool { return ops[w].Load() >= base[w]+n || failures.Load() > 0 },
				time.Minute, time.Millisecond, "worker %d made no progress", w)
		}
	}
	migrations := []string{
		`ALTER TABLE plan_items ADD COLUMN m1 int`,
		`ALTER TABLE plan_items ADD COLUMN m2 text DEFAULT 'x'`,
		`ALTER TABLE plan_items ALTER COLUMN v TYPE varchar(200)`,
		`ALTER TABLE plan_items ADD COLUMN m3 bigint`,
		`ALTER TABLE plan_items ALTER COLUMN m1 TYPE bigint`,
	}
	for _, m := range migrations {
		waitRounds(20)
		_, err := db.Exec(ctx, m)
		require.NoError(t, err, m)
	}
	waitRounds(20)
	stop.Store(true)
	wg.Wait()

	if err := firstErr.Load(); err != nil {
		t.Fatalf("%d requests failed during the migration; the first: %v", failures.Load(), *err)
	}
	g := testkit.Gather(t, reg)
	replans := 0.0
	for _, code := range []string{"0A000", "26000"} {
		if g.Find("pgkit_query_replans_total", map[string]string{"sqlstate": code}) != nil {
			replans += g.Value(t, "pgkit_query_replans_total", map[string]string{"sqlstate": code})
		}
	}
	var txPlan float64
	if g.Find("pgkit_tx_retries_total", map[string]string{"reason": "plan"}) != nil {
		txPlan = g.Value(t, "pgkit_tx_retries_total", map[string]string{"reason": "plan"})
	}
	t.Logf("statements run again: %v; transactions run again: %v", replans, txPlan)
	require.Positive(t, replans, "the migrations made statements run again")
}
