package pgkit

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestSQLStatesLiveInClassify keeps the error rules in one place: no
// SQLSTATE literal in the package's code outside classify.go.
func TestSQLStatesLiveInClassify(t *testing.T) {
	sqlstate := regexp.MustCompile(`^"[0-9A-Z]{5}"$`)
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "classify.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		require.NoError(t, err)
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING && sqlstate.MatchString(lit.Value) && strings.ContainsAny(lit.Value, "0123456789") {
				t.Errorf("%s: SQLSTATE %s outside classify.go: name it there and use the rule", fset.Position(lit.Pos()), lit.Value)
			}
			return true
		})
	}
	require.Greater(t, checked, 20, "the package's files were found")
}

// TestClassifierRules: each caller's question about an error, answered by
// the one classifier.
func TestClassifierRules(t *testing.T) {
	server := func(code string) error { return fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code}) }
	for _, c := range []struct {
		err       error
		retry     string // InTx, connection open
		transient bool   // Writer
		lost      bool   // replica set aside
		class     string // metrics label
	}{
		{server("40001"), "serialization", true, false, "40"},
		{server("40P01"), "deadlock", true, false, "40"},
		{server("08006"), "connection", true, true, "08"},
		{server("57P01"), "connection", true, true, "57"},
		{server("57P05"), "connection", true, true, "57"},
		{server("53300"), "", true, false, "53"},
		{server("26000"), "plan", false, false, "26"},
		{server("23505"), "", false, false, "23"},
		{server("57014"), "", false, false, "57"},
		{server("25006"), "", true, false, "25"}, // retried by InTx only on a standby: below
		{&AmbiguousCommitError{Err: io.ErrUnexpectedEOF}, "", true, false, "client"},
		{ErrAcquireTimeout, "", true, false, "client"},
		{context.Canceled, "", false, false, "client"},
		{errors.New("cannot encode"), "", false, false, "client"},
	} {
		name := c.err.Error()
		require.Equal(t, c.retry, retryReason(c.err, false, false), name)
		require.Equal(t, c.transient, transient(c.err), name)
		require.Equal(t, c.lost, sessionLost(sqlstate(c.err)), name)
		require.Equal(t, c.class, stateClass(c.err), name)
	}
	// A closed connection before COMMIT is retried, unless the caller's
	// context ended.
	require.Equal(t, "connection", retryReason(errors.New("conn closed"), true, false))
	require.Equal(t, "", retryReason(context.DeadlineExceeded, true, false))
	// A write refused by a server that became a standby is retried; by a
	// READ ONLY transaction on the primary, not.
	require.Equal(t, "connection", retryReason(server("25006"), false, true))
	require.Equal(t, "", retryReason(server("23505"), false, true))
	// No server to connect to for BEGIN: nothing ran.
	require.Equal(t, "connection", retryReason(&UnreachableError{Err: io.EOF, Failures: 3}, false, false))
	require.Equal(t, "connection", retryReason(&UnreachableError{Err: io.EOF, Failures: 3, AcquireTimeout: true}, false, false))
	// A server error proves the COMMIT failed; a lost answer does not.
	require.True(t, commitFailed(server("40001")))
	require.False(t, commitFailed(io.ErrUnexpectedEOF))
	require.Equal(t, "too many connections", refusal("53300"))
	require.Equal(t, "authentication or authorization refused", refusal("28P01"))
}
