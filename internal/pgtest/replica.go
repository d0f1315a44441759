package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// catchUpTimeout bounds how long StartReplica waits for a new replica to
// replay what its primary had written when it came up.
const catchUpTimeout = 30 * time.Second

// replicaCluster is a local cluster streaming from a primary through a
// physical replication slot of its own, which it drops on close.
type replicaCluster struct {
	*localCluster
	primary *Cluster
	slot    string
}

// StartReplica starts a hot-standby streaming replica of c and closes it in
// t.Cleanup. It copies c with pg_basebackup -R -X stream into a new temp
// dir, through a physical replication slot, so c keeps the WAL the replica
// has not received yet, even while the replica is stopped. The replica
// runs on a free 127.0.0.1 port with c's settings (see WithSetting),
// hot_standby=on, then opts. It returns once the replica accepts
// connections and has replayed everything c had written by then (databases
// made with c.NewDatabase included; reach them with URLFor and the same
// name). Stop, Start and Close work as on c; after Start call WaitReplayed
// to catch up. Close also drops the slot, if c still runs. Replicas need c
// to be a local cluster: on the Docker path the test fails.
func (c *Cluster) StartReplica(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := c.startReplica(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func (c *Cluster) startReplica(ctx context.Context, opts ...Option) (_ *Cluster, err error) {
	plc, ok := c.impl.(*localCluster)
	if !ok {
		return nil, errors.New("pgtest: StartReplica needs a cluster run from local PostgreSQL server binaries " +
			"(initdb, pg_ctl, pg_basebackup); this one runs in Docker")
	}
	c.mu.Lock()
	up := c.running && !c.closed
	c.mu.Unlock()
	if !up {
		return nil, errors.New("pgtest: StartReplica on a stopped or closed cluster")
	}
	basebackup, err := findBasebackup(plc.bins.pgCtl)
	if err != nil {
		return nil, err
	}
	if err := checkPrimary(ctx, c.URL()); err != nil {
		return nil, err
	}

	var b [8]byte
	_, _ = rand.Read(b[:])
	slot := "pgkit_replica_" + hex.EncodeToString(b[:])
	dir, err := os.MkdirTemp(tempBase(plc.as), "pgkit-pg-replica-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: make temp dir: %w", err)
	}
	settings := append([]setting(nil), plc.opts.settings...) // a standby needs max_connections etc. >= the primary's
	settings = append(settings, setting{"hot_standby", "on"})
	settings = append(settings, buildOptions(opts).settings...)
	lc := &localCluster{
		bins:    plc.bins,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "postgres.log"),
		opts:    options{settings: settings},
		as:      plc.as,
	}
	rc := &replicaCluster{localCluster: lc, primary: c, slot: slot}
	defer func() {
		if err != nil {
			_ = rc.close(context.WithoutCancel(ctx))
		}
	}()
	if lc.as != nil {
		if err := os.Chown(dir, lc.as.uid, lc.as.gid); err != nil {
			return nil, fmt.Errorf("pgtest: chown %s to %s: %w", dir, lc.as.name, err)
		}
	}
	if lc.guard, err = startWatchdog(lc); err != nil {
		return nil, err
	}

	// -R writes standby.signal, primary_conninfo and primary_slot_name.
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable application_name=%s", c.Port(), slot)
	if out, err := lc.run(ctx, basebackup, "-D", lc.dataDir, "-d", conninfo, "-R", "-X", "stream",
		"-C", "-S", slot, "--checkpoint=fast", "--no-sync", "-w"); err != nil {
		return nil, fmt.Errorf("pgtest: pg_basebackup: %w\n%s", err, tail(out, 2000))
	}

	if err := lc.startOnFreePort(ctx); err != nil {
		return nil, err
	}
	r := &Cluster{host: "127.0.0.1", port: lc.port, running: true, impl: rc}
	waitCtx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if err := r.WaitReplayed(waitCtx, c); err != nil {
		return nil, fmt.Errorf("%w\nlog %s:\n%s", err, lc.logFile, tail(lc.logSince(0), 3000))
	}
	return r, nil
}

// findBasebackup returns the pg_basebackup that goes with pgCtl: next to
// it, else next to what it links to (/usr/local/bin/pg_ctl ->
// /usr/lib/postgresql/15/bin/pg_ctl), else on PATH.
func findBasebackup(pgCtl string) (string, error) {
	dirs := []string{filepath.Dir(pgCtl)}
	if real, err := filepath.EvalSymlinks(pgCtl); err == nil {
		dirs = append(dirs, filepath.Dir(real))
	}
	for _, dir := range dirs {
		p := filepath.Join(dir, "pg_basebackup")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("pg_basebackup"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("pgtest: no pg_basebackup in %s, nor on PATH", strings.Join(dirs, " or "))
}

// checkPrimary fails clearly when the server's settings rule out a
// streaming replica (they are fine unless WithSetting changed them).
func checkPrimary(ctx context.Context, connURL string) error {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return fmt.Errorf("pgtest: connect to primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var walLevel string
	var senders, slots int
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int, "+
		"current_setting('max_replication_slots')::int").Scan(&walLevel, &senders, &slots); err != nil {
		return fmt.Errorf("pgtest: read primary settings: %w", err)
	}
	if walLevel == "minimal" || senders < 2 || slots < 1 {
		return fmt.Errorf("pgtest: the primary cannot feed a replica (wal_level=%s, max_wal_senders=%d, max_replication_slots=%d): "+
			"it needs wal_level=replica or logical, max_wal_senders >= 2 and max_replication_slots >= 1", walLevel, senders, slots)
	}
	return nil
}

// close stops and removes the replica, then drops its slot on the primary
// if the primary still runs (a stopped primary keeps the unused slot, and
// its WAL, until it is closed).
func (rc *replicaCluster) close(ctx context.Context) error {
	err := rc.localCluster.close(ctx)
	return errors.Join(err, rc.dropSlot(ctx))
}

func (rc *replicaCluster) dropSlot(ctx context.Context) error {
	p := rc.primary
	p.mu.Lock()
	up := p.running && !p.closed
	p.mu.Unlock()
	if !up {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		return fmt.Errorf("pgtest: drop replication slot %s: %w", rc.slot, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		// The primary's walsender may not have noticed yet that the replica
		// is gone; until it does, the slot is active and cannot be dropped.
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", rc.slot)
		var pgErr *pgconn.PgError
		if err == nil {
			return nil
		} else if !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use
			return fmt.Errorf("pgtest: drop replication slot %s: %w", rc.slot, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: drop replication slot %s: %w (last error: %w)", rc.slot, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitReplayed waits until c, a replica of primary, has replayed all the
// WAL primary has written so far, so that c sees every transaction primary
// had committed when WaitReplayed was called. Throwaway servers run with
// synchronous_commit=off, so it first makes primary flush its WAL, by
// committing with synchronous_commit=on a transaction that writes an empty
// logical-decoding message (pg_logical_emit_message, prefix "pgtest"); then
// it polls c's pg_last_wal_replay_lsn(). It returns an error when ctx ends
// first, for example while replay is paused (see PauseReplay); give ctx a
// deadline.
func (c *Cluster) WaitReplayed(ctx context.Context, primary *Cluster) error {
	target, err := flushWAL(ctx, primary.URL())
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		return fmt.Errorf("pgtest: connect to replica: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var inRecovery, done bool
		var replayed, pause string
		err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
				coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false),
				coalesce(pg_last_wal_replay_lsn()::text, 'nothing'),
				pg_get_wal_replay_pause_state()`, target).Scan(&inRecovery, &done, &replayed, &pause)
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("pgtest: replica has not replayed the primary's WAL up to %s: %w", target, ctx.Err())
		case err != nil:
			return fmt.Errorf("pgtest: read replica's replay position: %w", err)
		case !inRecovery:
			return errors.New("pgtest: WaitReplayed on a server that is not a replica (not in recovery)")
		case done:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: replica has replayed WAL up to %s, not yet up to the primary's %s (replay %s): %w",
				replayed, target, pause, ctx.Err())
		case <-tick.C:
		}
	}
}

// flushWAL makes the server flush all the WAL it has written, which the
// WAL sender sends only once flushed, and returns its flush position.
func flushWAL(ctx context.Context, connURL string) (string, error) {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return "", fmt.Errorf("pgtest: connect to primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// A synchronous commit flushes the WAL up to its commit record, and
	// with it everything written before, but only if the transaction wrote
	// WAL of its own: an xid alone is not enough. A transactional message
	// is a record that changes no data.
	if _, err := conn.Exec(ctx, "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_logical_emit_message(true, 'pgtest', ''); COMMIT"); err != nil {
		return "", fmt.Errorf("pgtest: flush the primary's WAL: %w", err)
	}
	var lsn string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&lsn); err != nil {
		return "", fmt.Errorf("pgtest: read the primary's WAL position: %w", err)
	}
	return lsn, nil
}

// PauseReplay pauses WAL replay on c, a replica, and returns once replay
// has stopped: c keeps receiving WAL from its primary but applies none of
// it, so a write made on the primary from now on stays invisible on c, and
// pg_last_wal_receive_lsn() moves ahead of pg_last_wal_replay_lsn(), until
// ResumeReplay (or until c restarts: Stop and Start resume replay).
func (c *Cluster) PauseReplay(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		return fmt.Errorf("pgtest: connect to replica: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		return fmt.Errorf("pgtest: pause replay: %w", err)
	}
	// The call only requests a pause; the startup process takes it up
	// before it applies the next record.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var state string
		if err := conn.QueryRow(ctx, "SELECT pg_get_wal_replay_pause_state()").Scan(&state); err != nil {
			return fmt.Errorf("pgtest: pause replay: %w", err)
		}
		if state == "paused" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: pause replay: still %q: %w", state, ctx.Err())
		case <-tick.C:
		}
	}
}

// ResumeReplay resumes WAL replay on c, a replica paused by PauseReplay;
// call WaitReplayed to wait until it has caught up.
func (c *Cluster) ResumeReplay(ctx context.Context) error {
	if err := adminExec(ctx, c.URL(), "SELECT pg_wal_replay_resume()"); err != nil {
		return fmt.Errorf("pgtest: resume replay: %w", err)
	}
	return nil
}
