package pgkit_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// TestCheckoutAndStatementTimes: a pool method's checkout and statement
// share their clock reads (the statement starts when the checkout ended,
// the checkout ends when the statement did); a checkout the caller holds
// reads the clock for each, and neither is charged with the other's time.
// One connection, so that a checkout's state left behind would show in the
// next. (Each gather also checks out a connection, for Health's probe: a
// millisecond or two of hold in each delta.)
func TestCheckoutAndStatementTimes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, MaxConns: 1, MinConns: 1})
	ctx := context.Background()
	hold := func() (count uint64, sum float64) {
		h := testkit.Gather(t, reg).Find("pgkit_pool_connection_hold_seconds", nil).GetHistogram()
		return h.GetSampleCount(), h.GetSampleSum()
	}
	statement := func(name string) float64 {
		m := testkit.Gather(t, reg).Find("pgkit_query_duration_seconds", map[string]string{"name": name, "op": "query"})
		require.NotNil(t, m, name)
		return m.GetHistogram().GetSampleSum()
	}
	const pause = 60 * time.Millisecond

	// A pool method: the statement and the checkout each take the server's 50 ms.
	n0, s0 := hold()
	_, err := db.Exec(pgkit.WithQueryName(ctx, "pool_sleep"), "SELECT pg_sleep(0.05)")
	require.NoError(t, err)
	n1, s1 := hold()
	require.Greater(t, n1, n0)
	require.GreaterOrEqual(t, s1-s0, 0.05)
	require.GreaterOrEqual(t, statement("pool_sleep"), 0.05)
	require.Less(t, s1-s0, statement("pool_sleep")+0.02, "the checkout is the statement, give or take the call")

	// A checkout the caller holds: the pauses are the hold's, not the statement's.
	c, err := db.Acquire(ctx)
	require.NoError(t, err)
	<-time.After(pause) // the caller's work before its statement
	_, err = c.Exec(pgkit.WithQueryName(ctx, "held_select"), "SELECT 1")
	require.NoError(t, err)
	<-time.After(pause) // and after it
	c.Release()
	n2, s2 := hold()
	require.Greater(t, n2, n1)
	require.GreaterOrEqual(t, s2-s1, 2*pause.Seconds())
	require.Less(t, statement("held_select"), pause.Seconds())

	// The next pool method on the same connection is not charged with them.
	var one int
	require.NoError(t, db.QueryRow(pgkit.WithQueryName(ctx, "pool_after"), "SELECT 1").Scan(&one))
	n3, s3 := hold()
	require.Greater(t, n3, n2)
	require.Less(t, s3-s2, pause.Seconds())
	require.Less(t, statement("pool_after"), pause.Seconds())
}
