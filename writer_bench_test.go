package pgkit_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

// BenchmarkWriter is the background writer's sustained rate: 50 producers
// write 2,000 messages each through one Writer, until Flush returns, against
// one raw CopyFrom of the same 100,000 rows. It also reports the peak heap
// while the writer runs.
//
//	go test -run '^$' -bench BenchmarkWriter -benchtime 5x
func BenchmarkWriter(b *testing.B) {
	const producers, each = 50, 2000
	_, db := benchPools(b, 4, pgkit.Config{})
	convID := newConversation(b, db)
	all := messages(convID, producers*each, 0)
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[messageRow]{Table: "messages", Name: "bench"})
	require.NoError(b, err)
	defer func() { require.NoError(b, w.Close(context.Background())) }()

	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > peak.Load() {
					peak.Store(ms.HeapAlloc)
				}
			}
		}
	}()
	cols := []string{"tenant_id", "conversation_id", "role", "content", "tokens"}
	a, k := benchAB(b, 1,
		"raw-CopyFrom", func(ctx context.Context) error {
			_, err := db.CopyFrom(ctx, pgx.Identifier{"messages"}, cols, pgx.CopyFromSlice(len(all), func(i int) ([]any, error) {
				m := &all[i]
				return []any{m.TenantID, m.ConversationID, m.Role, m.Content, m.Tokens}, nil
			}))
			return err
		},
		"Writer", func(ctx context.Context) error {
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					for i := range each {
						if err := w.Write(ctx, all[p*each+i]); err != nil {
							panic(err)
						}
					}
				})
			}
			wg.Wait()
			return w.Flush(ctx)
		})
	close(stopSampling)
	<-sampled
	reportRows(b, producers*each, "raw-CopyFrom", a, "Writer", k)
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
}
