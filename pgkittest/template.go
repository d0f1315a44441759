package pgkittest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit"
)

// lockClass is the first key of pgkittest's advisory locks ("pktt"), so
// that they do not meet the application's own one-key locks.
const lockClass int32 = 0x706b7474

// Database names: pgkittest_tpl_<hash> for templates; pgkittest_<owner>_<r>
// for a test's database, owner being the test binary's lock key; a failed
// test's database is renamed pgkittest_kept_<r> so that no sweep drops it.
const (
	templatePrefix = "pgkittest_tpl_"
	keptPrefix     = "pgkittest_kept_"
)

// template is one server's template for one set of migrations, and the
// databases cloned from it ahead of demand.
// clone is a database cloned from the template, and, when it was made
// ahead of demand, a DB already open on it with a connection ready (for a
// test without WithConfig).
type clone struct {
	name string
	db   *pgkit.DB
}

type template struct {
	admin    *adminConn
	name     string
	fileCopy bool // the server has fsync off: copy files, skip the WAL
	ready    chan clone

	mu      sync.Mutex
	workers int // running work goroutines, at most maxWorkers
	done    sync.WaitGroup
	drained bool     // Drain ran: no more workers
	cloning int      // clones under way: a slot in ready each
	drops   []string // test databases to drop
}

// maxWorkers is how many clones and drops run at once: one per admin
// connection (clones on one, drops on the other).
const maxWorkers = 2

var templates struct {
	mu sync.Mutex
	m  map[string]*template // server URL, template name, WithReady
}

// templateFor returns the template for o's migrations on the server at
// adminURL, building it when no test binary has yet.
func templateFor(ctx context.Context, adminURL string, o *options) (*template, error) {
	name, files, err := templateName(o)
	if err != nil {
		return nil, err
	}
	templates.mu.Lock()
	defer templates.mu.Unlock()
	key := fmt.Sprintf("%s\x00%s\x00%d", adminURL, name, o.ready) // WithReady's pools apart
	if t, ok := templates.m[key]; ok {
		return t, nil
	}
	admin, err := adminFor(ctx, adminURL)
	if err != nil {
		return nil, err
	}
	if err := admin.buildTemplate(ctx, adminURL, name, files, o); err != nil {
		return nil, err
	}
	t := &template{admin: admin, name: name, fileCopy: throwaway(adminURL), ready: make(chan clone, o.ready)}
	if templates.m == nil {
		templates.m = map[string]*template{}
	}
	templates.m[key] = t
	t.refill() // the first test of the binary waits for its clone; the next ones need not
	return t, nil
}

// migration is one .sql file of WithMigrations.
type migration struct{ name, sql string }

// templateName is pgkittest_tpl_ and the first 12 hex digits of the
// SHA-256 of the migrations (names and contents, in order) and the
// WithMigrateFunc version.
func templateName(o *options) (string, []migration, error) {
	var files []migration
	if o.migrations != nil {
		names, err := fs.Glob(o.migrations, "*.sql")
		if err != nil {
			return "", nil, fmt.Errorf("pgkittest: WithMigrations: %w", err)
		}
		slices.Sort(names)
		for _, n := range names {
			b, err := fs.ReadFile(o.migrations, n)
			if err != nil {
				return "", nil, fmt.Errorf("pgkittest: WithMigrations: %w", err)
			}
			files = append(files, migration{n, string(b)})
		}
		if len(files) == 0 {
			return "", nil, errors.New("pgkittest: WithMigrations: no .sql file at the root of the FS (use fs.Sub for a subdirectory)")
		}
	}
	if o.migrate != nil && o.migrateVersion == "" {
		return "", nil, errors.New("pgkittest: WithMigrateFunc: version is empty; it keys the template, so name what fn applies")
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00", f.name, f.sql)
	}
	fmt.Fprintf(h, "func\x00%s", o.migrateVersion)
	return templatePrefix + hex.EncodeToString(h.Sum(nil))[:12], files, nil
}

// take returns a database cloned from t: one made ahead of demand when
// there is one, else a new clone; either way the ready pool is refilled in
// the background.
func (t *template) take(ctx context.Context) (clone, error) {
	if cap(t.ready) > 0 {
		select {
		case c := <-t.ready:
			t.refill()
			return c, nil
		default:
		}
		t.refill()
	}
	name, err := t.clone(ctx)
	return clone{name: name}, err
}

// refill starts a worker unless maxWorkers run: workers clone until the
// ready pool is full and drop the databases tests are done with, then end
// (no goroutine outlives the demand by more than a clone or a drop).
// Clones left ready, and drops left undone, when the binary ends are
// dropped by the next binary's sweep.
func (t *template) refill() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.drained && t.workers < maxWorkers && (len(t.ready)+t.cloning < cap(t.ready) || len(t.drops) > 0) {
		t.workers++
		t.done.Go(t.work)
	}
}

// release hands a test's database, closed, to the workers to drop.
func (t *template) release(name string) {
	t.mu.Lock()
	t.drops = append(t.drops, name)
	t.mu.Unlock()
	t.refill()
}

func (t *template) work() {
	for {
		t.mu.Lock()
		switch {
		case !t.drained && len(t.ready)+t.cloning < cap(t.ready):
			t.cloning++
			t.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			c, err := t.warm(ctx)
			cancel()
			if err == nil {
				t.ready <- c // a slot was reserved: this does not block
			}
			t.mu.Lock()
			t.cloning--
			if err != nil { // the next take clones by itself and reports it
				t.workers--
				t.mu.Unlock()
				return
			}
			t.mu.Unlock()
		case len(t.drops) > 0:
			name := t.drops[0]
			t.drops = t.drops[1:]
			t.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_ = t.drop(ctx, name) // one that fails is swept by a later binary
			cancel()
		default:
			t.workers--
			t.mu.Unlock()
			return
		}
	}
}

// drain stops the workers once they finish what they do, and drops the
// clones left ready and the databases left to drop.
func (t *template) drain(ctx context.Context) error {
	t.mu.Lock()
	t.drained = true
	t.mu.Unlock()
	t.done.Wait()
	t.mu.Lock()
	for len(t.ready) > 0 {
		c := <-t.ready
		c.db.Close()
		t.drops = append(t.drops, c.name)
	}
	drops := t.drops
	t.drops = nil
	t.mu.Unlock()
	var errs []error
	for _, name := range drops {
		if err := t.drop(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Drain drops the databases pgkittest cloned ahead of demand and those it
// was still to drop in the background, and closes its connections to the
// servers, so that nothing of the binary's is left on them and no
// goroutine of pgkittest's runs. Main calls it after the tests; call it
// from a TestMain of your own after m.Run (before goleak, if you use it).
// Without it, what is left is dropped by the next test binary that uses
// the same server. New may be called again afterwards.
func Drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	templates.mu.Lock()
	ts := templates.m
	templates.m = nil
	templates.mu.Unlock()
	var errs []error
	for _, t := range ts {
		errs = append(errs, t.drain(ctx))
	}
	admins.mu.Lock()
	as := admins.m
	admins.m = nil
	admins.mu.Unlock()
	for _, a := range as {
		errs = append(errs, a.conn.Close(ctx), a.conn2.Close(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pgkittest: drain: %w", err)
	}
	return nil
}

// warm clones the template and opens a DB on the clone, with one
// connection made, as New opens one for a test without WithConfig: the test
// that takes it waits for neither.
func (t *template) warm(ctx context.Context) (clone, error) {
	name, err := t.clone(ctx)
	if err != nil {
		return clone{}, err
	}
	db, err := pgkit.Open(ctx, testConfig(pgkit.Config{}, t.admin.url, name))
	if err == nil {
		if _, err = db.Exec(ctx, "SELECT 1"); err != nil {
			db.Close()
		}
	}
	if err != nil {
		_ = t.drop(context.WithoutCancel(ctx), name)
		return clone{}, err
	}
	return clone{name: name, db: db}, nil
}

// clone creates a database from the template.
func (t *template) clone(ctx context.Context) (string, error) {
	name := fmt.Sprintf("pgkittest_%08x_%s", uint32(t.admin.owner), randomHex(4))
	sql := "CREATE DATABASE " + ident(name) + " TEMPLATE " + ident(t.name)
	if t.fileCopy {
		sql += " STRATEGY FILE_COPY"
	}
	if err := t.admin.exec(ctx, sql); err != nil {
		return "", fmt.Errorf("pgkittest: clone template %s: %w", t.name, err)
	}
	return name, nil
}

// drop drops a test's database, ending any session left on it.
func (t *template) drop(ctx context.Context, name string) error {
	if err := t.admin.execDrop(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// keep renames a failed test's database out of the sweeps' way and
// returns its new name.
func (t *template) keep(ctx context.Context, name string) (string, error) {
	kept := keptPrefix + time.Now().UTC().Format("20060102_150405_") + randomHex(3)
	if err := t.admin.exec(ctx, "ALTER DATABASE "+ident(name)+" RENAME TO "+ident(kept)); err != nil {
		return name, err
	}
	return kept, nil
}

// adminConn is the test binary's connection to one server: it runs the
// CREATE and DROP DATABASE statements, one at a time, and holds the
// binary's advisory lock (lockClass, owner) for as long as the binary
// runs, so that another binary's sweep can tell its databases from those a
// dead binary left. A connection, not a pool: no goroutine of pgkittest's
// outlives the tests.
type adminConn struct {
	url   string // the server's
	owner int32

	mu    sync.Mutex
	conn  *pgx.Conn // holds the lock; runs the sweep
	mu2   sync.Mutex
	conn2 *pgx.Conn // a second one for drops, so that a clone never waits behind one
}

var admins struct {
	mu sync.Mutex
	m  map[string]*adminConn
}

// adminFor returns the binary's connection to the server at adminURL,
// opening it (and sweeping what dead binaries left) on first use.
func adminFor(ctx context.Context, adminURL string) (*adminConn, error) {
	admins.mu.Lock()
	defer admins.mu.Unlock()
	if a, ok := admins.m[adminURL]; ok {
		return a, nil
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("pgkittest: connect to the server (%s): %w", masked(adminURL), err)
	}
	a := &adminConn{url: adminURL, conn: conn}
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		a.owner = int32(binary.BigEndian.Uint32(b[:]))
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", lockClass, a.owner).Scan(&got); err != nil {
			_ = conn.Close(ctx)
			return nil, fmt.Errorf("pgkittest: take the test binary's lock: %w", err)
		}
		if got {
			break
		}
	}
	if err := a.sweep(ctx); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	if a.conn2, err = pgx.Connect(ctx, adminURL); err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("pgkittest: connect to the server (%s): %w", masked(adminURL), err)
	}
	if admins.m == nil {
		admins.m = map[string]*adminConn{}
	}
	admins.m[adminURL] = a
	return a, nil
}

// sweep drops the test databases of binaries that are gone: those whose
// owner's lock is free.
func (a *adminConn) sweep(ctx context.Context) error {
	rows, err := a.conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname ~ '^pgkittest_[0-9a-f]{8}_[0-9a-f]+$'`)
	if err != nil {
		return fmt.Errorf("pgkittest: list leftover databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgkittest: list leftover databases: %w", err)
	}
	gone := map[string]bool{}
	for _, n := range names {
		owner := strings.Split(n, "_")[1]
		alive, seen := gone[owner]
		if !seen {
			var key uint32
			_, _ = fmt.Sscanf(owner, "%08x", &key)
			var free bool
			if err := a.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", lockClass, int32(key)).Scan(&free); err != nil {
				return fmt.Errorf("pgkittest: sweep: %w", err)
			}
			if free {
				_, _ = a.conn.Exec(ctx, "SELECT pg_advisory_unlock($1, $2)", lockClass, int32(key))
			}
			alive, gone[owner] = !free, !free
		}
		if !alive {
			if _, err := a.conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(n)+" WITH (FORCE)"); err != nil {
				return fmt.Errorf("pgkittest: sweep: drop %s: %w", n, err)
			}
		}
	}
	return nil
}

// exec runs sql on the first connection: clones and renames.
func (a *adminConn) exec(ctx context.Context, sql string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := a.conn.Exec(ctx, sql)
	return err
}

// execDrop runs a DROP DATABASE on the second connection: a drop can take
// seconds on a server with fsync on (it waits for a checkpoint), and a
// clone must not wait behind it.
func (a *adminConn) execDrop(ctx context.Context, sql string) error {
	a.mu2.Lock()
	defer a.mu2.Unlock()
	_, err := a.conn2.Exec(ctx, sql)
	return err
}

// buildTemplate makes the template unless a binary already did: under an
// advisory lock of its own, so that parallel test binaries build it once;
// a half-made one (a binary killed while building it) is made again. The
// lock is held on a connection of its own, so that the binary's other
// statements do not wait for it.
func (a *adminConn) buildTemplate(ctx context.Context, adminURL, name string, files []migration, o *options) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("pgkittest: connect to the server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sum := sha256.Sum256([]byte(name))
	key := int32(binary.BigEndian.Uint32(sum[:4]))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", lockClass+1, key); err != nil {
		return fmt.Errorf("pgkittest: lock the template: %w", err)
	}
	var done bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&done)
	switch {
	case err == nil && done:
		return nil
	case err == nil:
		if _, err := conn.Exec(ctx, "DROP DATABASE "+ident(name)+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("pgkittest: drop the half-made template %s: %w", name, err)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("pgkittest: look for template %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
		return fmt.Errorf("pgkittest: create template %s: %w", name, err)
	}
	if err := migrate(ctx, adminURL, name, files, o); err != nil {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
		return err
	}
	// No connection from now on: a clone fails while anyone is connected to
	// its template.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("pgkittest: mark %s as a template: %w", name, err)
	}
	return nil
}

// migrate applies the files, then WithMigrateFunc's fn, to database name.
func migrate(ctx context.Context, adminURL, name string, files []migration, o *options) error {
	u, err := withDatabase(adminURL, name)
	if err != nil {
		return err
	}
	db, err := pgkit.Open(ctx, pgkit.Config{URL: u, MaxConns: 2, StatementTimeout: pgkit.Disabled, Logger: o.config.Logger})
	if err != nil {
		return fmt.Errorf("pgkittest: open the template: %w", err)
	}
	defer db.Close()
	for _, f := range files {
		// Without arguments Exec sends the simple protocol: a whole script.
		if _, err := db.Exec(ctx, f.sql); err != nil {
			return fmt.Errorf("pgkittest: migration %s: %w", path.Base(f.name), err)
		}
	}
	if o.migrate != nil {
		if err := o.migrate(ctx, db); err != nil {
			return fmt.Errorf("pgkittest: WithMigrateFunc %q: %w", o.migrateVersion, err)
		}
	}
	// Leave autovacuum nothing to do: its worker would connect to the
	// template to analyze the migrations' rows, and a clone waits while
	// anyone is connected (up to 5 s, then fails).
	if _, err := db.Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		return fmt.Errorf("pgkittest: vacuum the template: %w", err)
	}
	return nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
