package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Images the Docker path runs.
const (
	// PostgresImage is the image StartDocker runs.
	PostgresImage = "postgres:15-alpine"
	// RedisImage is the image RedisURL runs when it has to use Docker.
	RedisImage = "redis:7-alpine"
)

// dockerLabel marks the containers pgtest runs, so leftovers can be found:
// docker rm -f -v $(docker ps -aq --filter label=pgkit.pgtest).
const dockerLabel = "pgkit.pgtest"

// docker runs the docker command-line client. pgtest drives Docker through
// it, not through a Go client, so the module graph of pgkit holds no
// Docker packages. The engine must be local: ports are published on
// 127.0.0.1.
type docker struct {
	bin string // the docker program
}

// dockerClient finds the docker program on PATH.
func dockerClient() (docker, error) {
	bin, err := exec.LookPath("docker")
	if err != nil {
		return docker{}, errors.New("no Docker engine: the docker command is not on PATH")
	}
	return docker{bin: bin}, nil
}

// run runs docker with args and returns its standard output, trimmed. Its
// error carries the command's standard error.
func (d docker) run(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", args[0], err, strings.TrimSpace(tail(stderr.Bytes(), 2000)))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// postgresRunArgs are the arguments of `docker run` for a PostgreSQL
// container: detached, the server port published on a free 127.0.0.1 port,
// trust authentication, the fast settings (listening on all addresses, as
// a container must) and then opts' settings.
func postgresRunArgs(o options) []string {
	args := []string{"run", "-d", "--label", dockerLabel, "-p", "127.0.0.1::5432",
		"-e", "POSTGRES_USER=postgres", "-e", "POSTGRES_DB=postgres", "-e", "POSTGRES_HOST_AUTH_METHOD=trust",
		PostgresImage, "postgres"}
	for i := 0; i < len(fastSettings); i += 2 {
		if !strings.HasPrefix(fastSettings[i+1], "listen_addresses=") {
			args = append(args, fastSettings[i], fastSettings[i+1])
		}
	}
	return append(args, o.postgresArgs()...)
}

// redisRunArgs are the arguments of `docker run` for a Redis container.
func redisRunArgs() []string {
	return []string{"run", "-d", "--label", dockerLabel, "-p", "127.0.0.1::6379", RedisImage}
}

// container is one container pgtest started: its id and the docker client.
type container struct {
	docker docker
	id     string
	dog    *watchdog
}

// startContainer runs `docker run` with args and starts a watchdog that
// removes the container if this process ends without closing it.
func (d docker) startContainer(ctx context.Context, args []string) (*container, error) {
	id, err := d.run(ctx, args...)
	if err != nil {
		return nil, err
	}
	if id == "" || strings.ContainsAny(id, " \n") {
		return nil, fmt.Errorf("docker run printed %q, not a container id", id)
	}
	c := &container{docker: d, id: id}
	if c.dog, err = startDockerWatchdog(d.bin, id); err != nil {
		_ = c.remove(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// hostPort returns the host address docker publishes containerPort on
// (such as "5432/tcp").
func (c *container) hostPort(ctx context.Context, containerPort string) (string, int, error) {
	out, err := c.docker.run(ctx, "port", c.id, containerPort)
	if err != nil {
		return "", 0, err
	}
	return parseDockerPort(out)
}

// remove stops the watchdog, then removes the container and its anonymous
// volumes (the postgres image declares one for its data).
func (c *container) remove(ctx context.Context) error {
	c.dog.stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := c.docker.run(ctx, "rm", "-f", "-v", c.id)
	return err
}

// parseDockerPort reads the output of `docker port ID PORT`, one
// host:port a line ("127.0.0.1:49153", "[::]:49153"), and returns the first
// IPv4 address, else the first, with an unspecified host (0.0.0.0, ::)
// replaced by the loopback address.
func parseDockerPort(out string) (string, int, error) {
	var host string
	var port int
	for line := range strings.Lines(out) {
		h, p, err := net.SplitHostPort(strings.TrimSpace(line))
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			continue
		}
		ip := net.ParseIP(h)
		if ip == nil {
			continue
		}
		if ip.IsUnspecified() {
			h = "127.0.0.1"
			if ip.To4() == nil {
				h = "::1"
			}
		}
		if host == "" || (ip.To4() != nil && net.ParseIP(host).To4() == nil) {
			host, port = h, n
		}
	}
	if host == "" {
		return "", 0, fmt.Errorf("docker port printed no host address: %q", out)
	}
	return host, port, nil
}

// StartDocker starts a throwaway PostgreSQL server in a Docker container
// (postgres:15-alpine, trust authentication, user postgres) with the
// docker command, published on a free 127.0.0.1 port. It returns an error
// quickly when there is no docker command or no engine answers. Stop and
// Start keep the container's data, but Docker may publish another port
// after Start: call URL again. The caller must Close it; if this process
// ends first, a watchdog removes the container.
func StartDocker(ctx context.Context, opts ...Option) (*Cluster, error) {
	if err := dockerAvailable(ctx); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	d, err := dockerClient()
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return startDocker(ctx, d, buildOptions(opts))
}

func startDocker(ctx context.Context, d docker, o options) (*Cluster, error) {
	ctr, err := d.startContainer(ctx, postgresRunArgs(o))
	if err != nil {
		return nil, fmt.Errorf("pgtest: start %s in Docker: %w", PostgresImage, err)
	}
	dc := &dockerCluster{ctr: ctr}
	host, port, err := dc.ready(ctx)
	if err != nil {
		_ = ctr.remove(context.WithoutCancel(ctx))
		return nil, err
	}
	return &Cluster{host: host, port: port, running: true, impl: dc}, nil
}

// dockerCluster is a cluster in a container.
type dockerCluster struct {
	ctr *container
}

// ready returns the published address once the server accepts
// connections. The image's entrypoint first runs a server for its setup
// that listens on no TCP port, so a query over TCP answers only the final
// one.
func (dc *dockerCluster) ready(ctx context.Context) (string, int, error) {
	host, port, err := dc.ctr.hostPort(ctx, "5432/tcp")
	if err != nil {
		return "", 0, fmt.Errorf("pgtest: container port: %w", err)
	}
	if err := waitAccepting(ctx, (&Cluster{host: host, port: port}).URL(), startTimeout); err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func (dc *dockerCluster) stop(ctx context.Context) error {
	// docker stop sends SIGTERM, a smart shutdown, and SIGKILL after -t.
	if _, err := dc.ctr.docker.run(ctx, "stop", "-t", "30", dc.ctr.id); err != nil {
		return fmt.Errorf("pgtest: stop container: %w", err)
	}
	return nil
}

func (dc *dockerCluster) start(ctx context.Context) (string, int, error) {
	if _, err := dc.ctr.docker.run(ctx, "start", dc.ctr.id); err != nil {
		return "", 0, fmt.Errorf("pgtest: start container: %w", err)
	}
	return dc.ready(ctx)
}

func (dc *dockerCluster) close(ctx context.Context) error {
	if err := dc.ctr.remove(ctx); err != nil {
		return fmt.Errorf("pgtest: remove container: %w", err)
	}
	return nil
}

// startDockerRedis runs a Redis container and returns its URL once it
// answers PING; the caller removes the container.
func startDockerRedis(ctx context.Context, d docker) (string, *container, error) {
	ctr, err := d.startContainer(ctx, redisRunArgs())
	if err != nil {
		return "", nil, err
	}
	host, port, err := ctr.hostPort(ctx, "6379/tcp")
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, startTimeout)
		err = waitRedis(ctx, net.JoinHostPort(host, strconv.Itoa(port)), nil)
		cancel()
	}
	if err != nil {
		_ = ctr.remove(context.WithoutCancel(ctx))
		return "", nil, err
	}
	return "redis://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/0", ctr, nil
}

var dockerCheck struct {
	once sync.Once
	err  error
}

// dockerAvailable reports, once per process, whether the docker command is
// on PATH and an engine answers it.
func dockerAvailable(ctx context.Context) error {
	dockerCheck.once.Do(func() { dockerCheck.err = checkDocker(ctx) })
	return dockerCheck.err
}

// checkDocker asks the engine for its version, which fails at once when
// nothing listens where the client looks (DOCKER_HOST, the current
// context, the default socket).
func checkDocker(ctx context.Context) error {
	d, err := dockerClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := d.run(ctx, "version", "--format", "{{.Server.Version}}"); err != nil {
		return fmt.Errorf("no Docker engine: %w", err)
	}
	return nil
}
