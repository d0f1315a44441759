package pgkit_test

import (
	"bytes"
	"context"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// forbiddenModules are what only pgkit's tests, examples or peer
// benchmarks use (Docker clients, browsers' drivers, WebSockets, other
// cache libraries): none of them may reach the module graph of a service
// that imports pgkit.
var forbiddenModules = []string{
	"testcontainers", "moby", "docker", "chromedp", "cdproto", "coder/websocket", "go-redis/cache", "go.opentelemetry.io", "vmihailenco/msgpack",
}

// TestModGraphOfAConsumer makes a service's module that imports a pgkit
// package, with this checkout as pgkit (a replace), tidies it, and checks
// its module graph and go.sum: pgx is there, nothing of forbiddenModules
// is.
func TestModGraphOfAConsumer(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is needed to build a consumer module")
	root, err := filepath.Abs(".")
	require.NoError(t, err)

	for _, tc := range []struct{ name, pkg string }{
		{"root", "github.com/pgkit-dev/pgkit"},
		{"cache", "github.com/pgkit-dev/pgkit/cache"},
		{"redisstore", "github.com/pgkit-dev/pgkit/cache/redisstore"},
		{"pgkittest", "github.com/pgkit-dev/pgkit/pgkittest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"),
				[]byte("package main\n\nimport _ \""+tc.pkg+"\"\n\nfunc main() {}\n"), 0o644))
			run := func(args ...string) string {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				var stdout, stderr bytes.Buffer
				cmd := exec.CommandContext(ctx, goBin, args...)
				cmd.Dir = dir
				// A module of its own: no workspace, no other toolchain.
				cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				require.NoError(t, cmd.Run(), "go %s: %s", strings.Join(args, " "), stderr.String())
				return stdout.String()
			}
			run("mod", "init", "example.com/consumer")
			run("mod", "edit", "-replace", "github.com/pgkit-dev/pgkit="+root)
			run("mod", "tidy")
			graph := run("mod", "graph")
			sum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
			require.NoError(t, err)

			for what, text := range map[string]string{"go mod graph": graph, "go.sum": string(sum)} {
				require.Contains(t, text, "github.com/jackc/pgx/v5", what)
				for _, m := range forbiddenModules {
					var lines []string
					for line := range strings.Lines(text) {
						if strings.Contains(line, m) {
							lines = append(lines, strings.TrimSpace(line))
						}
					}
					require.Empty(t, lines, "%s of a module importing %s names %q", what, tc.pkg, m)
				}
			}
		})
	}
}

// TestExamplesUseOnlyThePublicAPI: every godoc Example can be copied into a
// service as it is: its file imports no internal package.
func TestExamplesUseOnlyThePublicAPI(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("example*_test.go")
	require.NoError(t, err)
	more, err := filepath.Glob(filepath.Join("cache", "example*_test.go"))
	require.NoError(t, err)
	files = append(files, more...)
	require.GreaterOrEqual(t, len(files), 4, "the Example files were found")
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range f.Imports {
			require.NotContains(t, imp.Path.Value, "/internal/", "%s imports %s", name, imp.Path.Value)
		}
	}
}
