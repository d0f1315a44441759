package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseDockerPort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		out  string
		host string
		port int
	}{
		{"127.0.0.1:49153\n", "127.0.0.1", 49153},
		{"0.0.0.0:49153\n[::]:49153\n", "127.0.0.1", 49153},
		{"[::]:49154\n", "::1", 49154},
		{"[::1]:5\n127.0.0.1:6\n", "127.0.0.1", 6}, // IPv4 first
		{"  127.0.0.1:7  \r\n", "127.0.0.1", 7},
	} {
		host, port, err := parseDockerPort(tc.out)
		require.NoError(t, err, "%q", tc.out)
		require.Equal(t, tc.host, host, "%q", tc.out)
		require.Equal(t, tc.port, port, "%q", tc.out)
	}
	for _, out := range []string{"", "\n", "Error: No public port '5432/tcp' published", "127.0.0.1:0", "127.0.0.1:70000", "localhost:5432"} {
		_, _, err := parseDockerPort(out)
		require.Error(t, err, "%q", out)
	}
}

func TestDockerRunArgs(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"run", "-d", "--label", "pgkit.pgtest", "-p", "127.0.0.1::5432",
		"-e", "POSTGRES_USER=postgres", "-e", "POSTGRES_DB=postgres", "-e", "POSTGRES_HOST_AUTH_METHOD=trust",
		"postgres:15-alpine", "postgres",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "wal_level=logical",
	}, postgresRunArgs(buildOptions([]Option{WithSetting("max_connections", "300"), WithSetting("wal_level", "logical")})))
	require.Equal(t, []string{"run", "-d", "--label", "pgkit.pgtest", "-p", "127.0.0.1::6379", "redis:7-alpine"}, redisRunArgs())
}

// fakeDocker writes a docker program that logs its arguments, one call a
// line, and answers run with a container id and port with portOut; a
// command named in fail exits 1 with a message. It returns the client and
// a function reading the log.
func fakeDocker(t *testing.T, portOut string, fail ...string) (docker, func() []string) {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "calls.log")
	failCases := ""
	for _, f := range fail {
		failCases += fmt.Sprintf("%s) echo 'docker %s failed (test)' >&2; exit 1 ;;\n", f, f)
	}
	script := fmt.Sprintf(`#!/bin/sh
echo "$*" >>%s
case "$1" in
%srun) echo 0123456789ab ;;
port) printf '%%s\n' %s ;;
esac
`, shellQuote(logFile), failCases, shellQuote(portOut))
	bin := filepath.Join(dir, "docker")
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	return docker{bin: bin}, func() []string {
		b, err := os.ReadFile(logFile)
		require.NoError(t, err)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

// TestDockerClusterCommands runs the Docker path with a docker program
// that logs what it is asked and publishes the shared server's port, so
// the cluster is real: it checks each command line and that the cluster
// answers on the published address.
func TestDockerClusterCommands(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	u, err := url.Parse(AdminURL(t))
	require.NoError(t, err)
	if u.Port() == "" { // keyword/value or default port: the shared server's own address
		u.Host = net.JoinHostPort(u.Hostname(), "5432")
	}
	d, calls := fakeDocker(t, u.Host)

	c, err := startDocker(ctx, d, buildOptions([]Option{WithSetting("max_connections", "300")}))
	require.NoError(t, err)
	run := "run " + strings.Join(postgresRunArgs(buildOptions([]Option{WithSetting("max_connections", "300")}))[1:], " ")
	require.Equal(t, []string{run, "port 0123456789ab 5432/tcp"}, calls())
	require.Equal(t, "postgres://postgres@"+u.Host+"/postgres?sslmode=disable", c.URL())
	var one int
	require.NoError(t, connect(t, ctx, c.URL()).QueryRow(ctx, "SELECT 1").Scan(&one))

	require.NoError(t, c.Stop(ctx))
	require.NoError(t, c.Start(ctx))
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "a second Close does nothing")
	require.Equal(t, []string{run, "port 0123456789ab 5432/tcp",
		"stop -t 30 0123456789ab", "start 0123456789ab", "port 0123456789ab 5432/tcp",
		"rm -f -v 0123456789ab"}, calls(), "the watchdog did not act after Close")
}

func TestDockerClusterFailures(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)

	d, calls := fakeDocker(t, "", "run")
	_, err := startDocker(ctx, d, options{})
	require.ErrorContains(t, err, "pgtest: start postgres:15-alpine in Docker: docker run: exit status 1: docker run failed (test)")
	require.Len(t, calls(), 1, "nothing to remove")

	// docker port fails: the container is removed.
	d, calls = fakeDocker(t, "", "port")
	_, err = startDocker(ctx, d, options{})
	require.ErrorContains(t, err, "pgtest: container port: docker port: exit status 1: docker port failed (test)")
	require.Equal(t, "rm -f -v 0123456789ab", calls()[len(calls())-1])

	// Nothing accepts connections where docker port points.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	d, calls = fakeDocker(t, addr)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = startDocker(ctx, d, options{})
	require.ErrorContains(t, err, "did not accept connections")
	require.Equal(t, "rm -f -v 0123456789ab", calls()[len(calls())-1])
}

func TestDockerRedisCommands(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	u, err := url.Parse(RedisURL(t))
	require.NoError(t, err)
	d, calls := fakeDocker(t, u.Host)

	got, ctr, err := startDockerRedis(ctx, d)
	require.NoError(t, err)
	require.Equal(t, "redis://"+u.Host+"/0", got)
	require.NoError(t, ctr.remove(ctx))
	require.Equal(t, []string{"run -d --label pgkit.pgtest -p 127.0.0.1::6379 redis:7-alpine",
		"port 0123456789ab 6379/tcp", "rm -f -v 0123456789ab"}, calls())
}

// TestDockerWatchdogRemovesTheContainer: when this process ends without
// Close, which closes the watchdog's standard input, the watchdog removes
// the container.
func TestDockerWatchdogRemovesTheContainer(t *testing.T) {
	t.Parallel()
	d, calls := fakeDocker(t, "")
	dog, err := startDockerWatchdog(d.bin, "fedcba987654")
	require.NoError(t, err)
	require.NoError(t, dog.stdin.Close()) // as when this process exits
	require.NoError(t, dog.cmd.Wait())
	require.Equal(t, []string{"rm -f -v fedcba987654"}, calls())
}

// TestDockerCheckFailsFast shows that without a docker command, or with
// one that finds no engine, the check returns an error at once.
func TestDockerCheckFailsFast(t *testing.T) {
	ctx := testContext(t)
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/docker.sock")

	t.Setenv("PATH", t.TempDir())
	start := time.Now()
	err := checkDocker(ctx)
	require.ErrorContains(t, err, "no Docker engine: the docker command is not on PATH")
	require.Less(t, time.Since(start), 5*time.Second)

	d, _ := fakeDocker(t, "", "version")
	t.Setenv("PATH", filepath.Dir(d.bin))
	err = checkDocker(ctx)
	require.ErrorContains(t, err, "no Docker engine: docker version: exit status 1: docker version failed (test)")
}
