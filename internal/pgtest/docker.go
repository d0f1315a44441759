package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// PostgresImage is the image StartDocker runs.
const PostgresImage = "postgres:15-alpine"

// dockerUsed records that this process ran a container, so Main knows to
// allow the goroutines testcontainers keeps for the life of the process
// (its reaper connection, the Docker client's idle HTTP connections).
var dockerUsed atomic.Bool

// StartDocker starts a throwaway PostgreSQL server in a Docker container
// (postgres:15-alpine, trust authentication, user postgres) through
// testcontainers-go. It returns an error quickly, without a panic, when no
// Docker engine answers. Stop and Start keep the container's data, but
// Docker may map a different host port after Start: call URL again. The
// caller must Close it.
func StartDocker(ctx context.Context, opts ...Option) (_ *Cluster, err error) {
	if err := dockerAvailable(ctx); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	o := buildOptions(opts)
	cmd := []string{"postgres"}
	for i := 0; i < len(fastSettings); i += 2 {
		if !strings.HasPrefix(fastSettings[i+1], "listen_addresses=") { // in a container it must listen on all
			cmd = append(cmd, fastSettings[i], fastSettings[i+1])
		}
	}
	cmd = append(cmd, o.postgresArgs()...)

	dockerUsed.Store(true)
	var ctr *tcpostgres.PostgresContainer
	err = guardPanic(func() error {
		var err error
		ctr, err = tcpostgres.Run(ctx, PostgresImage,
			testcontainers.WithEnv(map[string]string{
				"POSTGRES_USER":             "postgres",
				"POSTGRES_DB":               "postgres",
				"POSTGRES_HOST_AUTH_METHOD": "trust",
			}),
			testcontainers.WithCmd(cmd...),
			tcpostgres.BasicWaitStrategies(),
		)
		return err
	})
	dc := &dockerCluster{ctr: ctr}
	if err != nil {
		if ctr != nil {
			_ = dc.close(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("pgtest: start %s in Docker: %w", PostgresImage, err)
	}
	host, port, err := dc.endpoint(ctx)
	if err == nil {
		err = waitAccepting(ctx, (&Cluster{host: host, port: port}).URL(), startTimeout)
	}
	if err != nil {
		_ = dc.close(context.WithoutCancel(ctx))
		return nil, err
	}
	return &Cluster{host: host, port: port, running: true, impl: dc}, nil
}

// dockerCluster is a cluster in a testcontainers container.
type dockerCluster struct {
	ctr *tcpostgres.PostgresContainer
}

func (dc *dockerCluster) endpoint(ctx context.Context) (string, int, error) {
	host, err := dc.ctr.Host(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("pgtest: container host: %w", err)
	}
	p, err := dc.ctr.MappedPort(ctx, "5432/tcp")
	if err != nil {
		return "", 0, fmt.Errorf("pgtest: container port: %w", err)
	}
	return host, int(p.Num()), nil
}

func (dc *dockerCluster) stop(ctx context.Context) error {
	timeout := 30 * time.Second // docker stop sends SIGTERM: a smart shutdown
	if err := guardPanic(func() error { return dc.ctr.Stop(ctx, &timeout) }); err != nil {
		return fmt.Errorf("pgtest: stop container: %w", err)
	}
	return nil
}

func (dc *dockerCluster) start(ctx context.Context) (string, int, error) {
	if err := guardPanic(func() error { return dc.ctr.Start(ctx) }); err != nil {
		return "", 0, fmt.Errorf("pgtest: start container: %w", err)
	}
	host, port, err := dc.endpoint(ctx)
	if err != nil {
		return "", 0, err
	}
	if err := waitAccepting(ctx, (&Cluster{host: host, port: port}).URL(), startTimeout); err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func (dc *dockerCluster) close(context.Context) error {
	if err := guardPanic(func() error { return testcontainers.TerminateContainer(dc.ctr) }); err != nil {
		return fmt.Errorf("pgtest: remove container: %w", err)
	}
	return nil
}

var dockerCheck struct {
	once sync.Once
	err  error
}

// dockerAvailable reports, once per process, whether a Docker engine
// answers. It first looks for the engine's socket itself (DOCKER_HOST, or
// the usual socket paths), so on a machine without Docker it returns at
// once, without testcontainers' panics, retries and log lines; then it asks
// testcontainers' provider for its health.
func dockerAvailable(ctx context.Context) error {
	dockerCheck.once.Do(func() { dockerCheck.err = checkDocker(ctx) })
	return dockerCheck.err
}

func checkDocker(ctx context.Context) error {
	if err := dialDockerEngine(ctx); err != nil {
		return err
	}
	return guardPanic(func() error {
		p, err := testcontainers.ProviderDefault.GetProvider(testcontainers.WithLogger(tclog.NewNoopLogger()))
		if err != nil {
			return fmt.Errorf("no Docker engine: %w", err)
		}
		defer func() { _ = p.Close() }()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := p.Health(ctx); err != nil {
			return fmt.Errorf("no Docker engine: %w", err)
		}
		return nil
	})
}

// dialDockerEngine checks that something listens where a Docker engine
// would. With a ~/.testcontainers.properties file the engine may be
// configured there, so it leaves the decision to testcontainers.
func dialDockerEngine(ctx context.Context) error {
	home, _ := os.UserHomeDir()
	if home != "" {
		if _, err := os.Stat(filepath.Join(home, ".testcontainers.properties")); err == nil {
			return nil
		}
	}
	var candidates []string // network:address
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		u, err := url.Parse(h)
		if err != nil {
			return fmt.Errorf("no Docker engine: DOCKER_HOST=%q: %w", h, err)
		}
		switch u.Scheme {
		case "unix":
			candidates = append(candidates, "unix:"+u.Path)
		case "tcp", "http", "https":
			candidates = append(candidates, "tcp:"+u.Host)
		default: // ssh://, npipe://: let testcontainers try
			return nil
		}
	} else {
		paths := []string{"/var/run/docker.sock"}
		if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
			paths = append(paths, filepath.Join(xdg, "docker.sock"))
		}
		paths = append(paths, fmt.Sprintf("/run/user/%d/docker.sock", os.Getuid()))
		if home != "" {
			paths = append(paths,
				filepath.Join(home, ".docker", "run", "docker.sock"),
				filepath.Join(home, ".docker", "desktop", "docker.sock"),
				filepath.Join(home, ".colima", "default", "docker.sock"),
				filepath.Join(home, ".rd", "docker.sock"))
		}
		for _, p := range paths {
			candidates = append(candidates, "unix:"+p)
		}
	}
	var tried []string
	for _, c := range candidates {
		network, addr, _ := strings.Cut(c, ":")
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		tried = append(tried, addr)
	}
	if os.Getenv("DOCKER_HOST") != "" {
		return fmt.Errorf("no Docker engine answers at DOCKER_HOST=%s", os.Getenv("DOCKER_HOST"))
	}
	return errors.New("no Docker engine: DOCKER_HOST is not set and no socket answers at " + strings.Join(tried, ", "))
}

// guardPanic runs fn and turns a panic (testcontainers panics in places
// when it cannot find an engine) into an error.
func guardPanic(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers panicked: %v", r)
		}
	}()
	return fn()
}
