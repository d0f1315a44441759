package pgkit

import (
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestConnCacheNeverAnswersForAnother: two connections that share a slot
// each find their own state or none, never the other's; a dropped one is
// gone, and dropping leaves a slot another took alone.
func TestConnCacheNeverAnswersForAnother(t *testing.T) {
	var c connCache
	bySlot := map[*atomic.Pointer[connState]]*pgx.Conn{}
	var a, b *pgx.Conn
	for a == nil {
		conn := &pgx.Conn{}
		if other, ok := bySlot[c.slot(conn)]; ok {
			a, b = other, conn
		}
		bySlot[c.slot(conn)] = conn
	}
	csA, csB := &connState{conn: a}, &connState{conn: b}

	require.Nil(t, c.get(a))
	c.put(csA)
	require.Same(t, csA, c.get(a))
	require.Nil(t, c.get(b), "b shares a's slot: a miss, not a's state")

	c.put(csB)
	require.Same(t, csB, c.get(b))
	require.Nil(t, c.get(a))

	c.drop(csA) // a's state is not in the slot: b's stays
	require.Same(t, csB, c.get(b))
	c.drop(csB)
	require.Nil(t, c.get(b))
}
