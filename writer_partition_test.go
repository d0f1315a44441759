package pgkit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/stretchr/testify/require"
)

// event is a row of the partition tests' table: n identifies it.
type event struct {
	N    int    `db:"n"`
	Body string `db:"body"`
}

// handedOff collects what reaches OnError or OnAmbiguous.
type handedOff struct {
	mu  sync.Mutex
	ids map[int]int // n -> times handed off
}

func (h *handedOff) take(items []event, _ error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ids == nil {
		h.ids = map[int]int{}
	}
	for _, e := range items {
		h.ids[e.N]++
	}
}

func (h *handedOff) snapshot() map[int]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[int]int, len(h.ids))
	for k, v := range h.ids {
		out[k] = v
	}
	return out
}

// eventIDs is how many times each n is in the table.
func eventIDs(t *testing.T, db *pgkit.DB) map[int]int {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT n, count(*) FROM events GROUP BY n`)
	require.NoError(t, err)
	out := map[int]int{}
	for rows.Next() {
		var n, c int
		require.NoError(t, rows.Scan(&n, &c))
		out[n] = c
	}
	require.NoError(t, rows.Err())
	return out
}

// ev makes event n; the body is never 4 bytes long, so no row's bytes look
// like COPY's end message to the proxy.
func ev(n int) event { return event{N: n, Body: fmt.Sprintf("event-%d", n)} }

// TestWriterCopyAnswerLost: the server finishes a batch's COPY, its answer
// is lost and the connection cut. The COPY ran inside the batch's
// transaction, which never got its COMMIT, so the retry writes the batch
// once: no row twice, nothing handed off. (A COPY outside a transaction
// commits by itself, and its retry wrote every row twice.)
func TestWriterCopyAnswerLost(t *testing.T) {
	t.Parallel()
	writeThroughLostAnswer(t, []byte{'c', 0, 0, 0, 4}) // CopyDone
}

// TestWriterCommitAnswerLost: the server commits a batch and the answer to
// COMMIT is lost. The writer asks pg_xact_status with the transaction id it
// read before COMMIT, learns that it committed, and counts the batch
// written: not retried (no duplicate), not in OnError, not ambiguous.
func TestWriterCommitAnswerLost(t *testing.T) {
	t.Parallel()
	writeThroughLostAnswer(t, []byte("COMMIT\x00"))
}

// writeThroughLostAnswer writes 50 events while the proxy cuts the
// connection after the server's answer to the first message containing
// pattern, and checks each event is in the table once, written, and
// handed off nowhere.
func writeThroughLostAnswer(t *testing.T, pattern []byte) {
	url, proxy := proxied(t)
	db := openTest(t, pgkit.Config{URL: url, MaxConns: 2})
	ctx := context.Background()
	_, err := db.Exec(ctx, `CREATE TABLE events (n int, body text)`)
	require.NoError(t, err)
	var failed, ambiguous handedOff
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[event]{Table: "events", FlushInterval: time.Hour,
		OnError: failed.take, OnAmbiguous: ambiguous.take})
	require.NoError(t, err)

	proxy.CutAfterReplyTo(pattern)
	for n := range 50 {
		require.NoError(t, w.Write(ctx, ev(n)))
	}
	require.NoError(t, w.Flush(ctx))
	require.NoError(t, w.Close(ctx))

	ids := eventIDs(t, db)
	require.Len(t, ids, 50)
	for n, c := range ids {
		require.Equal(t, 1, c, "event %d written %d times", n, c)
	}
	require.Empty(t, failed.snapshot())
	require.Empty(t, ambiguous.snapshot())
	st := w.Stats()
	require.Equal(t, uint64(50), st.Written)
	require.Zero(t, st.Ambiguous)
}

// TestWriterFrozenServer: the server stops answering (packets held, sockets
// open) while items are queued and in flight. RetryFor bounds the outage:
// Flush returns with an error instead of waiting for the server; and after
// the server answers again, every accepted item is in exactly one place:
// the table, OnError, or OnAmbiguous (a COMMIT sent before the freeze may
// land after it, so an ambiguous item may also be in the table; an item in
// OnError never is).
func TestWriterFrozenServer(t *testing.T) {
	t.Parallel()
	for _, dedupe := range []bool{false, true} {
		t.Run(fmt.Sprintf("dedupe=%v", dedupe), func(t *testing.T) {
			t.Parallel()
			const retryFor = time.Second
			url, proxy := proxied(t)
			t.Cleanup(proxy.Resume)
			db := openTest(t, pgkit.Config{URL: url, MaxConns: 2})
			ctx := context.Background()
			_, err := db.Exec(ctx, `CREATE TABLE events (n int, body text)`)
			require.NoError(t, err)
			cfg := pgkit.WriterConfig[event]{Table: "events", BatchSize: 10, FlushInterval: 5 * time.Millisecond, RetryFor: retryFor}
			if dedupe {
				_, err := db.Exec(ctx, `CREATE UNIQUE INDEX ON events (n)`)
				require.NoError(t, err)
				cfg.DedupeKey = "n"
			}
			var failed, ambiguous handedOff
			cfg.OnError, cfg.OnAmbiguous = failed.take, ambiguous.take
			w, err := pgkit.NewWriter(db, cfg)
			require.NoError(t, err)

			for n := range 100 {
				require.NoError(t, w.Write(ctx, ev(n)))
			}
			require.NoError(t, w.Flush(ctx))
			proxy.Pause()
			for n := 100; n < 200; n++ {
				require.NoError(t, w.Write(ctx, ev(n)))
			}
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			start := time.Now()
			err = w.Flush(fctx)
			took := time.Since(start)
			require.Error(t, err, "the frozen batches are handed off")
			require.NoError(t, fctx.Err(), "Flush returned by RetryFor, not by its own deadline")
			require.Less(t, took, 3*retryFor+5*time.Second, "RetryFor bounds the outage (a settle may add one more RetryFor)")
			proxy.Resume()
			require.Error(t, w.Close(ctx))

			inTable, inError, inAmbiguous := eventIDs(t, db), failed.snapshot(), ambiguous.snapshot()
			for n := range 200 {
				require.LessOrEqual(t, inTable[n], 1, "event %d written twice", n)
				require.LessOrEqual(t, inError[n]+inAmbiguous[n], 1, "event %d handed off twice", n)
				if inError[n] == 1 {
					require.Zero(t, inTable[n], "event %d is in the table and was handed to OnError as unwritten", n)
				}
				require.Equal(t, 1, max(inTable[n], inError[n]+inAmbiguous[n]), "event %d is nowhere", n)
			}
			st := w.Stats()
			require.Equal(t, uint64(200), st.Written+st.Failed+st.Ambiguous)
			require.Equal(t, uint64(len(inError)), st.Failed)
			require.Equal(t, uint64(len(inAmbiguous)), st.Ambiguous)
			require.Positive(t, st.Failed+st.Ambiguous)
			t.Logf("took %v; written %d, failed %d, ambiguous %d (of which in the table: %d)", took.Round(time.Millisecond),
				st.Written, st.Failed, st.Ambiguous, countIn(inAmbiguous, inTable))
		})
	}
}

func countIn(keys, in map[int]int) int {
	n := 0
	for k := range keys {
		if in[k] > 0 {
			n++
		}
	}
	return n
}
