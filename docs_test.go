package pgkit_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// docImports are the package qualifiers a doc fragment may use without an
// import of its own: TestDocBlocksCompile adds the import of each one the
// fragment uses.
var docImports = map[string]string{
	"context":    "context",
	"errors":     "errors",
	"fmt":        "fmt",
	"io":         "io",
	"json":       "encoding/json",
	"log":        "log",
	"slog":       "log/slog",
	"http":       "net/http",
	"os":         "os",
	"signal":     "os/signal",
	"sql":        "database/sql",
	"strings":    "strings",
	"sync":       "sync",
	"testing":    "testing",
	"time":       "time",
	"pgkit":      "github.com/pgkit-dev/pgkit",
	"cache":      "github.com/pgkit-dev/pgkit/cache",
	"redisstore": "github.com/pgkit-dev/pgkit/cache/redisstore",
	"pgkittest":  "github.com/pgkit-dev/pgkit/pgkittest",
	"pgx":        "github.com/jackc/pgx/v5",
	"pgxpool":    "github.com/jackc/pgx/v5/pgxpool",
	"pgconn":     "github.com/jackc/pgx/v5/pgconn",
	"pgtype":     "github.com/jackc/pgx/v5/pgtype",
	"tracelog":   "github.com/jackc/pgx/v5/tracelog",
	"prometheus": "github.com/prometheus/client_golang/prometheus",
	"promhttp":   "github.com/prometheus/client_golang/prometheus/promhttp",
	"redis":      "github.com/redis/go-redis/v9",
}

// docBlock is one ```go fenced block of a markdown file.
type docBlock struct {
	file string // the markdown file, relative to the repository root
	line int    // the line of the block's first line of code
	code string // without the fence and the fence's indentation
}

func (b docBlock) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// docFiles are the markdown files whose Go blocks must compile.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", filepath.Join("examples", "chat", "README.md")}
	more, err := filepath.Glob(filepath.Join("docs", "*.md"))
	require.NoError(t, err)
	files = append(files, more...)
	var present []string
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			present = append(present, f)
		}
	}
	return present
}

// readDocBlocks returns the ```go blocks of a markdown file. A fence may be
// indented (inside a list item); the indentation is removed from the code.
// Blocks of any other language (```sh, ```text, ```yaml, or none) are skipped.
func readDocBlocks(t *testing.T, file string) []docBlock {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	var blocks []docBlock
	var (
		in     bool   // inside a fence
		isGo   bool   // of language go
		fence  string // the fence's backticks
		indent string // the fence's indentation
		cur    docBlock
		code   strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " \t")
		if !in {
			// A backtick fence's info string has no backtick (CommonMark):
			// "```` ```go ````" is inline code, not a fence.
			if strings.HasPrefix(trimmed, "```") && !strings.Contains(strings.TrimLeft(trimmed, "`"), "`") {
				in = true
				indent = line[:len(line)-len(trimmed)]
				fence = trimmed[:len(trimmed)-len(strings.TrimLeft(trimmed, "`"))]
				lang := strings.Fields(strings.TrimPrefix(trimmed, fence) + " ")
				isGo = len(lang) > 0 && lang[0] == "go"
				cur = docBlock{file: filepath.ToSlash(file), line: n + 1}
				code.Reset()
			}
			continue
		}
		if strings.HasPrefix(trimmed, fence) && strings.TrimSpace(strings.TrimLeft(trimmed, "`")) == "" {
			in = false
			if isGo {
				cur.code = code.String()
				blocks = append(blocks, cur)
			}
			continue
		}
		if isGo {
			code.WriteString(strings.TrimPrefix(line, indent))
			code.WriteByte('\n')
		}
	}
	require.NoError(t, sc.Err())
	require.False(t, in, "%s: a fence opened at line %d is never closed", file, cur.line-1)
	return blocks
}

// isCompleteFile says whether a block is a whole Go file: its first line
// that is not blank or a comment is its package clause.
func isCompleteFile(code string) bool {
	for line := range strings.Lines(code) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		return strings.HasPrefix(line, "package ")
	}
	return false
}

var testFuncRE = regexp.MustCompile(`(?m)^func (Test|Benchmark|Example|Fuzz)`)

// docSource returns the file a block becomes, and its name. A complete
// file is kept as it is; a fragment gets "package docs" and the imports of
// the qualifiers (docImports) it uses without declaring them. Both start
// with a //line directive, so the compiler names the markdown file and line.
func docSource(b docBlock, absFile string) (name, src string, err error) {
	name = "doc.go"
	if testFuncRE.MatchString(b.code) {
		name = "doc_test.go"
	}
	directive := fmt.Sprintf("//line %s:%d\n", absFile, b.line)
	if isCompleteFile(b.code) {
		return name, directive + b.code, nil
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, b.String(), "package docs\n"+b.code, parser.AllErrors)
	if err != nil {
		return "", "", err
	}
	imported := map[string]bool{}
	for _, imp := range f.Imports {
		path := strings.Trim(imp.Path.Value, `"`)
		imported[path[strings.LastIndex(path, "/")+1:]] = true
		if imp.Name != nil {
			imported[imp.Name.Name] = true
		}
	}
	var paths []string
	for _, id := range f.Unresolved {
		if p, ok := docImports[id.Name]; ok && !imported[id.Name] && !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var sb strings.Builder
	sb.WriteString("package docs\n\n")
	if len(paths) > 0 {
		sb.WriteString("import (\n")
		for _, p := range paths {
			fmt.Fprintf(&sb, "\t%q\n", p)
		}
		sb.WriteString(")\n\n")
	}
	sb.WriteString(directive)
	sb.WriteString(b.code)
	return name, sb.String(), nil
}

// embedRE finds //go:embed patterns, which must match a file for the
// block to compile.
var embedRE = regexp.MustCompile(`(?m)^//go:embed (.+)$`)

// TestDocBlocksCompile compiles every ```go block of README.md, docs/*.md
// and examples/chat/README.md (the convention is at the top of
// docs/contributing.md): each in a directory of its own in a throwaway
// module that requires this checkout, checked with one go vet. It also
// checks that README's Quickstart is examples/quickstart/main.go, which
// examples/quickstart/main_test.go runs.
func TestDocBlocksCompile(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is needed to compile the doc blocks")
	root, err := filepath.Abs(".")
	require.NoError(t, err)

	var blocks []docBlock
	for _, f := range docFiles(t) {
		blocks = append(blocks, readDocBlocks(t, f)...)
	}
	require.NotEmpty(t, blocks)

	quickstart, err := os.ReadFile(filepath.Join("examples", "quickstart", "main.go"))
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(blocks, func(b docBlock) bool {
		return b.file == "README.md" && b.code == string(quickstart)
	}), "README.md's Quickstart must be examples/quickstart/main.go, as it is")

	dir := t.TempDir()
	goVersion := "1.26.0"
	if mod, err := os.ReadFile("go.mod"); err == nil {
		if m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod); m != nil {
			goVersion = string(m[1])
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), fmt.Appendf(nil,
		"module example.com/docblocks\n\ngo %s\n\nrequire github.com/pgkit-dev/pgkit v0.0.0-00010101000000-000000000000\n\nreplace github.com/pgkit-dev/pgkit => %s\n",
		goVersion, root), 0o644))
	if sum, err := os.ReadFile("go.sum"); err == nil {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))
	}

	var problems []string
	for i, b := range blocks {
		name, src, err := docSource(b, filepath.Join(root, filepath.FromSlash(b.file)))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", b, err))
			continue
		}
		if formatted, err := format.Source([]byte(b.code)); err == nil && string(formatted) != b.code {
			problems = append(problems, fmt.Sprintf("%s: the block is not gofmt'd; gofmt gives:\n%s", b, formatted))
		}
		pkgDir := filepath.Join(dir, fmt.Sprintf("b%03d", i))
		require.NoError(t, os.MkdirAll(pkgDir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(pkgDir, name), []byte(src), 0o644))
		for _, m := range embedRE.FindAllStringSubmatch(b.code, -1) {
			for _, pattern := range strings.Fields(m[1]) {
				file := filepath.Join(pkgDir, filepath.FromSlash(strings.ReplaceAll(pattern, "*", "x")))
				if !strings.Contains(pattern, "*") && filepath.Ext(pattern) == "" {
					file = filepath.Join(file, "x")
				}
				require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
				require.NoError(t, os.WriteFile(file, []byte("-- x\n"), 0o644))
			}
		}
	}

	goCmd := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = dir
		// A module of its own: no workspace, no other toolchain.
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return strings.ReplaceAll(out.String(), root+string(filepath.Separator), ""), err
	}
	out, err := goCmd("mod", "tidy")
	require.NoError(t, err, "go mod tidy of the doc blocks' module: %s", out)
	if out, err := goCmd("vet", "./..."); err != nil {
		problems = append(problems, "go vet of the doc blocks (file:line is the markdown's):\n"+out)
	}
	require.Empty(t, problems, "%d Go blocks in %d markdown files:\n%s", len(blocks), len(docFiles(t)), strings.Join(problems, "\n"))
}
