package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PatroniOptions configures a cluster started by StartPatroni.
type PatroniOptions struct {
	// Nodes is the number of PostgreSQL nodes. Default 3.
	Nodes int
	// Synchronous turns on Patroni's synchronous_mode: a commit returns
	// once a synchronous standby has it, and only that standby may be
	// promoted, so no acknowledged write is lost in a failover.
	Synchronous bool
}

// Patroni is a high-availability cluster on loopback: one etcd and
// PostgreSQL nodes managed by Patroni, with short timings for tests (a
// leader key of 20 s, Patroni's minimum; a loop of 1 s). Node i listens on
// NodeAddr(i) and serves Patroni's REST API on APIURL(i). Run as root, the
// nodes run as the postgres OS user. A Patroni is safe for concurrent use.
type Patroni struct {
	dir    string
	scope  string
	as     *osUser
	bin    string
	etcd   *exec.Cmd
	guard  *watchdog
	client *http.Client

	mu    sync.Mutex
	nodes []*patroniNode
}

type patroniNode struct {
	name    string
	dir     string
	pgPort  int
	apiPort int
	cmd     *exec.Cmd // nil while killed
	exited  chan struct{}
}

// patroniLeaderTTL is the leader key's lifetime: how long after a leader's
// death the others may take over.
const patroniLeaderTTL = 20 * time.Second

// StartPatroni starts etcd and a Patroni cluster, waits until it has a
// leader and every other node streams from it, and closes it all in
// t.Cleanup. The test fails at once when patroni, etcd or the PostgreSQL
// server binaries are missing (scripts/provision.sh installs them).
func StartPatroni(t testing.TB, opts PatroniOptions) *Patroni {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := startPatroni(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func startPatroni(ctx context.Context, opts PatroniOptions) (_ *Patroni, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	bin, err := exec.LookPath("patroni")
	if err != nil {
		return nil, fmt.Errorf("pgtest: no patroni on PATH (Debian: apt-get install patroni etcd-server; scripts/provision.sh does): %w", err)
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("pgtest: no etcd on PATH (Debian: apt-get install etcd-server; scripts/provision.sh does): %w", err)
	}
	bins, err := defaultFinder().postgresBins(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	// Patroni runs pg_controldata, pg_rewind and pg_basebackup from the
	// same directory: the real one, not a directory of links to some.
	pgCtl, err := filepath.EvalSymlinks(bins.pgCtl)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	binDir := filepath.Dir(pgCtl)
	as, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(as), "pgkit-patroni-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: make temp dir: %w", err)
	}
	if as != nil {
		if err := os.Chown(dir, as.uid, as.gid); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: chown %s to %s: %w", dir, as.name, err)
		}
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := &Patroni{dir: dir, scope: "pgkit-" + hex.EncodeToString(b[:]), as: as, bin: bin,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	defer func() {
		if err != nil {
			_ = p.Close()
		}
	}()
	if p.guard, err = startPatroniWatchdog(dir); err != nil {
		return nil, err
	}
	etcdURL, err := p.startEtcd(ctx, etcdBin)
	if err != nil {
		return nil, err
	}
	for i := range opts.Nodes {
		n := &patroniNode{name: "node" + strconv.Itoa(i), dir: filepath.Join(dir, "node"+strconv.Itoa(i))}
		if n.pgPort, err = freePort(); err != nil {
			return nil, err
		}
		if n.apiPort, err = freePort(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
		if as != nil {
			if err := os.Chown(n.dir, as.uid, as.gid); err != nil {
				return nil, err
			}
		}
		conf := patroniConfig(p.scope, n, etcdURL, binDir, opts.Synchronous)
		if err := writeServerFile(filepath.Join(n.dir, "patroni.yml"), conf, as); err != nil {
			return nil, err
		}
		p.nodes = append(p.nodes, n)
	}
	// The first node bootstraps; the others copy it once it leads.
	if err := p.Start(0); err != nil {
		return nil, err
	}
	bootCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := p.WaitLeader(bootCtx, -1); err != nil {
		return nil, fmt.Errorf("%w; %s's log:\n%s", err, p.nodes[0].name, p.Log(0))
	}
	for i := 1; i < opts.Nodes; i++ {
		if err := p.Start(i); err != nil {
			return nil, err
		}
	}
	streamCtx, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	for i := 1; i < opts.Nodes; i++ {
		if err := p.WaitStreaming(streamCtx, i); err != nil {
			return nil, fmt.Errorf("%w; %s's log:\n%s", err, p.nodes[i].name, p.Log(i))
		}
	}
	if opts.Synchronous {
		if err := p.waitSyncStandby(ctx); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// patroniConfig is node n's patroni.yml. The timings are the shortest
// Patroni accepts (ttl ≥ 20, loop_wait + 2 × retry_timeout ≤ ttl).
func patroniConfig(scope string, n *patroniNode, etcdURL, binDir string, synchronous bool) string {
	return fmt.Sprintf(`scope: %[1]s
namespace: /pgkit/
name: %[2]s
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:%[3]d
  connect_address: 127.0.0.1:%[3]d
etcd3:
  host: %[4]s
bootstrap:
  dcs:
    ttl: %[8]d
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: %[7]t
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
        fsync: "off"
  initdb:
  - encoding: UTF8
  - locale: C.UTF-8
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:%[5]d
  connect_address: 127.0.0.1:%[5]d
  data_dir: %[6]s/data
  bin_dir: %[9]s
  pgpass: %[6]s/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    unix_socket_directories: %[6]s
tags:
  nofailover: false
  noloadbalance: false
`, scope, n.name, n.apiPort, etcdURL, n.pgPort, n.dir, synchronous, int(patroniLeaderTTL/time.Second), binDir)
}

// startEtcd starts a one-member etcd in the temp dir and returns its
// client address.
func (p *Patroni) startEtcd(ctx context.Context, bin string) (string, error) {
	client, err := freePort()
	if err != nil {
		return "", err
	}
	peer, err := freePort()
	if err != nil {
		return "", err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	cmd := exec.Command(bin, "--name", "etcd0", "--data-dir", filepath.Join(p.dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "etcd0="+peerURL, "--log-level", "warn")
	log, err := os.Create(filepath.Join(p.dir, "etcd.log"))
	if err != nil {
		return "", err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = serverEnv()
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("pgtest: start etcd: %w", err)
	}
	p.etcd = cmd
	for {
		resp, err := p.client.Get(clientURL + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(body, []byte(`"health":"true"`)) {
				return "127.0.0.1:" + strconv.Itoa(client), nil
			}
		}
		select {
		case <-ctx.Done():
			out, _ := os.ReadFile(filepath.Join(p.dir, "etcd.log"))
			return "", fmt.Errorf("pgtest: etcd not healthy: %w\n%s", ctx.Err(), tail(out, 2000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Start starts node i's Patroni (after StartPatroni: one that Kill
// stopped). A node that led before rejoins as a replica of the new leader,
// rewound with pg_rewind when it needs to be; see WaitStreaming.
func (p *Patroni) Start(i int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[i]
	if n.cmd != nil {
		return fmt.Errorf("pgtest: patroni %s already runs", n.name)
	}
	log, err := os.OpenFile(filepath.Join(n.dir, "patroni.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(p.bin, filepath.Join(n.dir, "patroni.yml"))
	cmd.Dir = n.dir
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = log, log
	if p.as != nil {
		setCredential(cmd, p.as.uid, p.as.gid)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start patroni %s: %w", n.name, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(n.exited)
	return nil
}

// Kill ends node i as a crash would: SIGKILL to its Patroni, its
// postmaster and every backend, so its clients' connections drop and its
// leader key (if it led) expires after the TTL.
func (p *Patroni) Kill(i int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[i]
	if n.cmd == nil {
		return fmt.Errorf("pgtest: patroni %s is not running", n.name)
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
	if pid := postmasterPID(filepath.Join(n.dir, "data")); pid > 0 {
		killTree(pid)
	}
	return nil
}

// killTree SIGKILLs pid and its children: the postmaster first, so it
// starts no new ones.
func killTree(pid int) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
	out, _ := exec.Command("pgrep", "-P", strconv.Itoa(pid)).Output()
	for _, f := range strings.Fields(string(out)) {
		if child, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(child, syscall.SIGKILL)
		}
	}
}

// noneRunning reports whether every Patroni started has exited.
func (p *Patroni) noneRunning() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.nodes {
		if n.cmd == nil {
			continue
		}
		select {
		case <-n.exited:
		default:
			return false
		}
	}
	return true
}

// NodeAddr is node i's PostgreSQL host:port.
func (p *Patroni) NodeAddr(i int) string { return "127.0.0.1:" + strconv.Itoa(p.nodes[i].pgPort) }

// NodePort is node i's PostgreSQL port.
func (p *Patroni) NodePort(i int) int { return p.nodes[i].pgPort }

// NodeURL is node i's postgres:// URL.
func (p *Patroni) NodeURL(i int) string {
	return "postgres://postgres@" + p.NodeAddr(i) + "/postgres?sslmode=disable"
}

// APIURL is node i's Patroni REST API.
func (p *Patroni) APIURL(i int) string { return "http://127.0.0.1:" + strconv.Itoa(p.nodes[i].apiPort) }

// URL is a multi-host URL of every node with the given
// target_session_attrs (read-write, primary, standby, prefer-standby, any).
func (p *Patroni) URL(targetSessionAttrs string) string {
	hosts := make([]string, len(p.nodes))
	for i := range p.nodes {
		hosts[i] = p.NodeAddr(i)
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/postgres?sslmode=disable&target_session_attrs=" + targetSessionAttrs
}

// Nodes is the number of nodes.
func (p *Patroni) Nodes() int { return len(p.nodes) }

// PatroniMember is a member of the cluster as Patroni's /cluster reports it.
type PatroniMember struct {
	Name  string `json:"name"`
	Role  string `json:"role"`  // leader, replica, sync_standby
	State string `json:"state"` // running (streaming in Patroni 3.0.4 and later), stopped, ...
}

// Members is the cluster as the first node that answers reports it.
func (p *Patroni) Members(ctx context.Context) ([]PatroniMember, error) {
	var lastErr error
	for i := range p.nodes {
		var c struct {
			Members []PatroniMember `json:"members"`
		}
		if lastErr = p.getJSON(ctx, p.APIURL(i)+"/cluster", &c); lastErr == nil {
			return c.Members, nil
		}
	}
	return nil, lastErr
}

// index is the node of a member, -1 when none.
func (p *Patroni) index(m PatroniMember) int {
	for i, n := range p.nodes {
		if n.name == m.Name {
			return i
		}
	}
	return -1
}

// Leader is the node that leads and runs now, -1 when none does.
func (p *Patroni) Leader(ctx context.Context) (int, error) {
	members, err := p.Members(ctx)
	if err != nil {
		return -1, err
	}
	for _, m := range members {
		if m.Role == "leader" && m.State == "running" {
			return p.index(m), nil
		}
	}
	return -1, nil
}

// WaitLeader waits until a node other than except leads, runs and accepts
// writes, and returns it.
func (p *Patroni) WaitLeader(ctx context.Context, except int) (int, error) {
	return waitFor(ctx, 20*time.Millisecond, func() (int, bool, error) {
		if p.noneRunning() {
			return -1, false, errors.New("pgtest: no patroni runs")
		}
		i, err := p.Leader(ctx)
		if err != nil || i < 0 || i == except {
			return -1, false, nil
		}
		var readOnly bool
		if err := queryOnce(ctx, p.NodeURL(i), `SELECT pg_is_in_recovery()`, &readOnly); err != nil || readOnly {
			return -1, false, nil
		}
		return i, true, nil
	}, "a new leader")
}

// WaitStreaming waits until node i is a replica that streams from the
// leader: Patroni lists it as one, and its WAL receiver streams.
func (p *Patroni) WaitStreaming(ctx context.Context, i int) error {
	return p.waitMember(ctx, p.nodes[i].name+" streaming", func(m PatroniMember) bool {
		if p.index(m) != i || m.Role == "leader" {
			return false
		}
		var streaming bool
		err := queryOnce(ctx, p.NodeURL(i), `SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')`, &streaming)
		return err == nil && streaming
	})
}

// waitSyncStandby waits until Patroni has named a synchronous standby.
func (p *Patroni) waitSyncStandby(ctx context.Context) error {
	return p.waitMember(ctx, "a synchronous standby", func(m PatroniMember) bool { return m.Role == "sync_standby" })
}

// waitMember waits until a running member satisfies ok.
func (p *Patroni) waitMember(ctx context.Context, what string, ok func(PatroniMember) bool) error {
	_, err := waitFor(ctx, 50*time.Millisecond, func() (int, bool, error) {
		members, err := p.Members(ctx)
		if err != nil {
			return 0, false, nil
		}
		for _, m := range members {
			if (m.State == "running" || m.State == "streaming") && ok(m) {
				return 0, true, nil
			}
		}
		return 0, false, nil
	}, what)
	return err
}

// Switchover asks Patroni for a planned switchover from the current leader
// to node to, and returns once Patroni reports it done.
func (p *Patroni) Switchover(ctx context.Context, to int) error {
	leader, err := p.Leader(ctx)
	if err != nil {
		return err
	}
	if leader < 0 {
		return errors.New("pgtest: switchover: no leader")
	}
	body := fmt.Sprintf(`{"leader": %q, "candidate": %q}`, p.nodes[leader].name, p.nodes[to].name)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.APIURL(leader)+"/switchover", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: time.Minute, Transport: p.client.Transport}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("pgtest: switchover: %w", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pgtest: switchover: %s: %s", resp.Status, out)
	}
	return nil
}

// Log is node i's Patroni log and PostgreSQL's, for a failing test's
// message.
func (p *Patroni) Log(i int) string {
	n := p.nodes[i]
	patroni, _ := os.ReadFile(filepath.Join(n.dir, "patroni.log"))
	return tail(patroni, 4000)
}

func (p *Patroni) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Close kills every node and etcd and removes the temp dir.
func (p *Patroni) Close() error {
	p.mu.Lock()
	nodes := p.nodes
	p.mu.Unlock()
	for i, n := range nodes {
		if n.cmd != nil {
			_ = p.Kill(i)
		} else if pid := postmasterPID(filepath.Join(n.dir, "data")); pid > 0 {
			killTree(pid) // a postmaster that outlived its killed Patroni
		}
	}
	if p.etcd != nil {
		_ = p.etcd.Process.Kill()
		_ = p.etcd.Wait()
	}
	p.guard.stop()
	return os.RemoveAll(p.dir)
}

// patroniWatchdogScript kills whatever still runs from the temp dir (named
// in the environment, so that the script's own command line does not
// match) and removes it, once this process has ended.
const patroniWatchdogScript = `read -r line; pkill -KILL -f "$PGKIT_PATRONI_DIR/"; sleep 1; pkill -KILL -f "$PGKIT_PATRONI_DIR/"; rm -rf "$PGKIT_PATRONI_DIR"`

func startPatroniWatchdog(dir string) (*watchdog, error) {
	cmd := exec.Command("/bin/sh", "-c", patroniWatchdogScript)
	cmd.Env = append(serverEnv(), "PGKIT_PATRONI_DIR="+dir)
	detach(cmd)
	return runWatchdog(cmd)
}

// waitFor polls f every period until it reports done, an error, or ctx
// ends.
func waitFor[T any](ctx context.Context, period time.Duration, f func() (T, bool, error), what string) (T, error) {
	for {
		v, done, err := f()
		if err != nil || done {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("pgtest: waiting for %s: %w", what, ctx.Err())
		case <-time.After(period):
		}
	}
}
