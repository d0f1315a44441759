package pgkit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLagTracker(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var l lagTracker

	// Caught up with an idle primary: no lag, whatever its own view says.
	require.Zero(t, l.lag(at(0), walAt{at(0), 100}, 100, time.Hour))
	// The primary's first write in an hour, not yet received by the replica
	// at the check: behind by the moment since the primary's position was read.
	require.Equal(t, time.Duration(0), l.lag(at(1), walAt{at(1), 200}, 100, 0))
	require.Zero(t, l.lag(at(2), walAt{at(2), 200}, 200, 0), "replayed by the next check")
	// Restarted far behind: its own view tells at once.
	require.Equal(t, 30*time.Second, l.lag(at(2), walAt{at(2), 300}, 250, 30*time.Second))
	require.Zero(t, l.lag(at(2), walAt{at(2), 300}, 300, 0))

	// Cut off: it replays nothing more while the primary writes on.
	require.Zero(t, l.lag(at(3), walAt{at(3), 300}, 200, 0))
	require.Equal(t, 2*time.Second, l.lag(at(5), walAt{at(5), 400}, 200, 0), "the oldest unreplayed position's age")
	require.Equal(t, 4*time.Second, l.lag(at(7), walAt{at(7), 400}, 200, 0), "the primary idle meanwhile")
	require.Equal(t, 4*time.Second, l.lag(at(9), walAt{at(9), 500}, 350, 0), "replayed past 300 but not 400")
	require.Zero(t, l.lag(at(10), walAt{at(10), 500}, 500, 0), "caught up")

	// The primary cannot be read: the replica's own view; and after a
	// failover, a new primary behind the old one's position starts afresh.
	require.Equal(t, 3*time.Second, l.lag(at(11), walAt{}, 500, 3*time.Second))
	require.Zero(t, l.lag(at(12), walAt{at(12), 900}, 800, 0))
	require.Zero(t, l.lag(at(13), walAt{at(13), 850}, 850, 0), "a new timeline below the old position")

	// Bounded memory.
	for i := range 2 * maxPendingWAL {
		l.lag(at(20+i), walAt{at(20 + i), uint64(1000 + i)}, 850, 0)
	}
	require.Len(t, l.pending, maxPendingWAL)
	require.Equal(t, at(20), l.pending[0].at, "the oldest stays")
}

func TestParseLSN(t *testing.T) {
	require.Equal(t, uint64(0x16B374D848), parseLSN("16/B374D848"))
	require.Equal(t, uint64(0), parseLSN(""))
	require.Equal(t, uint64(0), parseLSN("x/1"))
}
