package cache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/cache"
	"github.com/stretchr/testify/require"
)

// TestCacheInvalidateOnCommit: a committed insert invalidates the tenant's
// stats; a rollback, or a savepoint that rolled back, leaves them.
func TestCacheInvalidateOnCommit(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	fillDashboard(t, db, "acme", 10, 2, 3)
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			ctx := context.Background()
			c := newCache[dashboardStats](t, kind.new(t), cache.Config{Name: "dashboard"})
			acme := c.Tenant("acme")
			var loads atomic.Int64
			stats := func() dashboardStats {
				s, err := acme.GetOrLoad(ctx, "dashboard_stats", func(ctx context.Context) (dashboardStats, error) {
					loads.Add(1)
					return queryDashboard(ctx, db, "acme")
				})
				require.NoError(t, err)
				return s
			}
			addConversation := func(tx pgkit.Tx) {
				_, err := tx.Exec(ctx, `INSERT INTO conversations (tenant_id, user_id, title)
					SELECT 'acme', id, 'new' FROM users WHERE tenant_id = 'acme' LIMIT 1`)
				require.NoError(t, err)
			}
			before := stats()
			require.Equal(t, int64(1), loads.Load())

			// Rollback: the entry stays.
			errNo := errors.New("no")
			err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				addConversation(tx)
				acme.InvalidateOnCommit(tx, "dashboard_stats")
				return errNo
			})
			require.ErrorIs(t, err, errNo)
			require.Equal(t, before, stats())
			require.Equal(t, int64(1), loads.Load(), "after a rollback the entry is still there")

			// A savepoint that rolled back inside a transaction that commits.
			require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				err := pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error {
					addConversation(sp)
					acme.InvalidateOnCommit(sp, "dashboard_stats")
					return errNo
				})
				require.ErrorIs(t, err, errNo)
				return nil
			}))
			require.Equal(t, before, stats())
			require.Equal(t, int64(1), loads.Load(), "a rolled-back savepoint invalidates nothing")

			// Commit: deleted once the transaction commits, not before.
			var committed dashboardStats
			require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				addConversation(tx)
				acme.InvalidateOnCommit(tx, "dashboard_stats")
				require.Equal(t, before, stats(), "still cached until COMMIT")
				return nil
			}))
			committed = stats()
			require.Equal(t, int64(2), loads.Load(), "the commit invalidated the entry")
			require.Equal(t, before.Conversations+1, committed.Conversations)
			direct, err := queryDashboard(ctx, db, "acme")
			require.NoError(t, err)
			require.Equal(t, direct, committed)

			// A savepoint that succeeded invalidates with the outer commit.
			require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				return pgkit.InTx(ctx, tx, func(sp pgkit.Tx) error {
					addConversation(sp)
					acme.InvalidateOnCommit(sp, "dashboard_stats")
					return nil
				})
			}))
			require.Equal(t, committed.Conversations+1, stats().Conversations)
			require.Equal(t, int64(3), loads.Load())
		})
	}
}

// TestCacheDeleteDuringLoad: a load that read the data before an
// invalidation returns its value to its callers but does not store it.
func TestCacheDeleteDuringLoad(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := newCache[int](t, kind.new(t), cache.Config{Name: "race", LocalTTL: time.Minute})
			started, release := make(chan struct{}), make(chan struct{})
			var loads atomic.Int64
			done := make(chan int)
			go func() {
				v, err := c.GetOrLoad(ctx, "k", func(context.Context) (int, error) {
					loads.Add(1)
					close(started)
					<-release
					return 1, nil // read before the change below
				})
				if err != nil {
					v = -1
				}
				done <- v
			}()
			<-started
			require.NoError(t, c.Delete(ctx, "k")) // the change committed meanwhile
			close(release)
			require.Equal(t, 1, <-done, "the caller that waited gets the value")
			v, err := c.GetOrLoad(ctx, "k", func(context.Context) (int, error) { loads.Add(1); return 2, nil })
			require.NoError(t, err)
			require.Equal(t, 2, v, "the stale value was not stored")
			require.Equal(t, int64(2), loads.Load())
		})
	}
}
