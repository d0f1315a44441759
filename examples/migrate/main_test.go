package main

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestMigrateAppliesOnceThroughSQLDB runs the command twice on a database of
// its own: the first run creates the table and, outside a transaction, its
// index (valid, so CREATE INDEX CONCURRENTLY finished); the second applies
// nothing.
func TestMigrateAppliesOnceThroughSQLDB(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	require.NoError(t, run(ctx, url))
	require.NoError(t, run(ctx, url), "a second run finds nothing to do")

	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var valid bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'notes_tenant_created'::regclass`).Scan(&valid))
	require.True(t, valid)
	var applied int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0 AND is_applied`).Scan(&applied))
	require.Equal(t, 2, applied, "each migration recorded once")
}
