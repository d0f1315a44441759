package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// startTimeout bounds how long pg_ctl waits for the server to start or stop.
const startTimeout = 60 * time.Second

// fastSettings make a throwaway server quick: nothing it writes needs to
// survive a crash of the machine.
var fastSettings = []string{
	"-c", "listen_addresses=127.0.0.1",
	"-c", "fsync=off",
	"-c", "synchronous_commit=off",
	"-c", "full_page_writes=off",
}

// StartLocal starts a throwaway PostgreSQL server from this machine's
// binaries: initdb in a new temp dir, then pg_ctl start on a free
// 127.0.0.1 port, its Unix socket and log file in the same temp dir. The
// binaries are looked for on PATH, then under `pg_config --bindir`, then in
// the distributions' usual places (/usr/lib/postgresql/*/bin, ...). Run as
// root, it runs initdb and pg_ctl as the postgres OS user, since initdb
// refuses root. The server trusts every local connection. The caller must
// Close it.
func StartLocal(ctx context.Context, opts ...Option) (*Cluster, error) {
	bins, err := defaultFinder().postgresBins(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return startLocal(ctx, bins, opts...)
}

// localCluster is a cluster run by this machine's initdb and pg_ctl.
type localCluster struct {
	bins    pgBins
	dir     string // the temp dir: socket, log file, data
	dataDir string
	logFile string
	port    int
	opts    options
	as      *osUser // nil unless running as root
	guard   *watchdog
}

// osUser is the OS user the server programs run as.
type osUser struct {
	name     string
	uid, gid int
}

func startLocal(ctx context.Context, bins pgBins, opts ...Option) (_ *Cluster, err error) {
	as, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(as), "pgkit-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: make temp dir: %w", err)
	}
	lc := &localCluster{
		bins:    bins,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "postgres.log"),
		opts:    buildOptions(opts),
		as:      as,
	}
	defer func() {
		if err != nil {
			_ = lc.close(context.WithoutCancel(ctx))
		}
	}()
	if as != nil {
		if err := os.Chown(dir, as.uid, as.gid); err != nil {
			return nil, fmt.Errorf("pgtest: chown %s to %s: %w", dir, as.name, err)
		}
	}
	if lc.guard, err = startWatchdog(lc); err != nil {
		return nil, err
	}
	locale := "C"
	if runtime.GOOS == "linux" {
		locale = "C.UTF-8" // what Debian's clusters use; like C, but Unicode-aware upper/lower
	}
	if out, err := lc.run(ctx, bins.initdb, "-D", lc.dataDir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale="+locale, "--no-sync"); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, tail(out, 2000))
	}

	for _, f := range lc.opts.dataFiles {
		if err := writeServerFile(filepath.Join(lc.dataDir, f.name), f.content, as); err != nil {
			return nil, err
		}
	}
	if err := lc.startOnFreePort(ctx); err != nil {
		return nil, err
	}
	return &Cluster{host: "127.0.0.1", port: lc.port, running: true, impl: lc}, nil
}

// startOnFreePort starts the server on a free port. A free port can be
// taken by someone else before postgres binds it: it tries a few.
func (lc *localCluster) startOnFreePort(ctx context.Context) (err error) {
	for attempt := 0; ; attempt++ {
		if lc.port, err = freePort(); err != nil {
			return err
		}
		_, _, err = lc.start(ctx)
		var inUse portInUseError
		if err == nil || attempt == 2 || !errors.As(err, &inUse) {
			return err
		}
	}
}

// portInUseError marks a start that failed because another process took
// the port.
type portInUseError struct{ error }

func (e portInUseError) Unwrap() error { return e.error }

func (lc *localCluster) start(ctx context.Context) (string, int, error) {
	var o strings.Builder
	fmt.Fprintf(&o, "-p %d -k %s", lc.port, shellQuote(lc.dir))
	args := append(append([]string(nil), fastSettings...), lc.opts.postgresArgs()...)
	for i := 0; i < len(args); i += 2 {
		fmt.Fprintf(&o, " %s %s", args[i], shellQuote(args[i+1]))
	}
	logStart := fileSize(lc.logFile)
	out, err := lc.run(ctx, lc.bins.pgCtl, "start", "-D", lc.dataDir, "-l", lc.logFile,
		"-w", "-t", strconv.Itoa(int(startTimeout/time.Second)), "-o", o.String())
	if err != nil {
		log := lc.logSince(logStart)
		err = fmt.Errorf("pgtest: pg_ctl start on port %d: %w\n%s\nlog %s:\n%s", lc.port, err, tail(out, 1000), lc.logFile, tail(log, 3000))
		if bytes.Contains(log, []byte("could not bind")) || bytes.Contains(log, []byte("already in use")) {
			err = portInUseError{err}
		}
		// pg_ctl may have given up while postgres still came up.
		_ = lc.stopWith(context.WithoutCancel(ctx), "immediate")
		return "", 0, err
	}
	url := (&Cluster{host: "127.0.0.1", port: lc.port}).URL()
	if err := waitAccepting(ctx, url, startTimeout); err != nil {
		return "", 0, fmt.Errorf("%w\nlog %s:\n%s", err, lc.logFile, tail(lc.logSince(logStart), 3000))
	}
	return "127.0.0.1", lc.port, nil
}

func (lc *localCluster) stop(ctx context.Context) error {
	return lc.stopWith(ctx, "fast")
}

// stopWith stops the server with the given shutdown mode and waits until
// it has exited, if it runs.
func (lc *localCluster) stopWith(ctx context.Context, mode string) error {
	if _, err := os.Stat(filepath.Join(lc.dataDir, "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := lc.run(ctx, lc.bins.pgCtl, "stop", "-D", lc.dataDir, "-m", mode,
		"-w", "-t", strconv.Itoa(int(startTimeout/time.Second)))
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop -m %s: %w\n%s", mode, err, tail(out, 1000))
	}
	return nil
}

func (lc *localCluster) close(ctx context.Context) error {
	lc.guard.stop()
	stopErr := lc.stopWith(ctx, "immediate")
	if stopErr != nil {
		// Last resort: kill the postmaster named in postmaster.pid.
		if pid := lc.postmasterPID(); pid > 0 {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	}
	if err := os.RemoveAll(lc.dir); err != nil {
		return errors.Join(stopErr, fmt.Errorf("pgtest: remove %s: %w", lc.dir, err))
	}
	return stopErr
}

// postmasterPID returns the PID in postmaster.pid, or 0.
func (lc *localCluster) postmasterPID() int { return postmasterPID(lc.dataDir) }

// postmasterPID returns the PID in dataDir's postmaster.pid, or 0.
func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(line)))
	return pid
}

// run runs a server program in the temp dir, as the server user, and
// returns its combined output.
func (lc *localCluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = lc.dir
	cmd.Env = serverEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if lc.as != nil {
		setCredential(cmd, lc.as.uid, lc.as.gid)
	}
	err := cmd.Run()
	return out.Bytes(), err
}

// logSince returns the server log from the given offset on.
func (lc *localCluster) logSince(offset int64) []byte {
	f, err := os.Open(lc.logFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(f)
	return b
}

// serverUser returns the OS user to run initdb and pg_ctl as: nil (this
// process's user) unless running as root, then the postgres user.
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, which initdb refuses, and there is no postgres OS user to run it as "+
			"(installing PostgreSQL creates one; or `useradd --system postgres`): %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtest: postgres OS user has a non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return &osUser{name: u.Username, uid: uid, gid: gid}, nil
}

// tempBase returns the directory to make the temp dir in: os.TempDir(),
// unless the server user could not reach it (a TMPDIR under /root), then
// /tmp.
func tempBase(as *osUser) string {
	base := os.TempDir()
	if as == nil {
		return base
	}
	for p := base; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if p == filepath.Dir(p) {
			return base
		}
	}
}

// serverEnv is this process's environment without the PG* variables that
// would steer the server programs elsewhere, and with English messages.
func serverEnv() []string {
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "LANGUAGE=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// shellQuote quotes s for /bin/sh, which pg_ctl hands its -o string to.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tail returns the last n bytes of b, as text.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}
