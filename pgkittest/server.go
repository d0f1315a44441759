package pgkittest

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// server is the test binary's server when New was given no URL: resolved
// once, shared by every test of the binary: EnvDatabaseURL's; else the
// throwaway server the binaries of this go test run share, stopped and
// removed when the go command ends; else (a binary run by hand, or no local
// binaries) one of the binary's own, stopped and removed when it ends.
var server struct {
	once sync.Once
	url  string
	// cluster is the throwaway server, kept referenced: its watchdog's pipe
	// must not be collected (and closed) while the binary runs.
	cluster *pgtest.Cluster
	shared  bool // the go test run's throwaway server (runServer)
	err     error
}

func sharedServer(ctx context.Context) (string, error) {
	server.once.Do(func() {
		if os.Getenv(EnvDatabaseURL) == "" {
			if u, ok := runServer(ctx); ok {
				server.url, server.shared = u, true
				return
			}
		}
		server.url, server.cluster, server.err = pgtest.ResolveServer(ctx, EnvDatabaseURL)
		if server.err != nil {
			server.err = fmt.Errorf("pgkittest: %w", server.err)
		}
	})
	return server.url, server.err
}

// throwaway reports whether admin is the server New started itself (fsync
// off: a clone may copy files instead of writing WAL).
func throwaway(admin string) bool {
	return (server.cluster != nil || server.shared) && server.url == admin
}
