package pgkit_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkFailover measures the full set of failovers through a Patroni
// cluster under the load of TestFailoverKillLeader (InTx writes with retry,
// a Writer with DedupeKey, reads through Reader): the leader killed, with
// synchronous_mode and without, and a planned switchover. Each iteration
// starts a cluster of its own; run it with -benchtime 1x (make failover).
// It reports Patroni's promotion time, what pgkit added to it before the
// first write on the new primary, failed InTx calls and reads, and the
// acknowledged transactions and Writer items lost (asynchronous
// replication can lose what the standbys had not received: PostgreSQL's
// promise, not pgkit's).
func BenchmarkFailover(b *testing.B) {
	for _, c := range []struct {
		name        string
		synchronous bool
		switchover  bool
	}{
		{"kill/synchronous", true, false},
		{"kill/asynchronous", false, false},
		{"switchover/asynchronous", false, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var promote, added, failedTx, failedReads, lostTx, lostItems float64
			for range b.N {
				ha := startHA(b, c.synchronous)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				leader, err := ha.p.Leader(ctx)
				require.NoError(b, err)
				load := startLoad(b, ha.db)
				<-time.After(time.Second) // load before the fault
				start := time.Now()
				if c.switchover {
					require.NoError(b, ha.p.Switchover(ctx, (leader+1)%ha.p.Nodes()))
				} else {
					require.NoError(b, ha.p.Kill(leader))
				}
				newLeader, err := ha.p.WaitLeader(ctx, leader)
				require.NoError(b, err)
				promoted := time.Since(start)
				resumed := load.resumeAndEnd(b, ha.p.NodePort(newLeader), start)
				ids, items := load.lost(b, ha.db)
				promote += promoted.Seconds()
				added += (resumed - promoted).Seconds()
				failedTx += float64(load.failedTx)
				failedReads += float64(load.failedReads)
				lostTx += float64(ids)
				lostItems += float64(items)
				cancel()
			}
			n := float64(b.N)
			b.ReportMetric(promote/n, "promote-s")
			b.ReportMetric(added/n, "pgkit-added-s")
			b.ReportMetric(failedTx/n, "failed-tx")
			b.ReportMetric(failedReads/n, "failed-reads")
			b.ReportMetric(lostTx/n, "lost-tx")
			b.ReportMetric(lostItems/n, "lost-items")
			b.ReportMetric(0, "ns/op")
		})
	}
}
