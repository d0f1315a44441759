package pgkit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// rlsPolicy is the recipe README gives: RLS enabled and forced, one policy
// for reads and writes on the tenant setting.
const rlsPolicy = `
ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversations
	USING (tenant_id = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id = current_setting('app.tenant_id', true));`

// appRole creates a login role that is neither superuser nor table owner
// (superusers and owners bypass row-level security), with the grants an
// application needs, and drops it when the test ends. It returns the URL
// that connects as that role.
func appRole(t *testing.T, admin *pgkit.DB, url string) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	role := "pgkit_app_" + hex.EncodeToString(b)
	ctx := context.Background()
	_, err := admin.Exec(ctx, `CREATE ROLE `+role+` LOGIN NOSUPERUSER NOBYPASSRLS;
		GRANT USAGE ON SCHEMA public TO `+role+`;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO `+role+`;
		GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO `+role)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := admin.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role)
		require.NoError(t, err)
	})
	require.True(t, strings.HasPrefix(url, "postgres://postgres@"), url)
	return strings.Replace(url, "postgres://postgres@", "postgres://"+role+"@", 1)
}

func TestTenantIsolationWithRowLevelSecurity(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := openTest(t, pgkit.Config{URL: url, MaxConns: 2})
	ctx := context.Background()
	_, err := admin.Exec(ctx, rlsPolicy+`
		INSERT INTO tenants (id, name) VALUES ('a', 'A'), ('b', 'B');
		INSERT INTO users (tenant_id, email) VALUES ('a', 'ann@a'), ('b', 'bob@b');
		INSERT INTO conversations (tenant_id, user_id, title)
			SELECT tenant_id, id, 'chat of ' || tenant_id FROM users;`)
	require.NoError(t, err)

	// One connection, so the tests below also show the setting does not
	// outlive its transaction on a pooled connection.
	app := openTest(t, pgkit.Config{URL: appRole(t, admin, url), MaxConns: 1})
	titles := func(opts ...pgkit.TxOption) ([]string, error) {
		var out []string
		err := pgkit.InTx(ctx, app, func(tx pgkit.Tx) error {
			rows, err := tx.Query(ctx, `SELECT title FROM conversations ORDER BY id`)
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		}, opts...)
		return out, err
	}

	got, err := titles(pgkit.WithTenant("a"))
	require.NoError(t, err)
	require.Equal(t, []string{"chat of a"}, got, "tenant A sees only A's rows")
	got, err = titles(pgkit.WithTenant("b"))
	require.NoError(t, err)
	require.Equal(t, []string{"chat of b"}, got)

	got, err = titles()
	require.NoError(t, err)
	require.Empty(t, got, "without a tenant, nothing: the setting of the last transaction did not stay on the connection")

	got, err = titles(pgkit.WithTenant(`x' OR '1'='1`))
	require.NoError(t, err)
	require.Empty(t, got, "a hostile id is just a value that matches nothing")

	// Writing B's row inside A's transaction is refused by WITH CHECK.
	var bUser int64
	require.NoError(t, admin.QueryRow(ctx, `SELECT id FROM users WHERE tenant_id = 'b'`).Scan(&bUser))
	err = pgkit.InTx(ctx, app, func(tx pgkit.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO conversations (tenant_id, user_id, title) VALUES ('b', $1, 'smuggled')`, bUser)
		return err
	}, pgkit.WithTenant("a"))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "42501", pgErr.Code, "new row violates row-level security policy")
	var smuggled int
	require.NoError(t, admin.QueryRow(ctx, `SELECT COUNT(*) FROM conversations WHERE title = 'smuggled'`).Scan(&smuggled))
	require.Zero(t, smuggled)

	// An empty id is refused before the database is asked.
	before := app.PoolStats().AcquireCount
	called := false
	err = pgkit.InTx(ctx, app, func(pgkit.Tx) error { called = true; return nil }, pgkit.WithTenant(""))
	require.True(t, errors.Is(err, pgkit.ErrEmptyTenant))
	require.False(t, called)
	require.Equal(t, before, app.PoolStats().AcquireCount, "no connection was even taken")
}

func TestTenantSettingConfig(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"tenant", "app.", ".x", "app.tenant id", "app.tenant;drop"} {
		_, err := pgkit.Open(context.Background(), pgkit.Config{URL: "postgres://postgres@127.0.0.1:1/x", TenantSetting: bad, LazyConnect: true})
		var cerr *pgkit.ConfigError
		require.ErrorAs(t, err, &cerr, bad)
		require.Equal(t, "TenantSetting", cerr.Field)
	}
	db := openTest(t, pgkit.Config{TenantSetting: "myapp.org_id"})
	var got string
	require.NoError(t, pgkit.InTx(context.Background(), db, func(tx pgkit.Tx) error {
		return tx.QueryRow(context.Background(), `SELECT current_setting('myapp.org_id')`).Scan(&got)
	}, pgkit.WithTenant("org-7")))
	require.Equal(t, "org-7", got)
}
