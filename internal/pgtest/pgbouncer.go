package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgBouncerStartTimeout bounds how long StartPgBouncer waits for a query
// through the new PgBouncer to answer.
const pgBouncerStartTimeout = 20 * time.Second

// pgBouncerStopWait is how long a stop waits after SIGTERM before it kills.
const pgBouncerStopWait = 5 * time.Second

// pgBouncerPlaces are where pgbouncer is looked for when it is not on PATH:
// Debian's package puts it in /usr/sbin, which a non-root PATH often lacks.
var pgBouncerPlaces = []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer"}

// PgBouncerOptions configures StartPgBouncer. Zero fields take defaults.
type PgBouncerOptions struct {
	// PoolMode is pool_mode: "session", "transaction" or "statement".
	// Default "transaction", the mode whose rules a client most easily
	// breaks (no session state, no protocol-level prepared statements).
	PoolMode string
	// DefaultPoolSize is default_pool_size: how many server connections
	// PgBouncer opens per database/user pair. Default 8.
	DefaultPoolSize int
	// MaxClientConn is max_client_conn: how many client connections
	// PgBouncer accepts. Default 1000.
	MaxClientConn int
}

func (o PgBouncerOptions) withDefaults() (PgBouncerOptions, error) {
	if o.PoolMode == "" {
		o.PoolMode = "transaction"
	}
	switch o.PoolMode {
	case "session", "transaction", "statement":
	default:
		return o, fmt.Errorf("pgtest: PgBouncer pool mode %q: want session, transaction or statement", o.PoolMode)
	}
	if o.DefaultPoolSize == 0 {
		o.DefaultPoolSize = 8
	}
	if o.MaxClientConn == 0 {
		o.MaxClientConn = 1000
	}
	if o.DefaultPoolSize < 0 || o.MaxClientConn < 0 {
		return o, fmt.Errorf("pgtest: PgBouncer DefaultPoolSize %d and MaxClientConn %d must not be negative",
			o.DefaultPoolSize, o.MaxClientConn)
	}
	return o, nil
}

// StartPgBouncer starts a pgbouncer child process of the test's own on a
// free 127.0.0.1 port in front of the server of targetURL, a postgres://
// URL of the harness (from NewDatabase, AdminURL, Cluster.URL, ...), and
// stops it in t.Cleanup. It returns the URL of targetURL's database through
// PgBouncer: the same user, database and query, with host:port replaced.
//
// PgBouncer serves every database of the server (a "*" entry in
// [databases]), under the user name the client gives: the user of
// targetURL, logging in to the server with targetURL's password, if any,
// and "postgres". It trusts its clients (auth_type trust), has no Unix
// socket, ignores the extra_float_digits startup parameter (which it would
// otherwise refuse, as it refuses every parameter but client_encoding,
// DateStyle, TimeZone, standard_conforming_strings and application_name),
// and retries a failed server login after 1s instead of 15s. Both users
// are admin_users of its console: see PgBouncerAdminURL.
//
// Start it after the database it serves exists (call NewDatabase first),
// so that t.Cleanup, which runs last-in first-out, stops PgBouncer and its
// server connections before the database is dropped.
//
// Run as root, it runs pgbouncer as the postgres OS user, since PgBouncer
// refuses root. The test fails at once if there is no pgbouncer binary (on
// PATH or in /usr/sbin), or if no query through PgBouncer answers within
// 20s; the failure shows the end of PgBouncer's log.
func StartPgBouncer(t testing.TB, targetURL string, opts PgBouncerOptions) string {
	t.Helper()
	return startPgBouncerT(t, targetURL, opts).url
}

// PgBouncerAdminURL returns the URL of the admin console of the PgBouncer
// that bouncerURL (from StartPgBouncer) goes through: the same user,
// host:port and query, database "pgbouncer", and
// default_query_exec_mode=simple_protocol, since the console speaks only
// the simple query protocol (pgx's default mode fails there). Run SHOW
// POOLS, SHOW STATS, SHOW CLIENTS, ... on a pgx connection to it. It
// panics if bouncerURL is not a URL.
func PgBouncerAdminURL(bouncerURL string) string {
	u, err := url.Parse(bouncerURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		panic(fmt.Sprintf("pgtest: PgBouncerAdminURL: %q is not a postgres:// URL (%v)", bouncerURL, err))
	}
	u.Path, u.RawPath = "/pgbouncer", ""
	q := u.Query()
	q.Set("default_query_exec_mode", "simple_protocol")
	u.RawQuery = q.Encode()
	return u.String()
}

// pgBouncer is a running pgbouncer child process.
type pgBouncer struct {
	dir     string // the temp dir: config, auth file, pidfile
	pidFile string
	port    int
	url     string // targetURL through this PgBouncer
	cmd     *exec.Cmd
	out     *limitedBuffer // its log: stdout and stderr
	exited  chan struct{}  // closed when the process has exited
}

// startPgBouncerT is StartPgBouncer returning the process, for the tests.
func startPgBouncerT(t testing.TB, targetURL string, opts PgBouncerOptions) *pgBouncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pgBouncerStartTimeout+10*time.Second)
	defer cancel()
	b, err := startPgBouncer(ctx, targetURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.stop(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// findPgBouncer returns the pgbouncer binary: on PATH, else in
// pgBouncerPlaces.
func findPgBouncer() (string, error) {
	return findPgBouncerIn(os.Getenv("PATH"), pgBouncerPlaces)
}

func findPgBouncerIn(pathList string, places []string) (string, error) {
	if p, err := lookPathIn(pathList, "pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range places {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	where := "on PATH"
	if len(places) > 0 {
		where += " or at " + strings.Join(places, ", ")
	}
	return "", fmt.Errorf("pgtest: the PgBouncer tests need a pgbouncer binary, and there is none %s: install PgBouncer, "+
		"e.g. `apt-get install pgbouncer` (Debian/Ubuntu) or `brew install pgbouncer` (macOS), "+
		"or run scripts/provision.sh", where)
}

// pgBouncerTarget is what PgBouncer needs to know of the target server.
type pgBouncerTarget struct {
	host     string // a host name or address, or a Unix socket directory
	port     uint16
	user     string
	password string
}

// parsePgBouncerTarget reads targetURL's first host, port, user and
// password, with pgx's defaults for what the URL leaves out.
func parsePgBouncerTarget(targetURL string) (*url.URL, pgBouncerTarget, error) {
	u, err := url.Parse(targetURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, pgBouncerTarget{}, fmt.Errorf("pgtest: PgBouncer target %q is not a postgres:// URL (%v)", targetURL, err)
	}
	cfg, err := pgconn.ParseConfig(targetURL)
	if err != nil {
		return nil, pgBouncerTarget{}, fmt.Errorf("pgtest: PgBouncer target: %w", err)
	}
	tg := pgBouncerTarget{host: cfg.Host, port: cfg.Port, user: cfg.User, password: cfg.Password}
	if tg.host == "" || strings.ContainsAny(tg.host, " \t\r\n'\\") {
		return nil, pgBouncerTarget{}, fmt.Errorf("pgtest: PgBouncer target host %q is empty or needs quoting", tg.host)
	}
	if tg.user == "" || strings.ContainsAny(tg.user+tg.password, "\r\n\x00") || strings.ContainsAny(tg.user, ", \t=") {
		return nil, pgBouncerTarget{}, fmt.Errorf("pgtest: PgBouncer target user %q is empty or has characters its config cannot hold", tg.user)
	}
	return u, tg, nil
}

// pgBouncerURL returns u with its host:port replaced by 127.0.0.1:port,
// and without the query parameters that would override them.
func pgBouncerURL(u *url.URL, port int) string {
	v := *u
	v.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if v.RawQuery != "" {
		q := v.Query()
		q.Del("host")
		q.Del("hostaddr")
		q.Del("port")
		v.RawQuery = q.Encode()
	}
	return v.String()
}

// authFileLine is one line of PgBouncer's auth_file: "user" "password",
// double quotes doubled.
func authFileLine(user, password string) string {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	return q(user) + " " + q(password) + "\n"
}

// pgBouncerConfig returns the pgbouncer.ini for a PgBouncer on port in
// front of tg, keeping its files in dir.
func pgBouncerConfig(dir string, port int, tg pgBouncerTarget, o PgBouncerOptions) string {
	admins := "postgres"
	if tg.user != "postgres" {
		admins += "," + tg.user
	}
	var c strings.Builder
	c.WriteString("; written by pgtest.StartPgBouncer\n")
	c.WriteString("[databases]\n")
	// The fallback entry: any database name a client asks for, on the
	// target server, logged in to as the client's user.
	fmt.Fprintf(&c, "* = host=%s port=%d\n", tg.host, tg.port)
	c.WriteString("\n[pgbouncer]\n")
	for _, kv := range [][2]string{
		{"listen_addr", "127.0.0.1"},
		{"listen_port", strconv.Itoa(port)},
		{"unix_socket_dir", ""}, // no socket, none left in /tmp
		{"auth_type", "trust"},  // trust still needs the user in auth_file
		{"auth_file", filepath.Join(dir, "users.txt")},
		{"admin_users", admins},
		{"pool_mode", o.PoolMode},
		{"default_pool_size", strconv.Itoa(o.DefaultPoolSize)},
		{"max_client_conn", strconv.Itoa(o.MaxClientConn)},
		{"ignore_startup_parameters", "extra_float_digits"},
		{"server_reset_query", ""}, // transaction mode never runs it; session mode keeps state, as a test may want
		{"server_login_retry", "1"},
		{"pidfile", filepath.Join(dir, "pgbouncer.pid")},
		// No logfile: the log goes to stderr, which limitedBuffer keeps.
	} {
		fmt.Fprintf(&c, "%s = %s\n", kv[0], kv[1])
	}
	return c.String()
}

// startPgBouncer starts pgbouncer in front of targetURL's server and
// returns once a query through it answers.
func startPgBouncer(ctx context.Context, targetURL string, opts PgBouncerOptions) (_ *pgBouncer, err error) {
	bin, err := findPgBouncer()
	if err != nil {
		return nil, err
	}
	if opts, err = opts.withDefaults(); err != nil {
		return nil, err
	}
	u, tg, err := parsePgBouncerTarget(targetURL)
	if err != nil {
		return nil, err
	}
	as, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(as), "pgkit-pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: make temp dir: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	users := authFileLine("postgres", "")
	if tg.user == "postgres" {
		users = authFileLine("postgres", tg.password)
	} else {
		users += authFileLine(tg.user, tg.password)
	}
	if err := writeServerFile(filepath.Join(dir, "users.txt"), users, as); err != nil {
		return nil, err
	}
	if as != nil {
		if err := os.Chown(dir, as.uid, as.gid); err != nil {
			return nil, fmt.Errorf("pgtest: chown %s to %s: %w", dir, as.name, err)
		}
	}

	// A free port can be taken by someone else before pgbouncer binds it:
	// try a few.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		b := &pgBouncer{dir: dir, pidFile: filepath.Join(dir, "pgbouncer.pid"), port: port, url: pgBouncerURL(u, port)}
		if err := writeServerFile(filepath.Join(dir, "pgbouncer.ini"), pgBouncerConfig(dir, port, tg, opts), as); err != nil {
			return nil, err
		}
		err = b.start(ctx, bin, as)
		var inUse portInUseError
		if err == nil {
			return b, nil
		}
		if attempt == 2 || !errors.As(err, &inUse) {
			return nil, err
		}
	}
}

// writeServerFile writes a file the server user can read and no one else.
func writeServerFile(path, content string, as *osUser) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("pgtest: write %s: %w", path, err)
	}
	if as != nil {
		if err := os.Chown(path, as.uid, as.gid); err != nil {
			return fmt.Errorf("pgtest: chown %s to %s: %w", path, as.name, err)
		}
	}
	return nil
}

// start runs pgbouncer in the foreground, as a child process, and waits
// until a query through it answers.
func (b *pgBouncer) start(ctx context.Context, bin string, as *osUser) error {
	_ = os.Remove(b.pidFile) // a stale one from a failed attempt stops pgbouncer
	// Not CommandContext: PgBouncer outlives the call; ctx bounds the wait.
	cmd := exec.Command(bin, filepath.Join(b.dir, "pgbouncer.ini"))
	cmd.Dir = b.dir
	cmd.Env = serverEnv()
	out := &limitedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if as != nil {
		setCredential(cmd, as.uid, as.gid)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	b.cmd, b.out, b.exited = cmd, out, exited

	err := b.waitReady(ctx)
	if err == nil {
		return nil
	}
	_ = b.kill()
	log := out.Bytes()
	err = fmt.Errorf("pgtest: pgbouncer on 127.0.0.1:%d: %w\nlog:\n%s", b.port, err, tail(log, 3000))
	if strings.Contains(string(log), "Address already in use") {
		err = portInUseError{err}
	}
	return err
}

// waitReady polls until a connection through PgBouncer answers SELECT 1,
// the process exits, or pgBouncerStartTimeout or ctx ends.
func (b *pgBouncer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pgBouncerStartTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		// The simple protocol: nothing prepared is left on the server.
		if last = pingOnce(ctx, withExecMode(b.url, "simple_protocol")); last == nil {
			return nil
		}
		select {
		case <-b.exited:
			return fmt.Errorf("exited (%v) before a query through it answered (last error: %w)", b.cmd.ProcessState, last)
		case <-ctx.Done():
			return fmt.Errorf("no query through it answered: %w (last error: %w)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// withExecMode returns the URL u with pgx's default_query_exec_mode set.
func withExecMode(u, mode string) string {
	v, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := v.Query()
	q.Set("default_query_exec_mode", mode)
	v.RawQuery = q.Encode()
	return v.String()
}

// stop ends PgBouncer (SIGTERM, its immediate shutdown; a kill if it is
// still running after pgBouncerStopWait), waits until it has exited, and
// removes its temp dir.
func (b *pgBouncer) stop() error {
	var errs []error
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		errs = append(errs, fmt.Errorf("pgtest: SIGTERM pgbouncer: %w", err))
	}
	select {
	case <-b.exited:
	case <-time.After(pgBouncerStopWait):
		errs = append(errs, b.kill(),
			fmt.Errorf("pgtest: pgbouncer did not exit within %s of SIGTERM; killed it\nlog:\n%s", pgBouncerStopWait, tail(b.out.Bytes(), 2000)))
	}
	if err := os.RemoveAll(b.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", b.dir, err))
	}
	return errors.Join(errs...)
}

// kill kills PgBouncer and waits until it has exited.
func (b *pgBouncer) kill() error {
	var err error
	if e := b.cmd.Process.Kill(); e != nil && !errors.Is(e, os.ErrProcessDone) {
		err = fmt.Errorf("pgtest: kill pgbouncer: %w", e)
	}
	<-b.exited
	return err
}
