package pgkit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

func TestInTxOnAPgxPoolAndAPgxConn(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.Config().URL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	conn, err := pgx.Connect(ctx, db.Config().URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(ctx) })

	for name, q := range map[string]pgkit.TxStarter{"pool": pool, "conn": conn} {
		committed, rolledBack := name+"-committed", name+"-rolled-back"
		require.NoError(t, pgkit.InTx(ctx, q, func(tx pgkit.Tx) error { return insertTenant(ctx, tx, committed) }))
		require.Equal(t, 1, tenantCount(t, db, committed), name)

		errNo := errors.New("no")
		err := pgkit.InTx(ctx, q, func(tx pgkit.Tx) error {
			require.NoError(t, insertTenant(ctx, tx, rolledBack))
			return errNo
		})
		require.ErrorIs(t, err, errNo)
		require.Equal(t, 0, tenantCount(t, db, rolledBack), name)

		// Options reach BEGIN; the tenant goes to DefaultTenantSetting.
		require.NoError(t, pgkit.InTx(ctx, q, func(tx pgkit.Tx) error {
			var iso, readOnly, tenant string
			require.NoError(t, tx.QueryRow(ctx, `SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'),
				current_setting($1)`, pgkit.DefaultTenantSetting).Scan(&iso, &readOnly, &tenant))
			require.Equal(t, []string{"serializable", "on", "acme"}, []string{iso, readOnly, tenant}, name)
			return nil
		}, pgkit.WithIsolation(pgx.Serializable), pgkit.ReadOnly(), pgkit.WithTenant("acme")))

		// A serialization failure is retried in a new transaction; OnCommit
		// runs once, for the attempt that committed.
		attempts, hooks := 0, 0
		retried := name + "-retried"
		require.NoError(t, pgkit.InTx(ctx, q, func(tx pgkit.Tx) error {
			attempts++
			tx.OnCommit(func(context.Context) { hooks++ })
			if err := insertTenant(ctx, tx, retried); err != nil {
				return err
			}
			if attempts == 1 {
				_, err := tx.Exec(ctx, serializationFailure)
				return err
			}
			return nil
		}, pgkit.WithRetry(pgkit.RetryPolicy{})))
		require.Equal(t, 2, attempts, name)
		require.Equal(t, 1, hooks, name)
		require.Equal(t, 1, tenantCount(t, db, retried), name)

		err = pgkit.InTx(ctx, q, func(pgkit.Tx) error { return nil }, pgkit.OnReplica())
		require.ErrorContains(t, err, "OnReplica needs a *pgkit.DB", name)
	}
}

func TestInTxOnAPgxTxMakesASavepoint(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	outer, err := db.Pool().Begin(ctx)
	require.NoError(t, err)
	defer outer.Rollback(ctx)

	require.NoError(t, pgkit.InTx(ctx, outer, func(tx pgkit.Tx) error { return insertTenant(ctx, tx, "kept") }))
	err = pgkit.InTx(ctx, outer, func(tx pgkit.Tx) error {
		require.NoError(t, insertTenant(ctx, tx, "undone"))
		_, err := tx.Exec(ctx, `SELECT 1/0`)
		return err
	})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "22012", pgErr.Code)

	var kept, undone int
	require.NoError(t, outer.QueryRow(ctx, `SELECT count(*) FILTER (WHERE id = 'kept'), count(*) FILTER (WHERE id = 'undone') FROM tenants`).Scan(&kept, &undone),
		"the outer transaction is still usable")
	require.Equal(t, []int{1, 0}, []int{kept, undone})

	// OnCommit cannot be kept when pgkit cannot see the outer commit: the
	// savepoint rolls back and InTx says why.
	err = pgkit.InTx(ctx, outer, func(tx pgkit.Tx) error {
		require.NoError(t, insertTenant(ctx, tx, "with-hook"))
		tx.OnCommit(func(context.Context) {})
		return nil
	})
	require.ErrorContains(t, err, "OnCommit cannot be kept")
	require.NoError(t, outer.QueryRow(ctx, `SELECT count(*) FROM tenants WHERE id = 'with-hook'`).Scan(&undone))
	require.Zero(t, undone)

	for _, opt := range []pgkit.TxOption{pgkit.WithRetry(pgkit.RetryPolicy{}), pgkit.ReadOnly(), pgkit.WithTenant("t"), pgkit.WithStatementTimeout(time.Minute)} {
		require.ErrorContains(t, pgkit.InTx(ctx, outer, func(pgkit.Tx) error { return nil }, opt), "makes a savepoint")
	}
	require.NoError(t, outer.Rollback(ctx))
	require.Zero(t, tenantCount(t, db, "kept"), "it was a savepoint of the outer transaction")
}

// fakeStarter is what a user's unit test might pass InTx: it begins fake
// transactions that only record how they ended.
type fakeStarter struct{ txs []*fakeTx }

func (s *fakeStarter) Begin(context.Context) (pgx.Tx, error) {
	t := &fakeTx{}
	s.txs = append(s.txs, t)
	return t, nil
}

type fakeTx struct {
	pgx.Tx // nil: calling anything else panics
	ended  string
}

func (t *fakeTx) Commit(context.Context) error   { t.ended = "commit"; return nil }
func (t *fakeTx) Rollback(context.Context) error { t.ended = "rollback"; return nil }
func (t *fakeTx) Conn() *pgx.Conn                { return nil }

func TestInTxOnAFakeStarter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := &fakeStarter{}
	require.NoError(t, pgkit.InTx(ctx, s, func(pgkit.Tx) error { return nil }))
	errNo := errors.New("no")
	require.ErrorIs(t, pgkit.InTx(ctx, s, func(pgkit.Tx) error { return errNo }), errNo)
	calls := 0
	require.NoError(t, pgkit.InTx(ctx, s, func(pgkit.Tx) error {
		if calls++; calls == 1 {
			return &pgconn.PgError{Code: "40001"}
		}
		return nil
	}, pgkit.WithRetry(pgkit.RetryPolicy{})))
	var ended []string
	for _, tx := range s.txs {
		ended = append(ended, tx.ended)
	}
	require.Equal(t, []string{"commit", "rollback", "rollback", "commit"}, ended)

	err := pgkit.InTx(ctx, s, func(pgkit.Tx) error { return nil }, pgkit.WithIsolation(pgx.Serializable))
	require.ErrorContains(t, err, "has no BeginTx")
	require.Len(t, s.txs, 4, "refused before Begin")
}

func TestInTxRefusesNilStarters(t *testing.T) {
	t.Parallel()
	fn := func(pgkit.Tx) error { return nil }
	for _, q := range []pgkit.TxStarter{nil, (*pgkit.DB)(nil), (*pgxpool.Pool)(nil), (*pgx.Conn)(nil), (*fakeStarter)(nil)} {
		require.ErrorContains(t, pgkit.InTx(context.Background(), q, fn), "nil TxStarter")
	}
}
