package cache_test

import (
	"testing"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/pgkit-dev/pgkit/internal/testkit"
)

// The harness of the root package's tests, as much of it as the cache's
// tests use: the shared servers of internal/pgtest, with goleak after the
// run.

// TestMain gives the Examples a database in DATABASE_URL.
func TestMain(m *testing.M) { pgtest.Main(pgtest.WithExampleDatabase(m)) }

// openTest is testkit.OpenDB.
func openTest(t *testing.T, cfg pgkit.Config) *pgkit.DB { return testkit.OpenDB(t, cfg) }
