package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisClusterNodes is how many masters StartRedisCluster starts.
const redisClusterNodes = 3

// redisClusterBusOffset is how far above its client port a Redis Cluster
// node listens for the other nodes (its cluster bus port).
const redisClusterBusOffset = 10000

// StartRedisCluster starts a three-node Redis Cluster of the test's own and
// returns the nodes' addresses (127.0.0.1:PORT), for
// redis.ClusterOptions.Addrs; t.Cleanup kills the nodes and waits for them.
//
// The nodes are three redis-server child processes in cluster mode
// (--cluster-enabled yes), each on a free 127.0.0.1 port whose cluster bus
// port (port+10000) is free too, each with its nodes.conf in a t.TempDir()
// of its own, with persistence off (--save "" --appendonly no). They are
// joined with `redis-cli --cluster create ... --cluster-replicas 0
// --cluster-yes`: three masters and no replicas, each owning about a third
// of the 16384 hash slots in one contiguous range that redis-cli chooses
// (0-5460, 5461-10922 and 10923-16383). StartRedisCluster returns once every
// node reports cluster_state:ok, cluster_slots_assigned:16384 and knows the
// other two, so keys in different slots live on different servers and a
// client meets the real cluster's rules: a multi-key command whose keys are
// in different slots is refused (CROSSSLOT), a command sent to the wrong
// node is redirected (MOVED).
//
// The test fails at once if there is no redis-server or no redis-cli (on
// PATH or beside redis-server), and, with the tail of the servers' and
// redis-cli's output, if the cluster is not up within 30s.
func StartRedisCluster(t testing.TB) []string {
	t.Helper()
	return startRedisCluster(t, os.Getenv("PATH"))
}

func startRedisCluster(t testing.TB, pathList string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, err := lookPathIn(pathList, "redis-server")
	if err != nil {
		t.Fatalf("pgtest: a Redis Cluster needs a redis-server binary: %v", err)
	}
	cli, err := lookPathIn(pathList+string(os.PathListSeparator)+filepath.Dir(server), "redis-cli")
	if err != nil {
		t.Fatalf("pgtest: a Redis Cluster needs redis-cli, to join its nodes: %v", err)
	}

	var nodes []*redisClusterNode
	cliOut := &limitedBuffer{max: 16 << 10}
	// output returns the tail of every node's output and of redis-cli's.
	output := func() string {
		var b strings.Builder
		for _, n := range nodes {
			fmt.Fprintf(&b, "--- redis-server on port %d:\n%s\n", n.port, tail(n.out.Bytes(), 1500))
		}
		if out := cliOut.Bytes(); len(out) > 0 {
			fmt.Fprintf(&b, "--- redis-cli --cluster create:\n%s\n", tail(out, 2000))
		}
		return b.String()
	}
	fail := func(err error) {
		t.Helper()
		t.Fatalf("pgtest: Redis Cluster: %v\n%s", err, output())
	}

	taken := map[int]bool{} // the client and bus ports of the nodes started so far
	for range redisClusterNodes {
		n, err := startRedisClusterNode(ctx, t, server, taken)
		if err != nil {
			fail(err)
		}
		nodes = append(nodes, n)
		taken[n.port], taken[n.port+redisClusterBusOffset] = true, true
	}
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.addr()
	}

	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	create := exec.CommandContext(ctx, cli, args...)
	create.Stdout, create.Stderr = cliOut, cliOut
	create.Env = append(os.Environ(), "TERM=dumb") // no colour codes in the output
	create.WaitDelay = time.Second
	dieWithParent(create)
	if err := create.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w, after 30s: %w", err, ctx.Err())
		}
		fail(fmt.Errorf("redis-cli --cluster create: %w", err))
	}

	// redis-cli returns once the nodes agree on the configuration; wait
	// until each of them also says the cluster is ok, with every slot served.
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": "16384",
		"cluster_slots_ok":       "16384",
		"cluster_known_nodes":    strconv.Itoa(redisClusterNodes),
		"cluster_size":           strconv.Itoa(redisClusterNodes),
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var notReady error
		for _, n := range nodes {
			select {
			case <-n.exited:
				fail(fmt.Errorf("redis-server on port %d exited", n.port))
			default:
			}
			reply, err := redisCommand(ctx, n.addr(), "CLUSTER INFO")
			if err != nil {
				notReady = fmt.Errorf("CLUSTER INFO on %s: %w", n.addr(), err)
				break
			}
			if field, got, ok := firstMismatch(redisInfo(reply), want); !ok {
				notReady = fmt.Errorf("%s reports %s:%s, want %s (CLUSTER INFO: %q)", n.addr(), field, got, want[field], reply)
				break
			}
		}
		if notReady == nil {
			return addrs
		}
		select {
		case <-ctx.Done():
			fail(fmt.Errorf("the cluster did not come up: %w (last: %w)", ctx.Err(), notReady))
		case <-tick.C:
		}
	}
}

// redisClusterNode is one redis-server of StartRedisCluster.
type redisClusterNode struct {
	port   int
	cmd    *exec.Cmd
	out    *limitedBuffer
	exited chan struct{} // closed when the process has exited
}

func (n *redisClusterNode) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port))
}

// stop kills the node and waits until it has exited.
func (n *redisClusterNode) stop() {
	_ = n.cmd.Process.Kill()
	<-n.exited
}

// startRedisClusterNode starts one redis-server in cluster mode, on a port
// whose bus port is free and neither of which is in taken, and returns
// once it answers. t.Cleanup stops it. Another process may take the port
// between the check and the start, so it tries a few ports.
func startRedisClusterNode(ctx context.Context, t testing.TB, bin string, taken map[int]bool) (*redisClusterNode, error) {
	t.Helper()
	var errs []error
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		port, err := freeClusterPort(taken)
		if err != nil {
			return nil, err
		}
		n := &redisClusterNode{port: port, out: &limitedBuffer{max: 16 << 10}, exited: make(chan struct{})}
		// Not CommandContext: the server outlives the call; ctx bounds the wait.
		n.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--daemonize", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		n.cmd.Dir = t.TempDir() // nodes.conf goes here
		n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
		dieWithParent(n.cmd)
		if err := n.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start redis-server in cluster mode: %w", err)
		}
		go func() {
			_ = n.cmd.Wait()
			close(n.exited)
		}()
		t.Cleanup(n.stop)
		err = waitRedis(ctx, n.addr(), n.exited)
		if err == nil {
			// The PONG may have come from another server that took the
			// port first (ours then exits): check that it is ours.
			err = n.checkPID(ctx)
		}
		if err == nil {
			return n, nil
		}
		n.stop()
		errs = append(errs, fmt.Errorf("redis-server in cluster mode on port %d: %w\n%s", port, err, tail(n.out.Bytes(), 1500)))
	}
	return nil, errors.Join(append(errs, ctx.Err())...)
}

// checkPID checks that the server answering on the node's port is the
// node's process.
func (n *redisClusterNode) checkPID(ctx context.Context) error {
	reply, err := redisCommand(ctx, n.addr(), "INFO server")
	if err != nil {
		return err
	}
	if pid := redisInfo(reply)["process_id"]; pid != strconv.Itoa(n.cmd.Process.Pid) {
		return fmt.Errorf("the server on the port is process %q, not ours (%d)", pid, n.cmd.Process.Pid)
	}
	return nil
}

// freeClusterPort returns a port that is free on 127.0.0.1 and whose
// cluster bus port, port+10000, is free too, neither of them in taken.
func freeClusterPort(taken map[int]bool) (int, error) {
	for range 100 {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		bus := port + redisClusterBusOffset
		if bus > 65535 || taken[port] || taken[bus] {
			continue
		}
		free, err := portFree(bus)
		if err != nil {
			return 0, err
		}
		if free {
			return port, nil
		}
	}
	return 0, errors.New("pgtest: found no free port whose cluster bus port (port+10000) is free too")
}

// redisInfo parses the "field:value" lines of an INFO or CLUSTER INFO reply.
func redisInfo(reply string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(reply, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m
}

// firstMismatch returns the first field of want (in name order) that info
// lacks or holds another value for, and the value info holds.
func firstMismatch(info, want map[string]string) (field, got string, ok bool) {
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if info[k] != want[k] {
			return k, info[k], false
		}
	}
	return "", "", true
}

// redisCommand sends one inline command on a fresh connection and returns
// the reply: a status or error line as is, a bulk string's content.
func redisCommand(ctx context.Context, addr, command string) (string, error) {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(command + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return line, nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return line, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", err
	}
	return string(body), nil
}
