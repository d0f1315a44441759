package pgkittest

import (
	"context"
	"fmt"
	"sync"

	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// server is the test binary's server when New was given no URL: resolved
// once, shared by every test of the binary. A throwaway one is stopped and
// removed when the binary ends (a watchdog process sees it end).
var server struct {
	once sync.Once
	url  string
	// cluster is the throwaway server, kept referenced: its watchdog's pipe
	// must not be collected (and closed) while the binary runs.
	cluster *pgtest.Cluster
	err     error
}

func sharedServer(ctx context.Context) (string, error) {
	server.once.Do(func() {
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
	return server.cluster != nil && server.url == admin
}
