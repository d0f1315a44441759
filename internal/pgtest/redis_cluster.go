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
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartRedisCluster starts a one-node Redis Cluster of the test's own: a
// redis-server child process in cluster mode on a free 127.0.0.1 port,
// owning all 16384 hash slots, with persistence off; t.Cleanup stops it. It
// returns the node's address, for redis.ClusterOptions.Addrs.
//
// One node is enough to hold a client to the rules of a cluster: the
// server refuses a multi-key command whose keys are in different hash
// slots (CROSSSLOT) there as on a cluster of many. The test fails at once if
// there is no redis-server binary (cluster mode needs Redis 7 for
// CLUSTER ADDSLOTSRANGE).
func StartRedisCluster(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bin, err := lookPathIn(os.Getenv("PATH"), "redis-server")
	if err != nil {
		t.Fatalf("pgtest: a Redis Cluster needs a redis-server binary: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	cmd.Dir = t.TempDir() // nodes.conf goes here
	out := &limitedBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("pgtest: start redis-server in cluster mode: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	fail := func(err error) {
		t.Helper()
		t.Fatalf("pgtest: redis-server in cluster mode on port %d: %v\n%s", port, err, tail(out.Bytes(), 2000))
	}
	if err := waitRedis(ctx, addr, exited); err != nil {
		fail(err)
	}
	if reply, err := redisCommand(ctx, addr, "CLUSTER ADDSLOTSRANGE 0 16383"); err != nil || reply != "+OK" {
		fail(fmt.Errorf("CLUSTER ADDSLOTSRANGE answered %q: %w", reply, err))
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		reply, err := redisCommand(ctx, addr, "CLUSTER INFO")
		if err == nil && strings.Contains(reply, "cluster_state:ok") {
			return addr
		}
		select {
		case <-ctx.Done():
			fail(fmt.Errorf("the cluster never reported cluster_state:ok (last: %q): %w", reply, errors.Join(ctx.Err(), err)))
		case <-exited:
			fail(errors.New("exited"))
		case <-tick.C:
		}
	}
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
