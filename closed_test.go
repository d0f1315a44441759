package pgkit_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestErrClosed: after Close, every method of the DB, of InTx and of its
// Reader (taken before or after Close, with a replica set) returns
// pgkit.ErrClosed, which callers can match, and never runs anything.
func TestErrClosed(t *testing.T) {
	t.Parallel()
	require.True(t, strings.HasPrefix(pgkit.ErrClosed.Error(), "pgkit: "), pgkit.ErrClosed.Error())
	url := pgtest.NewDatabase(t)
	// The database itself stands in for a replica: after Close, the replica
	// set answers ErrClosed whatever its check found.
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2, ReplicaURLs: []string{url}})
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TABLE closed_t (n int)`)
	require.NoError(t, err)
	readerBefore := db.Reader()
	db.Close()

	querierMethods(t, "DB", db)
	querierMethods(t, "Reader() before Close", readerBefore)
	querierMethods(t, "Reader() after Close", db.Reader())

	_, err = db.Begin(ctx)
	require.ErrorIs(t, err, pgkit.ErrClosed, "Begin")
	_, err = db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	require.ErrorIs(t, err, pgkit.ErrClosed, "BeginTx")
	_, err = db.Acquire(ctx)
	require.ErrorIs(t, err, pgkit.ErrClosed, "Acquire")
	require.ErrorIs(t, db.Ping(ctx), pgkit.ErrClosed, "Ping")
	ran := false
	fn := func(pgkit.Tx) error { ran = true; return nil }
	require.ErrorIs(t, pgkit.InTx(ctx, db, fn), pgkit.ErrClosed, "InTx")
	require.ErrorIs(t, pgkit.InTx(ctx, db, fn, pgkit.WithRetry(pgkit.RetryPolicy{})), pgkit.ErrClosed, "InTx WithRetry: not retried")
	require.ErrorIs(t, pgkit.InTx(ctx, db, fn, pgkit.OnReplica()), pgkit.ErrClosed, "InTx OnReplica")
	require.False(t, ran, "fn never ran")
}

// TestErrClosedRacesClose: calls running while Close runs either finish
// (Close waits for their connections) or return ErrClosed; none gets
// pgxpool's unmatchable "closed pool".
func TestErrClosedRacesClose(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 2})
	ctx := context.Background()
	calls := []func() error{
		func() error { _, err := db.Exec(ctx, `SELECT $1::int`, 1); return err },
		func() error { var n int; return db.QueryRow(ctx, `SELECT 1`).Scan(&n) },
		func() error {
			rows, err := db.Query(ctx, `SELECT 1`)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		},
		func() error {
			tx, err := db.Begin(ctx)
			if err != nil {
				return err
			}
			return tx.Rollback(ctx)
		},
		func() error { return db.Ping(ctx) },
		func() error { return pgkit.InTx(ctx, db, func(pgkit.Tx) error { return nil }) },
		func() error {
			c, err := db.Acquire(ctx)
			if err == nil {
				c.Release()
			}
			return err
		},
	}
	var ops atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(calls))
	for i, call := range calls {
		wg.Go(func() {
			for {
				err := call()
				ops.Add(1)
				if err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	require.Eventually(t, func() bool { return ops.Load() >= 200 }, time.Minute, time.Millisecond)
	db.Close()
	wg.Wait()
	for i, err := range errs {
		require.True(t, errors.Is(err, pgkit.ErrClosed), "call %d: %v", i, err)
	}
}

// querierMethods requires that every Querier method of q returns ErrClosed.
func querierMethods(t *testing.T, name string, q pgkit.Querier) {
	t.Helper()
	ctx := context.Background()
	_, err := q.Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, pgkit.ErrClosed, name+": Exec")

	rows, err := q.Query(ctx, `SELECT 1`)
	require.ErrorIs(t, err, pgkit.ErrClosed, name+": Query")
	require.NotNil(t, rows, name+": Query returns Rows that can be read")
	require.False(t, rows.Next())
	require.ErrorIs(t, rows.Err(), pgkit.ErrClosed, name+": Rows.Err")
	require.Nil(t, rows.FieldDescriptions())
	rows.Close()

	var n int
	require.ErrorIs(t, q.QueryRow(ctx, `SELECT 1`).Scan(&n), pgkit.ErrClosed, name+": QueryRow")

	b := &pgx.Batch{}
	b.Queue(`SELECT 1`)
	br := q.SendBatch(ctx, b)
	_, err = br.Exec()
	require.ErrorIs(t, err, pgkit.ErrClosed, name+": SendBatch results")
	require.ErrorIs(t, br.Close(), pgkit.ErrClosed, name+": SendBatch Close")

	_, err = q.CopyFrom(ctx, pgx.Identifier{"closed_t"}, []string{"n"}, pgx.CopyFromRows([][]any{{1}}))
	require.ErrorIs(t, err, pgkit.ErrClosed, name+": CopyFrom")
}

// TestHealthAfterClose: Health on a closed DB says so, at once, without
// trying to reach the server, and HealthHandler answers 503 with that
// reason.
func TestHealthAfterClose(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{MaxConns: 2, HealthTimeout: healthTimeout})
	require.Equal(t, pgkit.StatusUp, checkHealth(t, db).Status)
	db.Close()

	r := checkHealth(t, db)
	require.Equal(t, pgkit.StatusDown, r.Status)
	require.Equal(t, "closed: DB.Close was called", r.Reason)
	require.Zero(t, r.Latency)
	require.False(t, r.CheckedAt.IsZero())

	srv := httptest.NewServer(pgkit.HealthHandler(db))
	defer srv.Close()
	code, body := get(t, srv.URL, "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, `"reason":"closed: DB.Close was called"`)
}
