package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// nothingFinder finds no server: no URL, an empty PATH, no Docker.
func nothingFinder(t *testing.T) finder {
	return finder{
		getenv:   func(string) string { return "" },
		path:     t.TempDir(),
		dockerOK: func(context.Context) error { return errors.New("no Docker engine (test)") },
	}
}

func TestResolvePostgresNamesTheThreeWays(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := nothingFinder(t)

	_, c, err := f.resolvePostgres(ctx)
	require.Error(t, err)
	require.Nil(t, c)
	msg := err.Error()
	t.Log(msg)
	require.Regexp(t, `^pgtest: `, msg)
	require.Contains(t, msg, "set PGKIT_TEST_DATABASE_URL")
	require.Contains(t, msg, "apt-get install postgresql")
	require.Contains(t, msg, "run a Docker engine")
	require.Contains(t, msg, "no Docker engine (test)", "says why Docker failed")
	require.Contains(t, msg, "initdb and pg_ctl are not on PATH", "says why local binaries failed")

	_, err = f.startCluster(ctx, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "apt-get install postgresql")
}

func TestResolveRedisNamesTheThreeWays(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, r, ctr, err := nothingFinder(t).resolveRedis(ctx)
	require.Error(t, err)
	require.Nil(t, r)
	require.Nil(t, ctr)
	msg := err.Error()
	t.Log(msg)
	require.Regexp(t, `^pgtest: `, msg)
	require.Contains(t, msg, "set PGKIT_TEST_REDIS_URL")
	require.Contains(t, msg, "apt-get install redis-server")
	require.Contains(t, msg, "run a Docker engine")
}

func TestResolveUsesTheURLFirst(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := nothingFinder(t)
	f.getenv = func(k string) string {
		return map[string]string{
			EnvDatabaseURL: "postgres://somewhere/db",
			EnvRedisURL:    "redis://somewhere:1/0",
		}[k]
	}
	u, c, err := f.resolvePostgres(ctx)
	require.NoError(t, err)
	require.Nil(t, c, "no server started when the URL is set")
	require.Equal(t, "postgres://somewhere/db", u)

	u, r, ctr, err := f.resolveRedis(ctx)
	require.NoError(t, err)
	require.Nil(t, r)
	require.Nil(t, ctr)
	require.Equal(t, "redis://somewhere:1/0", u)
}

// TestPostgresBinsFallsBackToGlobs lays out two versions the way Debian
// does (/usr/lib/postgresql/<version>/bin) and expects the newest: on a fresh
// Debian, apt-get install postgresql puts neither initdb nor pg_config on PATH.
func TestPostgresBinsFallsBackToGlobs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	root := t.TempDir()
	for _, version := range []string{"9", "15", "13"} {
		bin := filepath.Join(root, version, "bin")
		require.NoError(t, os.MkdirAll(bin, 0o755))
		for _, name := range []string{"initdb", "pg_ctl"} {
			require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755))
		}
	}
	f := nothingFinder(t)
	f.pgGlobs = []string{filepath.Join(root, "*", "bin")}
	b, err := f.postgresBins(ctx)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "15", "bin", "initdb"), b.initdb)
	require.Equal(t, filepath.Join(root, "15", "bin", "pg_ctl"), b.pgCtl)

	// And on this machine the real layout is found the same way.
	f.pgGlobs = defaultPGGlobs
	b, err = f.postgresBins(ctx)
	require.NoError(t, err, "this project's machines have PostgreSQL under %v", defaultPGGlobs)
	require.FileExists(t, b.initdb)
}
