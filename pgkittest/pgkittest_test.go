package pgkittest_test

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/pgkit-dev/pgkit/pgkittest"
	"github.com/stretchr/testify/require"
)

// TestMain drains pgkittest after the tests, as pgkittest.Main does, then
// checks for leaked goroutines: the background clones and drops must be
// done by then.
func TestMain(m *testing.M) { pgtest.Main(drained{m}) }

type drained struct{ m *testing.M }

func (d drained) Run() int {
	code := d.m.Run()
	if err := pgkittest.Drain(); err != nil {
		fmt.Println(err)
		return 1
	}
	return code
}

// migrations is a small schema with rows, as a service's migrations
// directory would hold it.
var migrations = fstest.MapFS{
	"001_teams.sql": {Data: []byte(`CREATE TABLE teams (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO teams SELECT i, 'team ' || i FROM generate_series(1, 10) i;`)},
	"002_users.sql": {Data: []byte(`CREATE TABLE users (id bigserial PRIMARY KEY, team_id bigint NOT NULL REFERENCES teams, email text NOT NULL UNIQUE);
CREATE INDEX users_team ON users (team_id);
INSERT INTO users (team_id, email) SELECT 1 + i % 10, 'u' || i || '@example.com' FROM generate_series(1, 100) i;`)},
	"README.md": {Data: []byte("not a migration")},
}

// server is the shared test server: pgkittest is told its URL, as a user
// sets PGKITTEST_DATABASE_URL.
func server(t *testing.T) pgkittest.Option { return pgkittest.WithServerURL(pgtest.AdminURL(t)) }

// TestEachTestGetsItsMigratedDatabase: parallel tests each get a database
// of their own with the migrations applied in name order (users references
// teams), and what one test writes no other sees.
func TestEachTestGetsItsMigratedDatabase(t *testing.T) {
	t.Parallel()
	names := make(chan string, 8)
	t.Run("group", func(t *testing.T) {
		for i := range 8 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				db := pgkittest.New(t, server(t), pgkittest.WithMigrations(migrations))
				var n int
				require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n))
				require.Equal(t, 100, n, "the migrations' rows, and none of another test's")
				_, err := db.Exec(ctx, `INSERT INTO users (team_id, email) VALUES (1, $1)`, fmt.Sprintf("t%d@example.com", i))
				require.NoError(t, err)
				var name string
				require.NoError(t, db.QueryRow(ctx, `SELECT current_database()`).Scan(&name))
				names <- name
			})
		}
	})
	close(names)
	seen := map[string]bool{}
	for n := range names {
		require.False(t, seen[n], "database %s given twice", n)
		seen[n] = true
	}
	require.Len(t, seen, 8)
}

// TestTemplateFollowsTheMigrations: a changed migration gives a new
// template (its table is there), and the old one stays for tests that
// still use it.
func TestTemplateFollowsTheMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	changed := fstest.MapFS{}
	for k, v := range migrations {
		changed[k] = v
	}
	changed["003_audit.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE audit (at timestamptz DEFAULT now())`)}
	db := pgkittest.New(t, server(t), pgkittest.WithMigrations(changed))
	var exists bool
	require.NoError(t, db.QueryRow(ctx, `SELECT to_regclass('audit') IS NOT NULL`).Scan(&exists))
	require.True(t, exists)
	old := pgkittest.New(t, server(t), pgkittest.WithMigrations(migrations))
	require.NoError(t, old.QueryRow(ctx, `SELECT to_regclass('audit') IS NOT NULL`).Scan(&exists))
	require.False(t, exists)
}

// TestMigrateFunc: a runner of the user's own migrates the template, keyed
// by its version.
func TestMigrateFunc(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	runs := 0
	run := func(ctx context.Context, db *pgkit.DB) error {
		runs++
		_, err := db.Exec(ctx, `CREATE TABLE settings (k text PRIMARY KEY, v text); INSERT INTO settings VALUES ('mode', 'test')`)
		return err
	}
	for range 3 {
		db := pgkittest.New(t, server(t), pgkittest.WithMigrateFunc("settings-v1", run))
		var v string
		require.NoError(t, db.QueryRow(ctx, `SELECT v FROM settings WHERE k = 'mode'`).Scan(&v))
		require.Equal(t, "test", v)
	}
	require.LessOrEqual(t, runs, 1, "the template is built at most once (an earlier run may have), then cloned")
}

// TestCountQueries: statements are counted by query name, whichever
// goroutine ran them, and only inside the block.
func TestCountQueries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgkittest.New(t, server(t), pgkittest.WithMigrations(migrations))
	_, err := db.Exec(ctx, `SELECT 1`) // outside the block
	require.NoError(t, err)
	counts := pgkittest.CountQueries(t, db, func() {
		for range 3 {
			var n int
			require.NoError(t, db.QueryRow(pgkit.WithQueryName(ctx, "count_users"), `SELECT count(*) FROM users`).Scan(&n))
		}
		done := make(chan error)
		go func() {
			_, err := db.Exec(pgkit.WithQueryName(ctx, "touch_team"), `UPDATE teams SET name = name WHERE id = 1`)
			done <- err
		}()
		require.NoError(t, <-done)
	})
	require.Equal(t, map[string]int{"count_users": 3, "touch_team": 1}, counts)
	pgkittest.ExpectQueries(t, db, map[string]int{"count_users": 1}, func() {
		var n int
		require.NoError(t, db.QueryRow(pgkit.WithQueryName(ctx, "count_users"), `SELECT count(*) FROM users`).Scan(&n))
	})
}

// TestNoNPlusOnePassesASetQuery: one statement for the whole set, and a
// statement repeated with the same arguments, are no N+1.
func TestNoNPlusOnePassesASetQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgkittest.New(t, server(t), pgkittest.WithMigrations(migrations))
	pgkittest.NoNPlusOne(t, db, func() {
		rows, err := db.Query(ctx, `SELECT u.email, t.name FROM users u JOIN teams t ON t.id = u.team_id WHERE u.team_id = ANY($1)`, []int64{1, 2, 3})
		require.NoError(t, err)
		rows.Close()
		for range 20 {
			var n int
			require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM teams WHERE id = $1`, 1).Scan(&n))
		}
	})
}

// TestWithConfig: a test's own Config is used (not a ready DB opened with
// the defaults), and without it the defaults are MaxConns 4 and a
// LeakThreshold.
func TestWithConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgkittest.New(t, server(t), pgkittest.WithMigrations(migrations),
		pgkittest.WithConfig(pgkit.Config{MaxConns: 2, ApplicationName: "custom-app"}))
	require.Equal(t, int32(2), db.Config().MaxConns)
	var app string
	require.NoError(t, db.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app))
	require.Equal(t, "custom-app", app)

	plain := pgkittest.New(t, server(t), pgkittest.WithMigrations(migrations))
	require.Equal(t, int32(4), plain.Config().MaxConns)
	require.Positive(t, plain.Config().LeakThreshold)
}

// TestExampleFile runs the test that example_test.go shows as ExampleNew.
func TestExampleFile(t *testing.T) { testSignup(t) }
