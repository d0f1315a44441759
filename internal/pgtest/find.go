package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// finder locates the ways to a server. Its fields are what the resolution
// order depends on, so tests can replace them (an empty PATH, a Docker check
// that says no) without touching the process environment.
type finder struct {
	envVar   string // the variable naming a server; "" is EnvDatabaseURL
	getenv   func(string) string
	path     string   // the PATH searched for initdb, pg_ctl, pg_config, redis-server
	pgGlobs  []string // directories tried last for initdb and pg_ctl, highest version first
	dockerOK func(context.Context) error
}

// defaultPGGlobs are where distributions put PostgreSQL server binaries
// that are not on PATH (Debian and Ubuntu, RHEL and Fedora, source builds).
var defaultPGGlobs = []string{
	"/usr/lib/postgresql/*/bin",
	"/usr/pgsql-*/bin",
	"/usr/local/pgsql/bin",
}

func defaultFinder() finder {
	return finder{
		getenv:   os.Getenv,
		path:     os.Getenv("PATH"),
		pgGlobs:  defaultPGGlobs,
		dockerOK: dockerAvailable,
	}
}

// pgBins are the PostgreSQL server programs a local cluster needs.
type pgBins struct {
	initdb, pgCtl string
}

// lookPathIn is exec.LookPath over the given PATH list instead of $PATH.
func lookPathIn(pathList, name string) (string, error) {
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH", name)
}

// binsIn returns the programs if dir holds both.
func binsIn(dir string) (pgBins, bool) {
	b := pgBins{initdb: filepath.Join(dir, "initdb"), pgCtl: filepath.Join(dir, "pg_ctl")}
	for _, p := range []string{b.initdb, b.pgCtl} {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return pgBins{}, false
		}
	}
	return b, true
}

// postgresBins finds initdb and pg_ctl: on PATH, else under
// `pg_config --bindir`, else in the distributions' usual places.
func (f finder) postgresBins(ctx context.Context) (pgBins, error) {
	initdb, err1 := lookPathIn(f.path, "initdb")
	pgCtl, err2 := lookPathIn(f.path, "pg_ctl")
	if err1 == nil && err2 == nil {
		return pgBins{initdb: initdb, pgCtl: pgCtl}, nil
	}
	if pgConfig, err := lookPathIn(f.path, "pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		cancel()
		if err == nil {
			if b, ok := binsIn(strings.TrimSpace(string(out))); ok {
				return b, nil
			}
		}
	}
	for _, pattern := range f.pgGlobs {
		dirs, _ := filepath.Glob(pattern)
		sortByVersionDesc(dirs)
		for _, dir := range dirs {
			if b, ok := binsIn(dir); ok {
				return b, nil
			}
		}
	}
	msg := "no PostgreSQL server binaries: initdb and pg_ctl are not on PATH, nor under `pg_config --bindir`"
	if len(f.pgGlobs) > 0 {
		msg += ", nor in " + strings.Join(f.pgGlobs, ", ")
	}
	return pgBins{}, errors.New(msg)
}

// sortByVersionDesc orders paths such as /usr/lib/postgresql/15/bin so the
// highest version number comes first.
func sortByVersionDesc(dirs []string) {
	version := func(p string) float64 {
		v := -1.0 // the last numeric part of the path: the version directory
		for _, part := range strings.Split(p, string(filepath.Separator)) {
			part = strings.TrimPrefix(part, "pgsql-")
			if n, err := strconv.ParseFloat(part, 64); err == nil {
				v = n
			}
		}
		return v
	}
	sort.SliceStable(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
}
