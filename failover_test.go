package pgkit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/faultproxy"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/pgkit-dev/pgkit/internal/testkit"
)

// haItem is a row the Writer adds during a failover.
type haItem struct {
	ClientID string `db:"client_id"`
	N        int    `db:"n"`
}

// haCluster is a Patroni cluster and a DB over it as the README configures
// one: every node in a multi-host URL that only a primary accepts, and
// every node as a replica (the primary among them is set aside as one).
type haCluster struct {
	p    *pgtest.Patroni
	db   *pgkit.DB
	logs *testkit.LogRecorder
	reg  *prometheus.Registry
}

func startHA(t testing.TB, synchronous bool) haCluster {
	t.Helper()
	p := pgtest.StartPatroni(t, pgtest.PatroniOptions{Synchronous: synchronous})
	replicas := make([]string, p.Nodes())
	for i := range replicas {
		replicas[i] = p.NodeURL(i)
	}
	logs, reg := &testkit.LogRecorder{}, prometheus.NewPedanticRegistry()
	db := testkit.OpenDB(t, pgkit.Config{URL: p.URL("read-write"), ReplicaURLs: replicas, MaxConns: 4,
		ConnectTimeout: time.Second, HealthTimeout: time.Second, ReplicaCheckPeriod: 100 * time.Millisecond,
		Logger: slog.New(logs), Registerer: reg})
	_, err := db.Exec(context.Background(), `CREATE TABLE ha_writes (id bigint PRIMARY KEY);
		CREATE TABLE ha_items (client_id text UNIQUE, n int)`)
	require.NoError(t, err)
	return haCluster{p: p, db: db, logs: logs, reg: reg}
}

// haLoad is a steady load through a failover: transactions with retry, a
// Writer and reads through Reader, each recording what it saw.
type haLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	acked       []int64     // ids whose InTx returned nil
	ackedAt     []time.Time // when
	ackedOn     []int       // the port of the server that committed it
	failedTx    int         // InTx calls that returned an error
	txErrors    map[string]int
	failedReads int
	reads       int
	writer      *pgkit.Writer[haItem]
	queued      atomic.Int64 // items whose Write returned nil
	refused     atomic.Int64 // items handed to OnError or OnAmbiguous
}

func startLoad(t testing.TB, db *pgkit.DB) *haLoad {
	t.Helper()
	l := &haLoad{stop: make(chan struct{}), txErrors: map[string]int{}}
	var err error
	l.writer, err = pgkit.NewWriter(db, pgkit.WriterConfig[haItem]{Table: "ha_items", DedupeKey: "client_id",
		FlushInterval: 20 * time.Millisecond,
		OnError:       func(items []haItem, _ error) { l.refused.Add(int64(len(items))) },
		OnAmbiguous:   func(items []haItem, _ error) { l.refused.Add(int64(len(items))) }})
	require.NoError(t, err)
	ctx := context.Background()
	// Enough to ride a switchover: about 12 s of backoff in all, at most
	// 250 ms between attempts.
	retry := pgkit.WithRetry(pgkit.RetryPolicy{MaxAttempts: 100, MaxDelay: 250 * time.Millisecond})
	l.wg.Add(3)
	go func() { // transactions
		defer l.wg.Done()
		for id := int64(1); ; id++ {
			select {
			case <-l.stop:
				return
			default:
			}
			var port int
			err := pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
				return tx.QueryRow(ctx, `INSERT INTO ha_writes (id) VALUES ($1) RETURNING inet_server_port()`, id).Scan(&port)
			}, retry)
			l.mu.Lock()
			if err == nil {
				l.acked, l.ackedAt, l.ackedOn = append(l.acked, id), append(l.ackedAt, time.Now()), append(l.ackedOn, port)
			} else {
				l.failedTx++
				l.txErrors[err.Error()]++
			}
			l.mu.Unlock()
			<-time.After(5 * time.Millisecond) // the load's pace
		}
	}()
	go func() { // the Writer
		defer l.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			if l.writer.Write(ctx, haItem{ClientID: "c" + strconv.Itoa(i), N: i}) == nil {
				l.queued.Add(1)
			}
			<-time.After(2 * time.Millisecond) // the load's pace
		}
	}()
	go func() { // reads
		defer l.wg.Done()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			var one int
			err := db.Reader().QueryRow(ctx, `SELECT 1`).Scan(&one)
			l.mu.Lock()
			l.reads++
			if err != nil {
				l.failedReads++
			}
			l.mu.Unlock()
			<-time.After(5 * time.Millisecond) // the load's pace
		}
	}()
	return l
}

// end stops the load and closes the Writer, which writes what it holds.
func (l *haLoad) end(t testing.TB) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, l.writer.Close(ctx))
}

// resumeAndEnd waits for the first transaction committed by the server on
// port and acknowledged after t0, lets the load run a second more, ends it,
// and returns how long after t0 that acknowledgement came.
func (l *haLoad) resumeAndEnd(t testing.TB, port int, t0 time.Time) time.Duration {
	t.Helper()
	var resumed time.Duration
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, at := range l.ackedAt {
			if l.ackedOn[i] == port && at.After(t0) {
				resumed = at.Sub(t0)
				return true
			}
		}
		return false
	}, 30*time.Second, 10*time.Millisecond, "writes resume on the new primary")
	<-time.After(time.Second) // load after it
	l.end(t)
	return resumed
}

// acksOnAfter counts the transactions committed by the server on port and
// acknowledged after t0.
func (l *haLoad) acksOnAfter(port int, t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i, at := range l.ackedAt {
		if l.ackedOn[i] == port && at.After(t0) {
			n++
		}
	}
	return n
}

// lost counts the acknowledged ids and Writer items missing from the
// database, and Writer items written more than once.
func (l *haLoad) lost(t testing.TB, db *pgkit.DB) (ids, items int) {
	t.Helper()
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT id FROM ha_writes`)
	require.NoError(t, err)
	present, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	have := make(map[int64]bool, len(present))
	for _, id := range present {
		have[id] = true
	}
	l.mu.Lock()
	for _, id := range l.acked {
		if !have[id] {
			ids++
		}
	}
	l.mu.Unlock()
	var written int64
	require.NoError(t, db.QueryRow(ctx, `SELECT count(DISTINCT client_id) FROM ha_items`).Scan(&written))
	return ids, int(l.queued.Load() - l.refused.Load() - written)
}

// TestFailoverKillLeader: under a steady load, the leader of a synchronous
// Patroni cluster is killed. Writes resume on the new primary soon after
// Patroni promotes it; no acknowledged transaction and no Writer item is
// lost; reads never fail while a replica lives; the killed node comes back
// as a replica that Reader uses again.
func TestFailoverKillLeader(t *testing.T) {
	t.Parallel()
	ha := startHA(t, true)
	ctx := context.Background()
	leader, err := ha.p.Leader(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		usable := 0
		for i, r := range ha.db.Replicas() {
			if i == leader {
				if r.Usable {
					return false
				}
			} else if r.Usable {
				usable++
			}
		}
		return usable == ha.p.Nodes()-1
	}, 10*time.Second, 20*time.Millisecond, "the leader is set aside as a replica, the others read: %+v", ha.db.Replicas())

	load := startLoad(t, ha.db)
	<-time.After(time.Second) // load before the kill
	killed := time.Now()
	require.NoError(t, ha.p.Kill(leader))
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// Health while there is no primary.
	healthDone, seen := make(chan struct{}), map[pgkit.HealthStatus]int{}
	var healthWG sync.WaitGroup
	healthWG.Add(1)
	go func() {
		defer healthWG.Done()
		for {
			select {
			case <-healthDone:
				return
			case <-time.After(200 * time.Millisecond):
				seen[ha.db.Health(ctx).Status]++
			}
		}
	}()
	newLeader, err := ha.p.WaitLeader(wctx, leader)
	close(healthDone)
	healthWG.Wait()
	require.NoError(t, err, ha.p.Log(leader))
	promoted := time.Since(killed)
	require.Positive(t, seen[pgkit.StatusDegraded], "no primary, replicas alive: degraded (%v)", seen)
	require.Zero(t, seen[pgkit.StatusDown], "never down while replicas serve reads (%v)", seen)
	resumed := load.resumeAndEnd(t, ha.p.NodePort(newLeader), killed)

	ids, items := load.lost(t, ha.db)
	t.Logf("killed leader %d, node %d promoted after %s (Patroni's API); first write acknowledged after %s; "+
		"%d failed InTx calls %v, %d of %d reads failed; lost: %d transactions, %d Writer items",
		leader, newLeader, promoted.Round(time.Millisecond), resumed.Round(time.Millisecond),
		load.failedTx, load.txErrors, load.failedReads, load.reads, ids, items)
	require.Zero(t, ids, "synchronous_mode: no acknowledged transaction lost")
	require.Zero(t, items, "every item accepted by the Writer is written exactly once")
	require.Zero(t, load.refused.Load())
	require.Zero(t, load.failedReads, "a replica lived throughout")
	// The goal is under a second (a connection attempt's backoff, at most
	// 0.5 s, and the retry's, at most MaxDelay); the margin is for a busy
	// machine.
	require.Less(t, resumed, promoted+2*time.Second, "pgkit adds little to Patroni's promotion")
	g := testkit.Gather(t, ha.reg)
	require.Equal(t, 1.0, g.Value(t, "pgkit_failovers_total", map[string]string{"role": "primary"}))
	require.Equal(t, 1.0, g.Value(t, "pgkit_primary_info", map[string]string{"addr": ha.p.NodeAddr(newLeader)}))
	_, ok := ha.logs.Find("the primary moved", "to", ha.p.NodeAddr(newLeader))
	require.True(t, ok, ha.logs.Text())

	// The killed node comes back as a replica, and Reader uses it again.
	require.NoError(t, ha.p.Start(leader))
	require.NoError(t, ha.p.WaitStreaming(wctx, leader), ha.p.Log(leader))
	require.Eventually(t, func() bool { return ha.db.Replicas()[leader].Usable && !ha.db.Replicas()[newLeader].Usable },
		30*time.Second, 50*time.Millisecond, "%+v", ha.db.Replicas())
}

// TestSwitchover: a planned switchover through Patroni's REST API under a
// steady load: no InTx call with retry fails, nothing acknowledged is lost,
// and the demoted node accepts no write after the promotion.
func TestSwitchover(t *testing.T) {
	t.Parallel()
	ha := startHA(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader, err := ha.p.Leader(ctx)
	require.NoError(t, err)
	to := (leader + 1) % ha.p.Nodes()

	load := startLoad(t, ha.db)
	<-time.After(500 * time.Millisecond) // load before the switchover
	start := time.Now()
	require.NoError(t, ha.p.Switchover(ctx, to))
	newLeader, err := ha.p.WaitLeader(ctx, leader)
	require.NoError(t, err)
	require.Equal(t, to, newLeader)
	switched := time.Since(start)
	resumed := load.resumeAndEnd(t, ha.p.NodePort(newLeader), start)

	ids, items := load.lost(t, ha.db)
	t.Logf("switchover %d -> %d in %s (Patroni's API); first write on the new primary acknowledged %s after it began; "+
		"%d failed InTx calls, %d of %d reads failed; lost: %d transactions, %d Writer items",
		leader, to, switched.Round(time.Millisecond), resumed.Round(time.Millisecond),
		load.failedTx, load.failedReads, load.reads, ids, items)
	require.Zero(t, load.failedTx, "a planned switchover fails no InTx with retry: %v", load.txErrors)
	require.Zero(t, load.acksOnAfter(ha.p.NodePort(leader), start.Add(switched)), "no write committed on the demoted node after the promotion")
	require.Zero(t, ids)
	require.Zero(t, items)
	require.Zero(t, load.failedReads)

	// The demoted node is a standby that refuses writes.
	require.NoError(t, ha.p.WaitStreaming(ctx, leader))
	_, err = pgx.Connect(ctx, ha.p.NodeURL(leader)+"&target_session_attrs=read-write")
	require.Error(t, err, "the demoted node takes no writes")
	conn, err := pgx.Connect(ctx, ha.p.NodeURL(leader))
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `INSERT INTO ha_writes (id) VALUES (-1)`)
	var pgErr interface{ SQLState() string }
	require.True(t, errors.As(err, &pgErr) && pgErr.SQLState() == "25006", fmt.Sprint(err))
}

// TestStandbyBehindOneAddress: the primary's address (a DNS name or a
// virtual address, here a proxy) led to a standby for a while, as after a
// demotion before the address moved, and the pool still holds connections
// to it. The first write refused there (25006) drops them all at once: InTx
// with retry runs again on the primary after that one refusal. The Writer
// rides such a period too.
func TestStandbyBehindOneAddress(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 1)
	primaryAddr, standbyAddr := "127.0.0.1:"+strconv.Itoa(s.primary.Port()), "127.0.0.1:"+strconv.Itoa(s.replicas[0].Port())
	proxy, err := faultproxy.Start(primaryAddr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	logs := &testkit.LogRecorder{}
	const conns = 4
	db := openTest(t, pgkit.Config{URL: strings.Replace(s.url, primaryAddr, proxy.Addr(), 1), MaxConns: conns,
		Logger: slog.New(logs)})
	ctx := context.Background()
	refusals := func() int { return strings.Count(logs.Text(), "sqlstate=25006") }
	standbyFound := func() int { return strings.Count(logs.Text(), "is a standby now") }
	toStandby := func() {
		proxy.SetTarget(standbyAddr)
		proxy.ResetAll()
		db.Reset() // the broken connections, each of which would fail a statement once, go
	}

	toStandby()
	onServers(t, db, conns, true) // every connection of the pool is on the standby
	proxy.SetTarget(primaryAddr)  // the address moves back; the pool still holds them
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return insertTenant(ctx, tx, "after") },
		pgkit.WithRetry(pgkit.RetryPolicy{})))
	require.Equal(t, 1, refusals(), "one refusal, then the other connections were dropped: %s", logs.Text())
	_, ok := logs.Find("is a standby now")
	require.True(t, ok, logs.Text())
	onServers(t, db, conns, false) // no connection to the standby is left

	// The Writer's batch is refused on the standby, and written once the
	// address leads to the primary.
	<-time.After(time.Second) // the pool's drop, and its log line, come once a second at most
	toStandby()
	w, err := pgkit.NewWriter(db, pgkit.WriterConfig[tenantRow]{Table: "tenants", FlushInterval: time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, w.Write(ctx, tenantRow{ID: "writer", Name: "writer"}))
	require.Eventually(t, func() bool { return standbyFound() > 1 }, 10*time.Second, 5*time.Millisecond, "refused on the standby: %s", logs.Text())
	proxy.SetTarget(primaryAddr)
	require.NoError(t, w.Close(ctx))
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM tenants WHERE id IN ('after', 'writer')`).Scan(&n))
	require.Equal(t, 2, n)
}

// onServers holds n connections of db at once and checks that each one's
// server is (standby) or is not in recovery.
func onServers(t *testing.T, db *pgkit.DB, n int, standby bool) {
	t.Helper()
	ctx := context.Background()
	held := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	for range n {
		c, err := db.Acquire(ctx)
		require.NoError(t, err)
		held = append(held, c)
		var inRecovery bool
		require.NoError(t, c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery))
		require.Equal(t, standby, inRecovery, "connection %d", len(held))
	}
}

// TestInTxRetriesNoRefusedConnection: a BEGIN whose connection the server
// refused (a role that does not exist) is the server's answer, not a
// failover: InTx with retry returns it after one attempt.
func TestInTxRetriesNoRefusedConnection(t *testing.T) {
	t.Parallel()
	url := strings.Replace(pgtest.NewDatabase(t), "postgres://postgres@", "postgres://no_such_role_3391@", 1)
	db := testkit.OpenDB(t, pgkit.Config{URL: url, LazyConnect: true, MaxConns: 1})
	ran := 0
	err := pgkit.InTx(context.Background(), db, func(pgkit.Tx) error { ran++; return nil },
		pgkit.WithRetry(pgkit.RetryPolicy{MaxAttempts: 5}))
	require.ErrorContains(t, err, "no_such_role_3391")
	var retryErr *pgkit.RetryError
	require.False(t, errors.As(err, &retryErr), "one attempt: %v", err)
	require.Zero(t, ran)
}
