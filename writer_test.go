package pgkit_test

import (
	"context"
	"fmt"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// chatMessage is what a chat service saves in the background: one WebSocket
// message, with the client's id as its unique key.
type chatMessage struct {
	TenantID       string `db:"tenant_id"`
	ConversationID int64  `db:"conversation_id"`
	Role           string `db:"role"`
	Content        string `db:"content"`
	ClientID       string `db:"client_id"`
}

func chatMsg(convID int64, i int) chatMessage {
	return chatMessage{TenantID: "acme", ConversationID: convID, Role: "user", Content: fmt.Sprint("hello ", i), ClientID: fmt.Sprint("c-", i)}
}

// failures collects what reaches OnError.
type failures struct {
	mu    sync.Mutex
	items []chatMessage
	errs  []error
}

func (f *failures) onError(items []chatMessage, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items = append(f.items, items...)
	f.errs = append(f.errs, err)
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.items)
}

// messageStats counts messages and distinct client ids.
func messageStats(t *testing.T, db *pgkit.DB) (rows, distinct int) {
	t.Helper()
	require.NoError(t, db.QueryRow(context.Background(), `SELECT COUNT(*), COUNT(DISTINCT client_id) FROM messages`).Scan(&rows, &distinct))
	return rows, distinct
}

// produce writes n items from producers goroutines and returns how many Write
// accepted.
func produce(t *testing.T, w *pgkit.Writer[chatMessage], convID int64, producers, perProducer int) int64 {
	t.Helper()
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				if err := w.Write(context.Background(), chatMsg(convID, p*perProducer+i)); err == nil {
					accepted.Add(1)
				} else {
					require.ErrorIs(t, err, pgkit.ErrWriterClosed)
				}
			}
		})
	}
	wg.Wait()
	return accepted.Load()
}

func TestWriterWritesEverything(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, Name: "w"})
	convID := newConversation(t, db)
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: "chat"})
	require.NoError(t, err)

	require.Equal(t, int64(100_000), produce(t, w, convID, 50, 2000))
	require.NoError(t, w.Close(context.Background()))
	rows, distinct := messageStats(t, db)
	require.Equal(t, 100_000, rows)
	require.Equal(t, 100_000, distinct)

	err = w.Write(context.Background(), chatMsg(convID, -1))
	require.ErrorIs(t, err, pgkit.ErrWriterClosed)
	// Close unregistered the writer's metrics.
	require.Nil(t, testkit.Gather(t, reg).Find("pgkit_writer_items_total", nil))
}

func TestWriterMetricsAndFlush(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, Name: "w"})
	convID := newConversation(t, db)
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: "chat", FlushInterval: time.Hour, BatchSize: 100})
	require.NoError(t, err)
	defer func() { require.NoError(t, w.Close(context.Background())) }()

	for i := range 250 {
		require.NoError(t, w.Write(context.Background(), chatMsg(convID, i)))
	}
	require.NoError(t, w.Flush(context.Background()), "Flush writes the partial batch without waiting an hour")
	rows, _ := messageStats(t, db)
	require.Equal(t, 250, rows)
	require.Equal(t, pgkit.WriterStats{Name: "chat", Queued: 0, Capacity: 1000, Accepted: 250, Written: 250}, w.Stats())

	g := testkit.Gather(t, reg)
	labels := map[string]string{"pool": "w", "writer": "chat"}
	require.Equal(t, 250.0, g.Value(t, "pgkit_writer_items_total", map[string]string{"writer": "chat", "outcome": "written"}))
	require.Equal(t, 3.0, g.Value(t, "pgkit_writer_batch_size", labels), "100 + 100 + 50")
	require.Equal(t, 3.0, g.Value(t, "pgkit_writer_flush_duration_seconds", labels))
	require.Equal(t, 0.0, g.Value(t, "pgkit_writer_queue_depth", labels))
	require.Equal(t, 1000.0, g.Value(t, "pgkit_writer_queue_capacity", labels))
	require.Equal(t, 0.0, g.Value(t, "pgkit_writer_retries_total", labels))
}

func TestWriterIsolatesBadRows(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{})
	convID := newConversation(t, db)
	var failed failures
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", OnError: failed.onError, BatchSize: 64})
	require.NoError(t, err)
	for i := range 200 {
		m := chatMsg(convID, i)
		if i == 77 || i == 150 {
			m.Role = "robot" // violates the CHECK constraint
		}
		require.NoError(t, w.Write(context.Background(), m))
	}
	err = w.Close(context.Background())
	require.ErrorContains(t, err, "2 items went to OnError")
	rows, _ := messageStats(t, db)
	require.Equal(t, 198, rows, "the good rows land")
	require.Len(t, failed.items, 2)
	require.ElementsMatch(t, []string{"c-77", "c-150"}, []string{failed.items[0].ClientID, failed.items[1].ClientID})
	require.ErrorContains(t, failed.errs[0], "23514")
}

func TestWriterOverflow(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{Registerer: reg, Name: "overflow"})
	convID := newConversation(t, db)
	// A writer that cannot drain: its table is locked.
	lock, err := db.Begin(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = lock.Rollback(context.Background()) })
	_, err = lock.Exec(context.Background(), `LOCK TABLE messages IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	for _, policy := range []pgkit.Overflow{pgkit.OverflowFail, pgkit.OverflowBlock} {
		name := fmt.Sprint("overflow", policy)
		w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: name,
			BatchSize: 2, QueueSize: 4, FlushInterval: time.Millisecond, Overflow: policy, DedupeKey: "client_id"})
		require.NoError(t, err)
		depth := func() float64 {
			return testkit.Gather(t, reg).Value(t, "pgkit_writer_queue_depth", map[string]string{"writer": name})
		}
		// 2 go into the batch stuck on the lock, then 2 wait in the queue:
		// QueueSize (4) items are accepted and not yet written.
		for i := range 2 {
			require.NoError(t, w.Write(context.Background(), chatMsg(convID, int(policy)*100+i)))
		}
		require.Eventually(t, func() bool { return depth() == 0 }, 5*time.Second, time.Millisecond)
		for i := 2; i < 4; i++ {
			require.NoError(t, w.Write(context.Background(), chatMsg(convID, int(policy)*100+i)))
		}
		require.Equal(t, 2.0, depth())
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		err = w.Write(ctx, chatMsg(convID, int(policy)*100+4))
		cancel()
		if policy == pgkit.OverflowFail {
			require.ErrorIs(t, err, pgkit.ErrQueueFull)
			require.Less(t, time.Since(start), 50*time.Millisecond, "at once")
		} else {
			require.ErrorIs(t, err, context.DeadlineExceeded, "OverflowBlock honours ctx")
			require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
		}
		defer func() { require.NoError(t, w.Close(context.Background())) }()
	}
	require.NoError(t, lock.Rollback(context.Background()))
}

// TestWriterQueueSizeCountsTheBatchInFlight: QueueSize bounds the items
// accepted and not yet written, those of the batch being written included.
// With BatchSize 20 and QueueSize 30 against a locked table, 30 writes are
// accepted, not 20 in flight plus 30 queued; once the lock goes, a blocked
// Write gets in as the batch finishes, and every accepted item is written.
func TestWriterQueueSizeCountsTheBatchInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t, pgkit.Config{})
	convID := newConversation(t, db)
	lock, err := db.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lock.Rollback(ctx) })
	_, err = lock.Exec(ctx, `LOCK TABLE messages IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	var writers []*pgkit.Writer[chatMessage]
	total := 0
	for _, policy := range []pgkit.Overflow{pgkit.OverflowFail, pgkit.OverflowBlock} {
		w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", Name: fmt.Sprint("bound", policy),
			BatchSize: 20, QueueSize: 30, FlushInterval: time.Millisecond, Overflow: policy})
		require.NoError(t, err)
		base := int(policy) * 1000
		for i := range 20 {
			require.NoError(t, w.Write(ctx, chatMsg(convID, base+i)))
		}
		// The writer took the 20 into a batch, which waits for the lock.
		require.Eventually(t, func() bool { return w.Stats().Queued == 0 }, 5*time.Second, time.Millisecond)

		accepted := 20
		for i := 20; i < 100; i++ {
			wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			err := w.Write(wctx, chatMsg(convID, base+i))
			cancel()
			if err != nil {
				if policy == pgkit.OverflowFail {
					require.ErrorIs(t, err, pgkit.ErrQueueFull)
				} else {
					require.ErrorIs(t, err, context.DeadlineExceeded)
				}
				break
			}
			accepted++
		}
		require.Equal(t, 30, accepted, "QueueSize bounds the items accepted and not yet written")
		st := w.Stats()
		require.Equal(t, 10, st.Queued, "20 in the batch, 10 queued")
		require.Equal(t, uint64(30), st.Accepted)

		if policy == pgkit.OverflowBlock {
			// A Write waiting for room gets in when the lock goes and the
			// batch in flight is written.
			got := make(chan error, 1)
			go func() { got <- w.Write(ctx, chatMsg(convID, base+99)) }()
			require.NoError(t, lock.Rollback(ctx))
			select {
			case err := <-got:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("the blocked Write was not let in once the batch was written")
			}
			accepted++
		}
		writers = append(writers, w)
		total += accepted
	}
	for _, w := range writers {
		require.NoError(t, w.Close(ctx))
		st := w.Stats()
		require.Equal(t, st.Accepted, st.Written)
	}
	rows, _ := messageStats(t, db)
	require.Equal(t, total, rows, "every accepted item is written")
}

// TestWriterSurvivesKilledBackends kills the writer's server connections
// several times while 8 producers write: every accepted item lands exactly once.
func TestWriterSurvivesKilledBackends(t *testing.T) {
	t.Parallel()
	db := openTest(t, pgkit.Config{ApplicationName: "pgkit-writer-under-fire"})
	admin := openTest(t, pgkit.Config{URL: db.Config().URL, MaxConns: 1})
	convID := newConversation(t, db)
	var failed failures
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", DedupeKey: "client_id",
		BatchSize: 200, FlushInterval: 5 * time.Millisecond, OnError: failed.onError})
	require.NoError(t, err)

	stop := make(chan struct{})
	var kills atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
				tag, err := admin.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
					WHERE application_name = 'pgkit-writer-under-fire' AND pid <> pg_backend_pid()`)
				if err == nil {
					kills.Add(tag.RowsAffected())
				}
			}
		}
	}()
	accepted := produce(t, w, convID, 8, 2500)
	close(stop)
	require.NoError(t, w.Close(context.Background()))
	require.Positive(t, kills.Load())
	rows, distinct := messageStats(t, db)
	require.Zero(t, failed.count())
	require.Equal(t, int(accepted), rows, "every accepted item is in the database")
	require.Equal(t, rows, distinct, "exactly once")
	t.Logf("%d items, %d backends killed", accepted, kills.Load())
}

// TestWriterSurvivesServerRestart stops and starts the server mid-stream.
func TestWriterSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.StartCluster(t)
	url := cluster.NewDatabase(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 4, ConnectTimeout: time.Second, AcquireTimeout: time.Second})
	convID := newConversation(t, db)
	var failed failures
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", DedupeKey: "client_id",
		BatchSize: 100, FlushInterval: 5 * time.Millisecond, OnError: failed.onError})
	require.NoError(t, err)

	produced := make(chan int64)
	go func() { produced <- produce(t, w, convID, 4, 3000) }()
	require.Eventually(t, func() bool { n, _ := countMessages(db); return n > 1000 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, cluster.Stop(ctx))
	require.NoError(t, cluster.Start(ctx))
	accepted := <-produced
	require.NoError(t, w.Close(ctx))
	rows, distinct := messageStats(t, db)
	require.Zero(t, failed.count())
	require.Equal(t, int(accepted), rows)
	require.Equal(t, rows, distinct)
}

func countMessages(db *pgkit.DB) (int, error) {
	var n int
	err := db.QueryRow(context.Background(), `SELECT COUNT(*) FROM messages`).Scan(&n)
	return n, err
}

// TestWriterServerGoneForGood: Close gives up when its context ends, and
// OnError receives exactly the items that were not written.
func TestWriterServerGoneForGood(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.StartCluster(t)
	url := cluster.NewDatabase(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2, ConnectTimeout: 500 * time.Millisecond, AcquireTimeout: 500 * time.Millisecond})
	convID := newConversation(t, db)
	var failed failures
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[chatMessage]{Table: "messages", BatchSize: 50,
		FlushInterval: time.Millisecond, OnError: failed.onError})
	require.NoError(t, err)

	for i := range 100 {
		require.NoError(t, w.Write(ctx, chatMsg(convID, i)))
	}
	require.NoError(t, w.Flush(ctx))
	require.NoError(t, cluster.Stop(ctx))
	for i := 100; i < 600; i++ {
		require.NoError(t, w.Write(ctx, chatMsg(convID, i)))
	}
	closeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	err = w.Close(closeCtx)
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, 500, failed.count(), "OnError got exactly the unwritten items")

	require.NoError(t, cluster.Start(ctx))
	// Calls fail at once while the connection backoff waits out its delay
	// (at most ConnectBackoff): ask until the database answers.
	var rows int
	require.Eventually(t, func() bool {
		n, err := countMessages(db)
		rows = n
		return err == nil
	}, 15*time.Second, 10*time.Millisecond)
	require.Equal(t, 100, rows, "written + handed to OnError = accepted")
}
