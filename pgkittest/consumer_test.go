package pgkittest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// consumerTest is a service's own _test.go, as docs/testing.md shows it:
// its migrations embedded, a database per test. Lines marked LEAK and
// NPLUSONE are where the failing tests go wrong.
const consumerTest = `package svc

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"testing"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/pgkittest"
)

//go:embed migrations/*.sql
var migrations embed.FS

func TestMain(m *testing.M) { pgkittest.Main(m) }

func newDB(t *testing.T) *pgkit.DB {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return pgkittest.New(t, pgkittest.WithMigrations(sub))
}

func TestParallel(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			db := newDB(t)
			ctx := context.Background()
			if _, err := db.Exec(ctx, "INSERT INTO users (email) VALUES ($1)", fmt.Sprintf("new%d@example.com", i)); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 21 {
				t.Fatalf("users: %d, %v; want the 20 migrated and this test's one", n, err)
			}
		})
	}
}

func TestLeak(t *testing.T) {
	db := newDB(t)
	conn, err := db.Acquire(context.Background()) // LEAK
	if err != nil {
		t.Fatal(err)
	}
	_ = conn // never released
}

func TestNPlusOne(t *testing.T) {
	db := newDB(t)
	ctx := context.Background()
	pgkittest.NoNPlusOne(t, db, func() {
		for id := 1; id <= 10; id++ {
			var email string
			if err := db.QueryRow(ctx, "SELECT email FROM users WHERE id = $1", id).Scan(&email); err != nil { // NPLUSONE
				t.Error(err)
			}
		}
	})
}
`

const consumerMigration = `CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE);
INSERT INTO users (email) SELECT 'u' || i || '@example.com' FROM generate_series(1, 20) i;
`

// TestConsumerModule is a service's module outside this repository (a
// replace to this checkout): its 8 parallel tests pass on databases of
// their own, its test that leaks a connection fails naming the line that
// acquired it, and its N+1 loop fails naming the line in the loop.
func TestConsumerModule(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err)
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "migrations"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "migrations", "001_users.sql"), []byte(consumerMigration), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "svc_test.go"), []byte(consumerTest), 0o644))
	lineOf := func(marker string) int {
		for i, l := range strings.Split(consumerTest, "\n") {
			if strings.Contains(l, "// "+marker) {
				return i + 1
			}
		}
		t.Fatalf("no line marked %s", marker)
		return 0
	}
	goCmd := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local",
			"PGKITTEST_DATABASE_URL="+pgtest.AdminURL(t))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	for _, args := range [][]string{{"mod", "init", "example.com/svc"}, {"mod", "edit", "-replace", "github.com/pgkit-dev/pgkit=" + root}, {"mod", "tidy"}} {
		out, err := goCmd(args...)
		require.NoError(t, err, "go %v: %s", args, out)
	}

	out, err := goCmd("test", "-count=1", "-run", "^TestParallel$", ".")
	require.NoError(t, err, out)

	// docs/testing.md's test, as it is (its first Go block), in a package
	// of its own with a users table.
	page, err := os.ReadFile(filepath.Join(root, "docs", "testing.md"))
	require.NoError(t, err)
	block := string(page)
	i := strings.Index(block, "```go\n")
	require.GreaterOrEqual(t, i, 0, "docs/testing.md has a Go block")
	block = block[i+len("```go\n"):]
	block = block[:strings.Index(block, "```")]
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "readme", "migrations"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "readme", "migrations", "001_users.sql"), []byte(consumerMigration), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "readme", "svc_test.go"), []byte(block), 0o644))
	out, err = goCmd("test", "-count=1", "./readme/")
	require.NoError(t, err, "docs/testing.md's test: %s", out)

	out, err = goCmd("test", "-count=1", "-run", "^TestLeak$", ".")
	require.Error(t, err, "a test that leaks a connection fails")
	require.Contains(t, out, "the test left 1 connection(s) checked out", out)
	require.Contains(t, out, fmt.Sprintf("svc_test.go:%d", lineOf("LEAK")), "the failure names the line that acquired it")
	require.Contains(t, out, "its database is kept", out)
	dropKept(t, out)

	out, err = goCmd("test", "-count=1", "-run", "^TestNPlusOne$", ".")
	require.Error(t, err, "a test with an N+1 loop fails")
	require.Contains(t, out, "N+1", out)
	require.Contains(t, out, "ran 10 times with 10 different arguments", out)
	require.Contains(t, out, fmt.Sprintf("svc_test.go:%d", lineOf("NPLUSONE")), "the failure names the line in the loop")
	dropKept(t, out)

	// Each run left the databases it had cloned ahead of demand; each next
	// run swept the previous one's. So at most the last run's are left of
	// test binaries that are gone.
	require.LessOrEqual(t, len(deadOwners(t)), 1)
}

// deadOwners lists the owners of pgkittest's test databases whose test
// binary is gone: their advisory lock is free.
func deadOwners(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.AdminURL(t))
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT DISTINCT split_part(datname, '_', 2) FROM pg_database WHERE datname ~ '^pgkittest_[0-9a-f]{8}_[0-9a-f]+$'`)
	require.NoError(t, err)
	owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	var dead []string
	for _, o := range owners {
		var free bool
		require.NoError(t, conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(x'706b7474'::int, ('x' || $1)::bit(32)::int)`, o).Scan(&free))
		if free {
			dead = append(dead, o)
			_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(x'706b7474'::int, ('x' || $1)::bit(32)::int)`, o)
			require.NoError(t, err)
		}
	}
	return dead
}

// dropKept drops the database a failed consumer test kept, after checking
// it is there.
func dropKept(t *testing.T, out string) {
	t.Helper()
	i := strings.Index(out, "/pgkittest_kept_")
	require.GreaterOrEqual(t, i, 0, out)
	name := out[i+1:]
	name = name[:strings.IndexAny(name, "?\n ")]
	conn, err := pgx.Connect(context.Background(), pgtest.AdminURL(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n))
	require.Equal(t, 1, n, "the failed test's database %s is kept", name)
	_, err = conn.Exec(context.Background(), `DROP DATABASE "`+name+`" WITH (FORCE)`)
	require.NoError(t, err)
}

// sharedTest is one package's test in a module whose packages share the
// go test run's throwaway server: it writes where that server keeps its
// data to $OUT_DIR/<package>.
const sharedTest = `package PKG

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/pgkit-dev/pgkit/pgkittest"
)

func TestMain(m *testing.M) { pgkittest.Main(m) }

func TestWhere(t *testing.T) {
	db := pgkittest.New(t, pgkittest.WithMigrations(fstest.MapFS{"001.sql": {Data: []byte("CREATE TABLE t (n int)")}}))
	var dir string
	if err := db.QueryRow(context.Background(), "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(os.Getenv("OUT_DIR"), "PKG"), []byte(dir), 0o644); err != nil {
		t.Fatal(err)
	}
}
`

// TestSharedServerAcrossPackages: without PGKITTEST_DATABASE_URL, the
// packages of one go test ./... run share one throwaway server from the
// local binaries, and it is gone once the run has ended.
func TestSharedServerAcrossPackages(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err)
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	dir, out := t.TempDir(), t.TempDir()
	for _, pkg := range []string{"a", "b"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, pkg), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, pkg, pkg+"_test.go"), []byte(strings.ReplaceAll(sharedTest, "PKG", pkg)), 0o644))
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGKITTEST_DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local", "OUT_DIR="+out)
	goCmd := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir, cmd.Env = dir, env
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %v: %s", args, b)
		return string(b)
	}
	goCmd("mod", "init", "example.com/shared")
	goCmd("mod", "edit", "-replace", "github.com/pgkit-dev/pgkit="+root)
	goCmd("mod", "tidy")
	goCmd("test", "-count=1", "-p=2", "./...")

	a, err := os.ReadFile(filepath.Join(out, "a"))
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(out, "b"))
	require.NoError(t, err)
	require.Equal(t, string(a), string(b), "both packages used one server")
	require.Eventually(t, func() bool {
		_, err := os.Stat(string(a))
		return errors.Is(err, fs.ErrNotExist)
	}, 30*time.Second, 200*time.Millisecond, "the server's data %s is removed once go test has ended", a)
}
