package pgkit_test

import (
	"context"
	"encoding/json"
	"github.com/pgkit-dev/pgkit/internal/testkit"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// replicaSetup is a throwaway primary with a database of the test's own and
// streaming replicas of it, each reachable at the same database.
type replicaSetup struct {
	primary     *pgtest.Cluster
	replicas    []*pgtest.Cluster
	url         string   // the database on the primary
	replicaURLs []string // the same database on each replica
}

func startReplicas(t *testing.T, n int) replicaSetup {
	t.Helper()
	s := replicaSetup{primary: pgtest.StartCluster(t)}
	s.url = s.primary.NewDatabase(t)
	u, err := url.Parse(s.url)
	require.NoError(t, err)
	for range n {
		r := s.primary.StartReplica(t)
		s.replicas = append(s.replicas, r)
		s.replicaURLs = append(s.replicaURLs, r.URLFor(strings.TrimPrefix(u.Path, "/")))
	}
	return s
}

// server says where a statement ran: the port of the server, and whether
// it is a standby.
func server(t *testing.T, ctx context.Context, q pgkit.Querier) (port int, standby bool) {
	t.Helper()
	require.NoError(t, q.QueryRow(ctx, `SELECT inet_server_port(), pg_is_in_recovery()`).Scan(&port, &standby))
	return port, standby
}

func TestReaderSpreadsOverReplicasAndWritesStayOnPrimary(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 2)
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, Registerer: reg, MaxConns: 2})
	ctx := context.Background()

	for i, st := range db.Replicas() {
		require.True(t, st.Usable, "replica %d after Open: %+v", i, st)
		require.Equal(t, "127.0.0.1:"+strconv.Itoa(s.replicas[i].Port()), st.Addr)
	}

	// Round robin: ten reads, five on each replica, none on the primary.
	seen := map[int]int{}
	for range 10 {
		port, standby := server(t, ctx, db.Reader())
		require.True(t, standby, "a read through Reader ran on the primary")
		seen[port]++
	}
	require.Equal(t, map[int]int{s.replicas[0].Port(): 5, s.replicas[1].Port(): 5}, seen)

	// The DB itself, and InTx without OnReplica (ReadOnly or not), use the
	// primary.
	port, standby := server(t, ctx, db)
	require.False(t, standby)
	require.Equal(t, s.primary.Port(), port)
	for _, opts := range [][]pgkit.TxOption{nil, {pgkit.ReadOnly()}, {pgkit.ReadOnly(), pgkit.WithRetry(pgkit.RetryPolicy{})}} {
		require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
			_, standby := server(t, ctx, tx)
			require.False(t, standby, "InTx went to a replica without OnReplica")
			return nil
		}, opts...))
	}
	// OnReplica asks for it, and makes the transaction read only.
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		_, standby := server(t, ctx, tx)
		require.True(t, standby)
		var readOnly string
		require.NoError(t, tx.QueryRow(ctx, `SHOW transaction_read_only`).Scan(&readOnly))
		require.Equal(t, "on", readOnly)
		return nil
	}, pgkit.OnReplica()))
	err := pgkit.InTx(ctx, db, func(pgkit.Tx) error { return nil }, pgkit.OnReplica(), pgkit.WithIsolation("serializable"))
	require.ErrorContains(t, err, "SERIALIZABLE")

	// Writes: through the DB they land on the primary and replicate; a
	// write sent through Reader is refused by the standby.
	require.NoError(t, insertTenant(ctx, db, "written"))
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error { return insertTenant(ctx, tx, "in-tx") }))
	err = insertTenant(ctx, db.Reader(), "misrouted")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25006", pgErr.Code, "read_only_sql_transaction")
	for _, r := range s.replicas {
		require.NoError(t, r.WaitReplayed(ctx, s.primary))
	}
	for range 2 {
		var n int
		require.NoError(t, db.Reader().QueryRow(ctx, `SELECT count(*) FROM tenants WHERE id IN ('written', 'in-tx')`).Scan(&n))
		require.Equal(t, 2, n)
	}

	// Metrics carry the role; each replica has its own up and lag.
	g := testkit.Gather(t, reg)
	require.Greater(t, histogramCount(g, "pgkit_query_duration_seconds", map[string]string{"role": "replica"}), uint64(10))
	require.Greater(t, histogramCount(g, "pgkit_query_duration_seconds", map[string]string{"role": "primary"}), uint64(3))
	require.Equal(t, 4.0, g.Value(t, "pgkit_pool_max_connections", map[string]string{"role": "replica"}), "two replica pools of 2")
	require.Equal(t, 1.0, g.Value(t, "pgkit_database_up", map[string]string{"role": "replica"}))
	for _, r := range s.replicas {
		require.Equal(t, 1.0, g.Value(t, "pgkit_replica_up", map[string]string{"replica": "127.0.0.1:" + strconv.Itoa(r.Port())}))
	}
	require.Equal(t, 0.0, g.Value(t, "pgkit_replica_fallbacks_total", nil))

	// The health report and the admin endpoint carry each replica's check.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/db-stats", nil)
	req.Header.Set("Authorization", "Bearer t")
	pgkit.StatsHandler(db, pgkit.BearerToken("t")).ServeHTTP(rec, req)
	var stats struct {
		Replicas []struct {
			Addr       string   `json:"addr"`
			Usable     bool     `json:"usable"`
			InRecovery bool     `json:"in_recovery"`
			LagSeconds *float64 `json:"lag_seconds"`
		} `json:"replicas"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &stats), rec.Body.String())
	require.Len(t, stats.Replicas, 2)
	for i, r := range stats.Replicas {
		require.Equal(t, "127.0.0.1:"+strconv.Itoa(s.replicas[i].Port()), r.Addr)
		require.True(t, r.Usable && r.InRecovery)
		require.NotNil(t, r.LagSeconds)
	}
	require.Len(t, db.Health(ctx).Replicas, 2)
}

// histogramCount sums the sample counts of the histograms of family name
// whose labels include labels.
func histogramCount(g testkit.Gathered, name string, labels map[string]string) uint64 {
	var n uint64
next:
	for _, m := range g[name].GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func TestStoppedReplicaIsSkippedAndComesBack(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 1)
	const period = 200 * time.Millisecond
	reg := prometheus.NewPedanticRegistry()
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, Registerer: reg, MaxConns: 2,
		ReplicaCheckPeriod: period, HealthTimeout: 500 * time.Millisecond})
	ctx := context.Background()
	_, standby := server(t, ctx, db.Reader())
	require.True(t, standby)

	require.NoError(t, s.replicas[0].Stop(ctx))
	stopped := time.Now()
	// Within a check period and a check's timeout, reads go to the primary
	// without an error (a read that raced the stop may fail).
	require.Eventually(t, func() bool { return !db.Replicas()[0].Usable }, 5*time.Second, 10*time.Millisecond)
	require.Less(t, time.Since(stopped), period+500*time.Millisecond+3*time.Second, "set aside within its check period and timeout (and a margin for a busy machine)")
	for range 20 {
		port, standby := server(t, ctx, db.Reader())
		require.False(t, standby)
		require.Equal(t, s.primary.Port(), port)
	}
	st := db.Replicas()[0]
	require.False(t, st.Healthy)
	require.NotEmpty(t, st.Reason)
	require.NotContains(t, st.Reason, "postgres@", "the reason never holds the URL")
	g := testkit.Gather(t, reg)
	require.Equal(t, 0.0, g.Value(t, "pgkit_replica_up", nil))
	require.Equal(t, 0.0, g.Value(t, "pgkit_database_up", map[string]string{"role": "replica"}))
	require.GreaterOrEqual(t, g.Value(t, "pgkit_replica_fallbacks_total", nil), 20.0)
	require.Equal(t, pgkit.StatusUp, db.Health(ctx).Status, "a replica down does not make the database down")

	require.NoError(t, s.replicas[0].Start(ctx))
	require.NoError(t, s.replicas[0].WaitReplayed(ctx, s.primary))
	require.Eventually(t, func() bool { return db.Replicas()[0].Usable }, 10*time.Second, 10*time.Millisecond)
	_, standby = server(t, ctx, db.Reader())
	require.True(t, standby, "back in use after a passing check")
}

func TestLaggingReplicaIsSkipped(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 1)
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, MaxConns: 2,
		ReplicaCheckPeriod: 100 * time.Millisecond, MaxReplicaLag: 500 * time.Millisecond})
	ctx := context.Background()
	require.NoError(t, insertTenant(ctx, db, "before"))
	require.NoError(t, s.replicas[0].WaitReplayed(ctx, s.primary))
	require.Eventually(t, func() bool { return db.Replicas()[0].Usable }, 5*time.Second, 10*time.Millisecond)

	// Replay stops; the primary goes on writing. The replica still answers,
	// but its lag grows past the bound.
	require.NoError(t, s.replicas[0].PauseReplay(ctx))
	require.NoError(t, insertTenant(ctx, db, "after"))
	require.Eventually(t, func() bool {
		st := db.Replicas()[0]
		return st.Healthy && !st.Usable && st.Lag > 500*time.Millisecond
	}, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, db.Replicas()[0].Reason, "MaxReplicaLag")
	var n int
	require.NoError(t, db.Reader().QueryRow(ctx, `SELECT count(*) FROM tenants WHERE id = 'after'`).Scan(&n))
	require.Equal(t, 1, n, "the read went to the primary, which has the row the replica has not replayed")

	require.NoError(t, s.replicas[0].ResumeReplay(ctx))
	require.Eventually(t, func() bool { return db.Replicas()[0].Usable }, 10*time.Second, 10*time.Millisecond)
	_, standby := server(t, ctx, db.Reader())
	require.True(t, standby)
}

// TestCutOffReplicaIsSkipped: a standby whose replication connection is cut
// (primary_conninfo pointed at a closed port) replays all it received, so
// by its own view it is caught up; measured against the primary, which goes
// on writing, it lags, and is set aside within MaxReplicaLag. Reconnected,
// it is used again.
func TestCutOffReplicaIsSkipped(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 1)
	const maxLag = 500 * time.Millisecond
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, MaxConns: 2,
		ReplicaCheckPeriod: 100 * time.Millisecond, MaxReplicaLag: maxLag})
	ctx := context.Background()
	require.Eventually(t, func() bool { return db.Replicas()[0].Usable }, 5*time.Second, 10*time.Millisecond)

	standby, err := pgx.Connect(ctx, s.replicas[0].URL())
	require.NoError(t, err)
	defer standby.Close(ctx)
	var conninfo string
	require.NoError(t, standby.QueryRow(ctx, `SHOW primary_conninfo`).Scan(&conninfo))
	setConninfo := func(ci string) {
		_, err := standby.Exec(ctx, `ALTER SYSTEM SET primary_conninfo = '`+strings.ReplaceAll(ci, "'", "''")+`'`)
		require.NoError(t, err)
		_, err = standby.Exec(ctx, `SELECT pg_reload_conf()`)
		require.NoError(t, err)
	}
	setConninfo("host=127.0.0.1 port=" + closedPort(t) + " user=postgres")
	require.Eventually(t, func() bool {
		var streaming bool
		return standby.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')`).Scan(&streaming) == nil && !streaming
	}, 10*time.Second, 20*time.Millisecond, "the standby stops receiving")

	require.NoError(t, insertTenant(ctx, db, "unseen"))
	cut := time.Now()
	require.Eventually(t, func() bool { return !db.Replicas()[0].Usable }, 10*time.Second, 10*time.Millisecond)
	st := db.Replicas()[0]
	require.True(t, st.Healthy, "it answers")
	require.Contains(t, st.Reason, "MaxReplicaLag")
	require.Less(t, time.Since(cut), maxLag+2*time.Second, "set aside within MaxReplicaLag (and a margin for a busy machine)")
	var own float64
	require.NoError(t, standby.QueryRow(ctx, `SELECT CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 ELSE 1 END`).Scan(&own))
	require.Zero(t, own, "by its own view, it replayed all it received")
	var n int
	require.NoError(t, db.Reader().QueryRow(ctx, `SELECT count(*) FROM tenants WHERE id = 'unseen'`).Scan(&n))
	require.Equal(t, 1, n, "the read went to the primary")

	setConninfo(conninfo)
	require.Eventually(t, func() bool { return db.Replicas()[0].Usable }, 20*time.Second, 20*time.Millisecond)
}

// TestPromotedReplicaIsNotRead: a replica promoted to primary is set aside
// as not a standby, and reads go elsewhere.
func TestPromotedReplicaIsNotRead(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 1)
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, MaxConns: 2, ReplicaCheckPeriod: 100 * time.Millisecond})
	ctx := context.Background()
	require.Eventually(t, func() bool { return db.Replicas()[0].Usable }, 5*time.Second, 10*time.Millisecond)
	conn, err := pgx.Connect(ctx, s.replicas[0].URL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_promote()`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !db.Replicas()[0].Usable }, 10*time.Second, 10*time.Millisecond)
	st := db.Replicas()[0]
	require.True(t, st.Healthy)
	require.False(t, st.InRecovery)
	require.Equal(t, "not a standby: the server was promoted to primary", st.Reason)
	port, _ := server(t, ctx, db.Reader())
	require.Equal(t, s.primary.Port(), port, "reads go to the primary, not to the promoted node")
}

func TestReplicaConfig(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	_, err := pgkit.Open(ctx, pgkit.Config{URL: url, ReplicaURLs: []string{""}})
	var cfgErr *pgkit.ConfigError
	require.ErrorAs(t, err, &cfgErr)
	require.Equal(t, "ReplicaURLs[0]", cfgErr.Field)
	_, err = pgkit.Open(ctx, pgkit.Config{URL: url, ReplicaURLs: []string{"postgres://u:s3cret@[::1/x"}})
	require.ErrorAs(t, err, &cfgErr)
	require.NotContains(t, err.Error(), "s3cret")
	_, err = pgkit.Open(ctx, pgkit.Config{URL: url, MaxReplicaLag: -2})
	require.ErrorAs(t, err, &cfgErr)
	require.Equal(t, "MaxReplicaLag", cfgErr.Field)

	// A replica that cannot be reached does not fail Open: reads go to the
	// primary, and the redacted URL is all Config shows.
	down := "postgres://postgres:s3cret@127.0.0.1:1/x?sslmode=disable"
	db := openTest(t, pgkit.Config{URL: url, ReplicaURLs: []string{down}, ReplicaCheckPeriod: time.Hour})
	require.False(t, db.Replicas()[0].Usable)
	_, standby := server(t, ctx, db.Reader())
	require.False(t, standby)
	require.Equal(t, []string{"postgres://postgres:xxxxx@127.0.0.1:1/x"}, db.Config().ReplicaURLs)

	// Without replicas, Reader is the DB.
	plain := openTest(t, pgkit.Config{URL: url})
	require.Same(t, plain, plain.Reader())
	require.Nil(t, plain.Replicas())
}

// TestBusyReplicaStaysInUse: a replica whose every pooled connection is in
// use is busy, not down: its checks go through a connection of their own.
func TestBusyReplicaStaysInUse(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 1)
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, MaxConns: 1,
		ReplicaCheckPeriod: 50 * time.Millisecond, HealthTimeout: 2 * time.Second})
	ctx := context.Background()
	require.True(t, db.Replicas()[0].Usable)

	// Hold the replica pool's one connection in a transaction while checks
	// run (assert, not require, inside fn: FailNow there would leave it
	// held).
	var standby, checked bool
	var st pgkit.ReplicaStatus
	require.NoError(t, pgkit.InTx(ctx, db, func(tx pgkit.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby); err != nil {
			return err
		}
		held := time.Now()
		checked = assert.Eventually(t, func() bool { return db.Replicas()[0].CheckedAt.After(held.Add(1100 * time.Millisecond)) },
			15*time.Second, 10*time.Millisecond)
		st = db.Replicas()[0]
		return nil
	}, pgkit.OnReplica()))
	require.True(t, standby, "the transaction ran on the replica")
	require.True(t, checked, "checks go on while the pool is saturated")
	require.True(t, st.Usable, "a saturated replica pool was taken for a replica that is down: %s", st.Reason)
}

// TestFailedReplicaIsSetAsideAtOnce: a read that finds the replica's
// connection gone sets it aside without waiting for the next check.
func TestFailedReplicaIsSetAsideAtOnce(t *testing.T) {
	t.Parallel()
	s := startReplicas(t, 1)
	db := openTest(t, pgkit.Config{URL: s.url, ReplicaURLs: s.replicaURLs, MaxConns: 2, ReplicaCheckPeriod: time.Hour})
	ctx := context.Background()
	_, standby := server(t, ctx, db.Reader())
	require.True(t, standby)

	require.NoError(t, s.replicas[0].Stop(ctx))
	var one int
	err := db.Reader().QueryRow(ctx, `SELECT 1`).Scan(&one)
	require.Error(t, err, "the replica's pooled connection was ended by the stop")
	st := db.Replicas()[0]
	require.False(t, st.Usable, "set aside by the failed read, an hour before the next check")
	require.NotEmpty(t, st.Reason)
	for range 5 {
		port, standby := server(t, ctx, db.Reader())
		require.False(t, standby)
		require.Equal(t, s.primary.Port(), port)
	}
}
