package pgkit_test

import (
	"net"
	"strings"
	"testing"

	"github.com/pgkit-dev/pgkit/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestMain gives the Examples a database in DATABASE_URL.
func TestMain(m *testing.M) { pgtest.Main(pgtest.WithExampleDatabase(m)) }

// closedPort returns a localhost port on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// withPassword returns url with a password set in its user info. The test
// servers trust every local connection, so the password is accepted and
// ignored, which lets tests check it never leaks.
func withPassword(t *testing.T, url, password string) string {
	t.Helper()
	require.True(t, strings.HasPrefix(url, "postgres://postgres@"), url)
	return strings.Replace(url, "postgres://postgres@", "postgres://postgres:"+password+"@", 1)
}
