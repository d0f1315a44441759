// Package pgkittest gives each test of a service a database of its own,
// migrated, in milliseconds, and fails tests that leak connections or run
// a query in a loop.
//
//	//go:embed migrations/*.sql
//	var migrations embed.FS
//
//	func TestCreateUser(t *testing.T) {
//		t.Parallel()
//		sub, _ := fs.Sub(migrations, "migrations")
//		db := pgkittest.New(t, pgkittest.WithMigrations(sub)) // a *pgkit.DB
//		// ... the test, against db ...
//		pgkittest.NoNPlusOne(t, db, func() { listUsersWithTeams(ctx, db) })
//	}
//
// New clones the test's database from a template that holds the
// migrations: built once per server and set of migrations (its name is a
// hash of them), under an advisory lock so that parallel test binaries
// (go test ./...) build it once, and reused by later runs. Clones are made
// ahead of demand, so a test rarely waits for CREATE DATABASE.
//
// The server is EnvDatabaseURL's when set; else a throwaway one from the
// local PostgreSQL binaries, shared by the packages of one go test run and
// removed when it ends; else one in Docker.
//
// The checks use pgkit's own instrumentation: at the end of a test, a
// connection still checked out fails it with the stack that acquired it;
// CountQueries and ExpectQueries count a block's statements by query name;
// NoNPlusOne fails a block that ran one statement many times with different
// arguments, naming the line that issued it.
package pgkittest
