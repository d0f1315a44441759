package pgkit_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/faultproxy"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// tenantCount counts tenants named id, seen from a connection of its own.
func tenantCount(t *testing.T, db *pgkit.DB, id string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(context.Background(), `SELECT COUNT(*) FROM tenants WHERE id = $1`, id).Scan(&n))
	return n
}

func insertTenant(ctx context.Context, q pgkit.Querier, id string) error {
	_, err := q.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $1)`, id)
	return err
}

func TestInTxCommitRollbackPanic(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg})
	ctx := context.Background()

	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return insertTenant(ctx, tx, "committed") }))
	require.Equal(t, 1, tenantCount(t, db, "committed"), "visible to another connection")

	errBusiness := errors.New("business rule says no")
	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		require.NoError(t, insertTenant(ctx, tx, "rolled-back"))
		return fmt.Errorf("wrapped: %w", errBusiness)
	})
	require.ErrorIs(t, err, errBusiness)
	require.Equal(t, "wrapped: business rule says no", err.Error(), "returned unchanged")
	require.Equal(t, 0, tenantCount(t, db, "rolled-back"))

	require.PanicsWithValue(t, "boom", func() {
		_ = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
			require.NoError(t, insertTenant(ctx, tx, "panicked"))
			panic("boom")
		})
	})
	require.Equal(t, 0, tenantCount(t, db, "panicked"))
	require.Equal(t, int32(0), db.PoolStats().Acquired, "the connection went back to the pool")

	g := testkit.Gather(t, reg)
	require.Equal(t, 1.0, g.Value(t, "pgkit_tx_total", map[string]string{"outcome": "commit"}))
	require.Equal(t, 2.0, g.Value(t, "pgkit_tx_total", map[string]string{"outcome": "rollback"}))
	require.Equal(t, 3.0, g.Value(t, "pgkit_tx_attempts", nil))
	require.Equal(t, 3.0, g.Value(t, "pgkit_tx_duration_seconds", nil))
}

func TestInTxSavepoints(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	errInner := errors.New("inner failed")

	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		require.NoError(t, insertTenant(ctx, tx, "outer"))
		err := pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error {
			require.NoError(t, insertTenant(ctx, sp, "inner-failed"))
			return errInner
		})
		require.ErrorIs(t, err, errInner)
		// The outer transaction is still usable.
		return pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error {
			if err := insertTenant(ctx, sp, "level2"); err != nil {
				return err
			}
			return pgkit.InTx(ctx, sp, func(sp3 pgkit.Tx) error {
				if err := insertTenant(ctx, sp3, "level3"); err != nil {
					return err
				}
				// A statement error inside a savepoint does not doom the outer transaction.
				err := pgkit.InTx(ctx, sp3, func(sp4 pgkit.Tx) error { return insertTenant(ctx, sp4, "level3") })
				var pgErr *pgconn.PgError
				require.ErrorAs(t, err, &pgErr)
				require.Equal(t, "23505", pgErr.Code)
				return nil
			})
		})
	})
	require.NoError(t, err)
	require.Equal(t, 1, tenantCount(t, db, "outer"))
	require.Equal(t, 0, tenantCount(t, db, "inner-failed"))
	require.Equal(t, 1, tenantCount(t, db, "level2"))
	require.Equal(t, 1, tenantCount(t, db, "level3"))

	// Savepoints commit with the outer transaction, not before.
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		require.NoError(t, pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error { return insertTenant(ctx, sp, "sp-then-outer-fails") }))
		return errInner
	})
	require.ErrorIs(t, err, errInner)
	require.Equal(t, 0, tenantCount(t, db, "sp-then-outer-fails"))

	// Options of the outer transaction are refused on a savepoint.
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		return pgkit.InTx(ctx, tx, func(pgkit.Tx) error { return nil }, pgkit.WithRetry(pgkit.RetryPolicy{}))
	})
	require.ErrorContains(t, err, "savepoint")
}

func createAccounts(t *testing.T, db *pgkit.DB, n, balance int) {
	t.Helper()
	_, err := db.Exec(context.Background(), `CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
		INSERT INTO accounts SELECT g, `+fmt.Sprint(balance)+` FROM generate_series(1, `+fmt.Sprint(n)+`) g`)
	require.NoError(t, err)
}

// transfer moves a random amount between two random accounts, refusing to
// overdraw: the read-then-write that SERIALIZABLE must protect.
func transfer(ctx context.Context, tx pgkit.Tx, rng *rand.Rand, accounts int) error {
	from, to := rng.IntN(accounts)+1, rng.IntN(accounts)+1
	if from == to {
		return nil
	}
	amount := rng.IntN(100) + 1
	var balance int
	if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1`, from).Scan(&balance); err != nil {
		return err
	}
	if balance < amount {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = $1 WHERE id = $2`, balance-amount, from); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $1 WHERE id = $2`, amount, to)
	return err
}

// TestBankInvariant is cockroach-go's test: concurrent random transfers under
// SERIALIZABLE keep the total, and WithRetry makes every transfer land.
func TestBankInvariant(t *testing.T) {
	t.Parallel()
	const accounts, initial, workers, transfers = 20, 1000, 8, 200
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, MaxConns: 4})
	createAccounts(t, db, accounts, initial)
	ctx := context.Background()

	run := func(opts ...pgkit.TxOption) (failures int64) {
		var failed atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 42))
				for range transfers {
					err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return transfer(ctx, tx, rng, accounts) },
						append([]pgkit.TxOption{pgkit.WithIsolation(pgx.Serializable)}, opts...)...)
					if err != nil {
						var pgErr *pgconn.PgError
						require.ErrorAs(t, err, &pgErr)
						require.Contains(t, []string{"40001", "40P01"}, pgErr.Code, "only serialization failures and deadlocks may escape")
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return failed.Load()
	}
	check := func() {
		var total, negative int
		require.NoError(t, db.QueryRow(ctx, `SELECT SUM(balance), COUNT(*) FILTER (WHERE balance < 0) FROM accounts`).Scan(&total, &negative))
		require.Equal(t, accounts*initial, total)
		require.Zero(t, negative)
	}

	require.Zero(t, run(pgkit.WithRetry(pgkit.RetryPolicy{MaxAttempts: 100, BaseDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond})),
		"with retry every transfer commits")
	check()
	retries := testkit.Gather(t, reg).Value(t, "pgkit_tx_retries_total", map[string]string{"reason": "serialization"})
	require.Positive(t, retries, "the test must provoke serialization failures")
	t.Logf("%v retries for %d transfers", retries, workers*transfers)

	failures := run()
	require.Positive(t, failures, "without retry, serialization failures (and deadlocks) reach the caller")
	check()
}

func TestRetryDeadlockButNotUniqueViolation(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, MaxConns: 4})
	createAccounts(t, db, 2, 100)
	ctx := context.Background()

	// Two transactions lock two rows in opposite order. The first attempts
	// meet at a barrier, so the deadlock is certain; retries go straight.
	var firstLocks sync.WaitGroup
	firstLocks.Add(2)
	var attempts [2]atomic.Int32
	lock := func(i, first, second int) error {
		return pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
			n := attempts[i].Add(1)
			if _, err := tx.Exec(ctx, `SET LOCAL deadlock_timeout = '50ms'`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + 1 WHERE id = $1`, first); err != nil {
				return err
			}
			if n == 1 {
				firstLocks.Done()
				firstLocks.Wait()
			}
			_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - 1 WHERE id = $1`, second)
			return err
		}, pgkit.WithRetry(pgkit.RetryPolicy{BaseDelay: time.Millisecond}))
	}
	errs := make(chan error, 2)
	go func() { errs <- lock(0, 1, 2) }()
	go func() { errs <- lock(1, 2, 1) }()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	require.Equal(t, int32(3), attempts[0].Load()+attempts[1].Load(), "one of the two was chosen as the deadlock victim and ran again")
	require.Equal(t, 1.0, testkit.Gather(t, reg).Value(t, "pgkit_tx_retries_total", map[string]string{"reason": "deadlock"}))

	var calls int
	require.NoError(t, insertTenant(ctx, db, "dup"))
	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		calls++
		return insertTenant(ctx, tx, "dup")
	}, pgkit.WithRetry(pgkit.RetryPolicy{}))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "23505", pgErr.Code)
	require.Equal(t, 1, calls, "a unique violation is never retried")
}

// serializationFailure makes the server raise SQLSTATE 40001, as a real
// conflict would, deterministically.
const serializationFailure = `DO $$ BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001'; END $$`

func TestRetryExhaustedAndHooks(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()

	var hooks []string
	var calls int
	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		calls++
		tx.OnCommit(func(context.Context) { hooks = append(hooks, fmt.Sprint("attempt ", calls)) })
		_, err := tx.Exec(ctx, serializationFailure)
		return err
	}, pgkit.WithRetry(pgkit.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond}))
	var retryErr *pgkit.RetryError
	require.ErrorAs(t, err, &retryErr)
	require.Equal(t, 3, retryErr.Attempts)
	require.Contains(t, err.Error(), "after 3 attempts")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "unwraps to the last cause")
	require.Equal(t, "40001", pgErr.Code)
	require.Equal(t, 3, calls)
	require.Empty(t, hooks, "no attempt committed")

	// Fails twice, then commits: only the committed attempt's hooks run, in order.
	calls = 0
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		calls++
		n := calls
		tx.OnCommit(func(context.Context) { hooks = append(hooks, fmt.Sprintf("attempt %d, first", n)) })
		tx.OnCommit(func(context.Context) { hooks = append(hooks, fmt.Sprintf("attempt %d, second", n)) })
		if calls < 3 {
			_, err := tx.Exec(ctx, serializationFailure)
			return err
		}
		return nil
	}, pgkit.WithRetry(pgkit.RetryPolicy{BaseDelay: time.Millisecond}))
	require.NoError(t, err)
	require.Equal(t, []string{"attempt 3, first", "attempt 3, second"}, hooks)
}

func TestOnCommit(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	var ran []string
	hook := func(name string) func(context.Context) { return func(context.Context) { ran = append(ran, name) } }

	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		tx.OnCommit(func(context.Context) {
			// Runs after COMMIT: the row is visible to other connections.
			ran = append(ran, fmt.Sprint("outer sees ", tenantCount(t, db, "hooked")))
		})
		require.NoError(t, insertTenant(ctx, tx, "hooked"))
		require.NoError(t, pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error { sp.OnCommit(hook("released savepoint")); return nil }))
		_ = pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error {
			sp.OnCommit(hook("rolled-back savepoint"))
			return errors.New("no")
		})
		require.Empty(t, ran, "nothing runs before the outermost commit")
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"outer sees 1", "released savepoint"}, ran)

	ran = nil
	_ = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		tx.OnCommit(hook("rolled back"))
		return errors.New("no")
	})
	require.Empty(t, ran)
}

func TestAmbiguousCommit(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	proxy, err := faultproxy.Start(fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	proxied := strings.Replace(url, fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), proxy.Addr(), 1)

	db := openTest(t, pgkit.Config{URL: proxied, MaxConns: 2})
	ctx := context.Background()
	var calls int
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		calls++
		if err := insertTenant(ctx, tx, "maybe"); err != nil {
			return err
		}
		// The server will get COMMIT and commit; its answer is lost.
		proxy.CutAfterReplyTo([]byte("commit\x00"))
		return nil
	}, pgkit.WithRetry(pgkit.RetryPolicy{}))
	var ambiguous *pgkit.AmbiguousCommitError
	require.ErrorAs(t, err, &ambiguous)
	require.Contains(t, err.Error(), "may or may not have committed")
	require.Equal(t, 1, calls, "an ambiguous commit is never retried")

	direct := openTest(t, pgkit.Config{URL: url, MaxConns: 1})
	require.Equal(t, 1, tenantCount(t, direct, "maybe"), "here it did commit: that is why the caller must check")
}

func TestRetryAfterConnectionLostBeforeCommit(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, MaxConns: 2})
	admin := openTest(t, pgkit.Config{MaxConns: 1})
	ctx := context.Background()
	var calls int
	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		calls++
		if err := insertTenant(ctx, tx, "survivor"); err != nil {
			return err
		}
		if calls == 1 {
			// The backend dies mid-transaction: the server rolls it back.
			var pid int
			require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
			_, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SELECT 1`)
			return err
		}
		return nil
	}, pgkit.WithRetry(pgkit.RetryPolicy{BaseDelay: time.Millisecond}))
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	require.Equal(t, 1, tenantCount(t, db, "survivor"), "exactly once")
	require.Equal(t, 1.0, testkit.Gather(t, reg).Value(t, "pgkit_tx_retries_total", map[string]string{"reason": "connection"}))
}

func TestInTxOptions(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()

	var iso, ro, deferrable string
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		return tx.QueryRow(ctx, `SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'),
			current_setting('transaction_deferrable')`).Scan(&iso, &ro, &deferrable)
	}, pgkit.WithIsolation(pgx.Serializable), pgkit.ReadOnly(), pgkit.Deferrable()))
	require.Equal(t, []string{"serializable", "on", "on"}, []string{iso, ro, deferrable})

	err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return insertTenant(ctx, tx, "nope") }, pgkit.ReadOnly())
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25006", pgErr.Code, "read-only transaction")

	// WithTimeout bounds the whole call, retries included.
	start := time.Now()
	err = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		_, err := tx.Exec(ctx, serializationFailure)
		return err
	}, pgkit.WithTimeout(150*time.Millisecond),
		pgkit.WithRetry(pgkit.RetryPolicy{MaxAttempts: 1000, BaseDelay: 20 * time.Millisecond, MaxDelay: 20 * time.Millisecond}))
	require.Error(t, err)
	require.Less(t, time.Since(start), time.Second)

	require.ErrorContains(t, pgkit.InTx(ctx, db, func(pgkit.Tx) error { return nil }, pgkit.WithTimeout(-1)), "WithTimeout")
}

// Options made once and shared by concurrent InTx calls, as package-level
// variables in a service would be: WithRetry's policy is settled when
// WithRetry returns and only read after, so -race finds nothing, and its
// zero fields took their defaults (5 attempts); the other options hold
// what each call needs.
func TestTxOptionsSharedByGoroutines(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	ctx := context.Background()
	retry := pgkit.WithRetry(pgkit.RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	serialization := &pgconn.PgError{Code: "40001"}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			<-start
			errs[i] = pgkit.InTx(ctx, db, func(pgkit.Tx) error { return serialization }, retry)
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		var retryErr *pgkit.RetryError
		require.ErrorAs(t, err, &retryErr)
		require.Equal(t, pgkit.DefaultRetryMaxAttempts, retryErr.Attempts)
	}

	opts := []pgkit.TxOption{pgkit.WithRetry(pgkit.RetryPolicy{}), pgkit.WithTenant("acme"),
		pgkit.WithIsolation(pgx.RepeatableRead), pgkit.WithTimeout(time.Minute), pgkit.WithStatementTimeout(time.Minute)}
	tenants := make([]string, 8)
	start = make(chan struct{})
	for i := range tenants {
		wg.Go(func() {
			<-start
			errs[i] = pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				return tx.QueryRow(ctx, "SELECT current_setting($1)", pgkit.DefaultTenantSetting).Scan(&tenants[i])
			}, opts...)
		})
	}
	close(start)
	wg.Wait()
	for i := range tenants {
		require.NoError(t, errs[i])
		require.Equal(t, "acme", tenants[i])
	}
}
