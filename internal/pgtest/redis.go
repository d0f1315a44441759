package pgtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// RedisServer is a redis-server child process of this process, on a free
// 127.0.0.1 port, with persistence off. It is safe for concurrent use.
type RedisServer struct {
	bin  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *limitedBuffer
	exited chan struct{} // closed when the running process has exited
}

// StartRedisServer starts a redis-server found on PATH as a child process
// on a free 127.0.0.1 port (`--port N --bind 127.0.0.1 --save "" --appendonly
// no`) and returns once it answers PING. The caller must Stop it.
func StartRedisServer(ctx context.Context) (*RedisServer, error) {
	return startRedisServer(ctx, os.Getenv("PATH"))
}

func startRedisServer(ctx context.Context, pathList string) (*RedisServer, error) {
	bin, err := lookPathIn(pathList, "redis-server")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	var last error
	for attempt := 0; attempt < 3; attempt++ { // the free port may be taken meanwhile
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		r := &RedisServer{bin: bin, port: port}
		if last = r.start(ctx); last == nil {
			return r, nil
		}
	}
	return nil, last
}

// StartRedis starts a redis-server of the test's own (see
// StartRedisServer) and stops it in t.Cleanup. The test fails at once if
// there is no redis-server binary.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := StartRedisServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// Addr returns the server's address, 127.0.0.1:PORT.
func (r *RedisServer) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
}

// URL returns the server's URL, redis://127.0.0.1:PORT/0.
func (r *RedisServer) URL() string { return "redis://" + r.Addr() + "/0" }

// Stop kills the server and waits until it has exited, so its port is
// free. Stopping a stopped server does nothing. The data is lost: the
// server keeps none.
func (r *RedisServer) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgtest: kill redis-server: %w", err)
	}
	<-r.exited
	r.cmd = nil
	return nil
}

// Start starts a stopped server again on the same port and returns once
// it answers PING. Starting a running server does nothing.
func (r *RedisServer) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.start(ctx)
}

func (r *RedisServer) start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	// Not CommandContext: the server outlives the call; ctx bounds the wait.
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no")
	cmd.Dir = os.TempDir()
	out := &limitedBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	err := waitRedis(ctx, r.Addr(), exited)
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("pgtest: redis-server on port %d: %w\n%s", r.port, err, tail(out.Bytes(), 2000))
	}
	r.cmd, r.out, r.exited = cmd, out, exited
	return nil
}

// waitRedis polls addr with PING until it answers PONG, the process
// exits, or ctx ends.
func waitRedis(ctx context.Context, addr string, exited <-chan struct{}) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = pingRedis(ctx, addr); last == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before answering PING")
		case <-ctx.Done():
			return fmt.Errorf("no answer to PING: %w (last error: %w)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// pingRedis sends one PING on a fresh connection and expects +PONG.
func pingRedis(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// limitedBuffer keeps the last max bytes written to it; it is safe for
// concurrent use (os/exec copies output on its own goroutine).
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

// Bytes returns a copy of what the buffer holds.
func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
