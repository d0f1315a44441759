package pgtest

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// databaseName returns the database named in a postgres:// URL.
func databaseName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	name := strings.TrimPrefix(u.Path, "/")
	require.NotEmpty(t, name, dbURL)
	return name
}

// countRows returns count(*) of table replica_rows on conn's server.
func countRows(ctx context.Context, t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM replica_rows").Scan(&n))
	return n
}

// hasRow reports whether replica_rows holds v, on a connection of its own
// (so a stopped and restarted server is no trouble).
func hasRow(ctx context.Context, connURL, v string) (bool, error) {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var found bool
	err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM replica_rows WHERE v = $1)", v).Scan(&found)
	return found, err
}

func requireTables(ctx context.Context, t *testing.T, connURL string) {
	t.Helper()
	conn := connect(t, ctx, connURL)
	for _, table := range []string{"tenants", "users", "messages"} {
		var found bool
		require.NoError(t, conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&found))
		require.True(t, found, "table %s in %s", table, connURL)
	}
	require.NoError(t, conn.Close(ctx))
}

func TestReplica(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	primary := StartCluster(t, WithSetting("max_connections", "150"))
	pconn := connect(t, ctx, primary.URL())
	_, err := pconn.Exec(ctx, "CREATE TABLE replica_rows (v text PRIMARY KEY); INSERT INTO replica_rows SELECT 'r' || i FROM generate_series(1, 100) i")
	require.NoError(t, err)
	dbBefore := databaseName(t, primary.NewDatabase(t))

	began := time.Now()
	replica := primary.StartReplica(t)
	t.Logf("StartReplica took %v", time.Since(began))
	require.NotEqual(t, primary.Port(), replica.Port())
	rc, ok := replica.impl.(*replicaCluster)
	require.True(t, ok)

	rconn := connect(t, ctx, replica.URL())
	t.Run("standby", func(t *testing.T) {
		var inRecovery bool
		require.NoError(t, rconn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
		require.True(t, inRecovery, "the replica is in recovery")
		require.NoError(t, pconn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
		require.False(t, inRecovery, "the primary is not")

		var got string
		require.NoError(t, rconn.QueryRow(ctx, "SHOW max_connections").Scan(&got))
		require.Equal(t, "150", got, "the replica has the primary's settings")
		require.NoError(t, rconn.QueryRow(ctx, "SHOW fsync").Scan(&got))
		require.Equal(t, "off", got)

		var status, slot, app string
		require.NoError(t, pconn.QueryRow(ctx, `SELECT r.state, s.slot_name, r.application_name
			FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid`).Scan(&status, &slot, &app))
		require.Equal(t, "streaming", status)
		require.Equal(t, rc.slot, slot)
		require.Equal(t, rc.slot, app)
	})

	t.Run("caught up on start", func(t *testing.T) {
		// No waiting: StartReplica returned only once it had caught up.
		require.Equal(t, 100, countRows(ctx, t, rconn))
		requireTables(ctx, t, replica.URLFor(dbBefore))
	})

	t.Run("read only", func(t *testing.T) {
		_, err := rconn.Exec(ctx, "INSERT INTO replica_rows VALUES ('refused')")
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "error %v", err)
		require.Equal(t, "25006", pgErr.Code, "read_only_sql_transaction")
	})

	t.Run("streams", func(t *testing.T) {
		_, err := pconn.Exec(ctx, "INSERT INTO replica_rows VALUES ('streamed')")
		require.NoError(t, err)
		// Without WaitReplayed: streaming alone brings it.
		require.Eventually(t, func() bool {
			found, err := hasRow(ctx, replica.URL(), "streamed")
			return err == nil && found
		}, 5*time.Second, 20*time.Millisecond)

		_, err = pconn.Exec(ctx, "INSERT INTO replica_rows VALUES ('waited')")
		require.NoError(t, err)
		require.NoError(t, replica.WaitReplayed(ctx, primary))
		found, err := hasRow(ctx, replica.URL(), "waited")
		require.NoError(t, err)
		require.True(t, found, "WaitReplayed returned before the row was replayed")
	})

	t.Run("paused", func(t *testing.T) {
		require.NoError(t, replica.PauseReplay(ctx))
		_, err := pconn.Exec(ctx, "INSERT INTO replica_rows VALUES ('lagging')")
		require.NoError(t, err)

		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err = replica.WaitReplayed(short, primary)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "replay is paused")

		// WaitReplayed made the primary flush, so the WAL is received...
		var received, replayed string
		require.Eventually(t, func() bool {
			var ahead bool
			err := rconn.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn(),
				pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text`).Scan(&ahead, &received, &replayed)
			return err == nil && ahead
		}, 5*time.Second, 20*time.Millisecond, "receive %s, replay %s", received, replayed)
		// ...but not applied.
		found, err := hasRow(ctx, replica.URL(), "lagging")
		require.NoError(t, err)
		require.False(t, found, "a row written while replay is paused is visible")

		require.NoError(t, replica.ResumeReplay(ctx))
		require.NoError(t, replica.WaitReplayed(ctx, primary))
		found, err = hasRow(ctx, replica.URL(), "lagging")
		require.NoError(t, err)
		require.True(t, found)
	})

	t.Run("new database", func(t *testing.T) {
		name := databaseName(t, primary.NewDatabase(t))
		require.NoError(t, replica.WaitReplayed(ctx, primary))
		requireTables(ctx, t, replica.URLFor(name))
	})

	t.Run("stop and start", func(t *testing.T) {
		port := replica.Port()
		require.NoError(t, replica.PauseReplay(ctx)) // a restart resumes replay
		require.NoError(t, rconn.Close(ctx))
		require.NoError(t, replica.Stop(ctx))
		_, err := pgx.Connect(ctx, replica.URL())
		require.Error(t, err, "a stopped replica refuses connections")

		// Written while the replica is down, more than a WAL segment
		// (16MB) of it; the slot keeps it on the primary through a
		// checkpoint.
		_, err = pconn.Exec(ctx, "INSERT INTO replica_rows VALUES ('while stopped')")
		require.NoError(t, err)
		_, err = pconn.Exec(ctx, "CREATE TABLE filler AS SELECT i, repeat('x', 200) AS pad FROM generate_series(1, 100000) i")
		require.NoError(t, err)
		_, err = pconn.Exec(ctx, "SELECT pg_switch_wal(); CHECKPOINT")
		require.NoError(t, err)

		require.NoError(t, replica.Start(ctx))
		require.Equal(t, port, replica.Port(), "Start comes back on the same port")
		require.NoError(t, replica.WaitReplayed(ctx, primary))
		found, err := hasRow(ctx, replica.URL(), "while stopped")
		require.NoError(t, err)
		require.True(t, found)
		conn := connect(t, ctx, replica.URL())
		var inRecovery bool
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
		require.True(t, inRecovery)
		var n int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM filler").Scan(&n))
		require.Equal(t, 100000, n)
	})

	t.Run("close", func(t *testing.T) {
		pid := rc.postmasterPID()
		require.Positive(t, pid)
		port := replica.Port()
		require.NoError(t, replica.Close())
		require.NoError(t, replica.Close(), "Close is idempotent")
		require.Error(t, replica.Start(ctx), "a closed replica cannot start")

		_, err := os.Stat(rc.dir)
		require.ErrorIs(t, err, os.ErrNotExist, "the temp dir is removed")
		require.Eventually(t, func() bool { return processGone(pid) }, 10*time.Second, 20*time.Millisecond,
			"postmaster %d still runs", pid)
		_, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		require.Error(t, err, "the port refuses connections")

		var slots int
		require.NoError(t, pconn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&slots))
		require.Zero(t, slots, "the replication slot is dropped")
		require.Equal(t, 104, countRows(ctx, t, pconn), "the primary still works")
	})
}

func TestReplicaOfStoppedPrimary(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	primary := StartCluster(t)
	require.NoError(t, primary.Stop(ctx))
	_, err := primary.startReplica(ctx)
	require.ErrorContains(t, err, "stopped or closed")
}

func TestReplicaOfMinimalWAL(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	primary := StartCluster(t, WithSetting("wal_level", "minimal"), WithSetting("max_wal_senders", "0"))
	_, err := primary.startReplica(ctx)
	require.ErrorContains(t, err, "wal_level=minimal")
}

func TestReplicaNeedsLocalCluster(t *testing.T) {
	t.Parallel()
	c := &Cluster{host: "127.0.0.1", port: 1, running: true, impl: &dockerCluster{}}
	_, err := c.startReplica(context.Background())
	require.ErrorContains(t, err, "local PostgreSQL server binaries")
}
