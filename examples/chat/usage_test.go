package main

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/faultproxy"
	"github.com/stretchr/testify/require"
)

// TestUsageFlushCountsAnAmbiguousCommitOnce: when a flush's COMMIT reaches
// the server but its answer is lost, the meter asks the server whether the
// transaction committed instead of keeping the deltas for the next flush,
// which would count them twice.
func TestUsageFlushCountsAnAmbiguousCommitOnce(t *testing.T) {
	t.Parallel()
	e := start(t, Options{UsageFlushInterval: time.Hour})
	conv := e.conversation(e.tenant("acme"), "c")
	ctx := context.Background()
	var recordID int64
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT id FROM usage_records WHERE conversation_id = $1`, conv).Scan(&recordID))

	// The meter's pool goes through a proxy that loses the COMMIT's answer.
	u, err := url.Parse(e.srv.roles.AppURL)
	require.NoError(t, err)
	proxy, err := faultproxy.Start(u.Host)
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	u.Host = proxy.Addr()
	db, err := pgkit.Open(ctx, pgkit.Config{URL: u.String(), MaxConns: 2, Name: "usage_test"})
	require.NoError(t, err)
	t.Cleanup(db.Close)
	m := newUsageMeter(db, e.srv.writer, e.srv.cache, time.Hour, e.srv.log)

	tokens := func() int {
		var n int
		require.NoError(t, e.admin.QueryRow(ctx, `SELECT tokens_used FROM usage_records WHERE id = $1`, recordID).Scan(&n))
		return n
	}
	before := tokens()
	m.add("acme", recordID, 7, 0.5)
	proxy.CutAfterReplyTo([]byte("commit\x00"))
	require.NoError(t, m.flush(ctx), "the server said the transaction committed")
	require.NoError(t, m.close(ctx), "nothing left to flush")
	require.Equal(t, before+7, tokens(), "counted once")
}
