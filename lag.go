package pgkit

import (
	"strconv"
	"strings"
	"time"
)

// walAt is a WAL position of the primary and when it was read; a zero lsn
// says the primary could not be read.
type walAt struct {
	at  time.Time
	lsn uint64
}

// maxPendingWAL bounds what a lagTracker remembers.
const maxPendingWAL = 64

// lagTracker measures a replica's lag against its primary: at each check,
// the primary's position is read, then what the replica has replayed. A
// replica that has replayed up to the primary's position has no lag.
// Otherwise its lag is the larger of two: the age of the oldest primary
// position it has still not replayed (WAL the primary had then is not
// readable on it yet), which grows for a standby cut off from its primary
// that by its own view is caught up; and its own view (the age of the last
// transaction it replayed while it has received WAL it has not replayed),
// which tells at once of a standby that restarted far behind.
type lagTracker struct {
	pending []walAt // positions not yet replayed, oldest first
}

// lag records the check: the primary's position (lsn 0 when it could not
// be read), the replica's replay position, and its own view of its lag,
// which serves alone when the primary could not be read.
func (l *lagTracker) lag(now time.Time, primary walAt, replay uint64, own time.Duration) time.Duration {
	if primary.lsn == 0 || replay == 0 {
		// No primary to compare with (down, in recovery itself, or a new
		// one during a failover): the replica's own view.
		l.pending = l.pending[:0]
		return own
	}
	if n := len(l.pending); n > 0 && primary.lsn < l.pending[n-1].lsn {
		l.pending = l.pending[:0] // a new primary, on a new timeline
	}
	switch n := len(l.pending); {
	case n > 0 && l.pending[n-1].lsn == primary.lsn:
		// The same position: its first sighting stands.
	case n == maxPendingWAL:
		l.pending[n-1] = primary
	default:
		l.pending = append(l.pending, primary)
	}
	i := 0
	for i < len(l.pending) && l.pending[i].lsn <= replay {
		i++
	}
	l.pending = append(l.pending[:0], l.pending[i:]...)
	if len(l.pending) == 0 {
		return 0
	}
	return max(now.Sub(l.pending[0].at), own, 0)
}

// parseLSN reads a pg_lsn's text ("16/B374D848"); 0 when it is not one.
func parseLSN(s string) uint64 {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0
	}
	return h<<32 | l
}
