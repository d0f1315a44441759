package pgkittest_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/pgkittest"
)

// signupMigrations would be your embedded migrations directory (an embed.FS
// through fs.Sub); a MapFS keeps the example in one file.
var signupMigrations = fstest.MapFS{
	"001_users.sql": {Data: []byte(`CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE)`)},
}

// testSignup is a test of your service: in your _test.go file it would be
// TestSignup. Each call to pgkittest.New gives the test a database of its
// own, cloned from a template of the migrations.
func testSignup(t *testing.T) {
	t.Parallel()
	db := pgkittest.New(t, pgkittest.WithMigrations(signupMigrations))
	ctx := context.Background()
	if _, err := db.Exec(ctx, `INSERT INTO users (email) VALUES ($1)`, "ada@example.com"); err != nil {
		t.Fatal(err)
	}
	// One statement for the block, whatever the number of ids.
	pgkittest.ExpectQueries(t, db, map[string]int{"users_by_ids": 1}, func() {
		rows, err := db.Query(pgkit.WithQueryName(ctx, "users_by_ids"), `SELECT email FROM users WHERE id = ANY($1)`, []int64{1, 2, 3})
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
	})
}

// ExampleNew shows a whole test file; TestMain with pgkittest.Main drops
// the databases it cloned ahead of demand when the tests end.
func ExampleNew() {}
