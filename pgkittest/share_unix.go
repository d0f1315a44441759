//go:build unix

package pgkittest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// runServer is the throwaway server the test binaries of one go test run
// share (go test ./... runs each package's binary as a child of the go
// command): the first to come starts it from the local binaries, tied to
// the go command, which stops and removes it when the run ends; the others
// find its URL in a file named after the go command's pid. ok is false when
// the binary was not started by go test, or the local binaries cannot run
// a server: the caller starts one of its own then.
func runServer(ctx context.Context) (url string, ok bool) {
	goPID := os.Getppid()
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", goPID)); err != nil || strings.TrimSpace(string(comm)) != "go" {
		return "", false
	}
	base := filepath.Join(os.TempDir(), fmt.Sprintf("pgkittest-%d-%d", os.Getuid(), goPID))
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", false
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", false
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if b, err := os.ReadFile(base + ".url"); err == nil && reachable(ctx, string(b)) {
		return string(b), true
	}
	removeStale()
	c, err := pgtest.StartLocal(ctx, pgtest.WithOwner(goPID))
	if err != nil {
		return "", false
	}
	if err := os.WriteFile(base+".url", []byte(c.URL()), 0o600); err != nil {
		return "", false
	}
	return c.URL(), true
}

func reachable(ctx context.Context, url string) bool {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return false
	}
	_ = conn.Close(ctx)
	return true
}

// removeStale removes the lock and URL files of go test runs that ended.
func removeStale() {
	files, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("pgkittest-%d-*.*", os.Getuid())))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
		pid, err := strconv.Atoi(name[strings.LastIndex(name, "-")+1:])
		if err != nil {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.Remove(f)
		}
	}
}
