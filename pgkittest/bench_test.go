package pgkittest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/pgkit-dev/pgkit"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// benchSchema is a service's schema of 20 tables, each with a foreign key
// and two indexes, and 1,000 rows in all.
func benchSchema() fstest.MapFS {
	fsys := fstest.MapFS{"000_accounts.sql": {Data: []byte(`CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts SELECT i, 'account ' || i FROM generate_series(1, 50) i;`)}}
	for i := 1; i < 20; i++ {
		fsys[fmt.Sprintf("%03d_table%d.sql", i, i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(`
CREATE TABLE t%[1]d (
	id bigserial PRIMARY KEY,
	account_id bigint NOT NULL REFERENCES accounts,
	label text NOT NULL,
	amount numeric(12, 2) NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX t%[1]d_account ON t%[1]d (account_id, created_at);
CREATE UNIQUE INDEX t%[1]d_label ON t%[1]d (account_id, label);
INSERT INTO t%[1]d (account_id, label, amount) SELECT 1 + j %% 50, 'row ' || j, j FROM generate_series(1, 50) j;`, i))}
	}
	return fsys
}

// BenchmarkNewDatabase is the time a test waits for a fresh migrated
// database, until it answers a first statement, p50 and p99 over b.N tests run by 1 or 8 goroutines ("parallel"
// tests), each followed by its body (a write and a read, and 0 or 200 ms of
// other work) and its cleanup: through
// pgkittest's template and ready clones ("template"), by cloning the
// template when the test asks ("clone": pgtestdb's way, and testcontainers'
// Snapshot/Restore's, which drops and clones again per test), and by
// creating a database and running the migrations on it ("migrate"). BenchmarkFirstUse
// is what the first test of a run pays.
func BenchmarkNewDatabase(b *testing.B) {
	admin := pgtest.AdminURL(b)
	fsys := benchSchema()
	migrate := func(ctx context.Context) (*pgkit.DB, func(), error) {
		a, err := adminFor(ctx, admin)
		if err != nil {
			return nil, nil, err
		}
		name := fmt.Sprintf("pgkittest_%08x_%s", uint32(a.owner), randomHex(4))
		if err := a.exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
			return nil, nil, err
		}
		drop := func() { _ = a.exec(context.Background(), "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)") }
		_, files, err := templateName(&options{migrations: fsys})
		if err != nil {
			return nil, nil, err
		}
		u, _ := withDatabase(admin, name)
		if err := migrate(ctx, admin, name, files, &options{}); err != nil {
			drop()
			return nil, nil, err
		}
		db, err := pgkit.Open(ctx, pgkit.Config{URL: u, MaxConns: 4})
		if err != nil {
			drop()
			return nil, nil, err
		}
		return db, func() { db.Close(); drop() }, nil
	}
	template := func(ctx context.Context) (*pgkit.DB, func(), error) {
		db, tpl, name, err := open(ctx, &options{migrations: fsys, serverURL: admin, ready: DefaultReady})
		if err != nil {
			return nil, nil, err
		}
		return db, func() { db.Close(); tpl.release(name) }, nil
	}
	// A clone made when the test asks, as pgtestdb does, and as
	// testcontainers' Restore does (DROP DATABASE, then CREATE DATABASE from
	// its snapshot template), without a ready pool.
	onDemand := func(ctx context.Context) (*pgkit.DB, func(), error) {
		db, tpl, name, err := open(ctx, &options{migrations: fsys, serverURL: admin, ready: 0})
		if err != nil {
			return nil, nil, err
		}
		return db, func() { db.Close(); tpl.release(name) }, nil
	}
	// The template is built before the timed runs (BenchmarkFirstUse
	// measures that).
	if _, err := templateFor(context.Background(), admin, &options{migrations: fsys, ready: DefaultReady}); err != nil {
		b.Fatal(err)
	}
	for _, way := range []struct {
		name string
		get  func(context.Context) (*pgkit.DB, func(), error)
	}{{"template", template}, {"clone", onDemand}, {"migrate", migrate}} {
		for _, run := range []struct {
			parallel int
			body     time.Duration
		}{{1, 0}, {8, 0}, {1, 200 * time.Millisecond}, {8, 200 * time.Millisecond}} {
			parallel := run.parallel
			b.Run(fmt.Sprintf("%s/parallel=%d/body=%s", way.name, parallel, run.body), func(b *testing.B) {
				var next atomic.Int64
				var mu sync.Mutex
				waits := make([]time.Duration, 0, b.N)
				var wg sync.WaitGroup
				b.ResetTimer()
				for range parallel {
					wg.Go(func() {
						ctx := context.Background()
						for next.Add(1) <= int64(b.N) {
							// Until the database answers its first statement: a
							// lazily connected DB pays its connect there.
							start := time.Now()
							db, cleanup, err := way.get(ctx)
							if err == nil {
								_, err = db.Exec(ctx, "SELECT 1")
							}
							wait := time.Since(start)
							if err != nil {
								b.Error(err)
								return
							}
							// The test body: a write and a read, and the rest of
							// its time (assertions, the code under test).
							time.Sleep(run.body)
							if _, err := db.Exec(ctx, `INSERT INTO t1 (account_id, label) VALUES (1, 'bench')`); err != nil {
								b.Error(err)
							}
							var n int
							if err := db.QueryRow(ctx, `SELECT count(*) FROM t1`).Scan(&n); err != nil || n != 51 {
								b.Errorf("t1 has %d rows (%v), want the 50 migrated and this test's one", n, err)
							}
							cleanup()
							mu.Lock()
							waits = append(waits, wait)
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				slices.Sort(waits)
				if len(waits) > 0 {
					b.ReportMetric(ms(waits[len(waits)/2]), "p50-ms")
					b.ReportMetric(ms(waits[min(len(waits)-1, len(waits)*99/100)]), "p99-ms")
				}
			})
		}
	}
}

// BenchmarkFirstUse is what the first test of a run pays: building the
// template for migrations no binary has built yet ("template"), and, with
// no server given, starting a throwaway cluster from the local binaries
// ("cluster").
func BenchmarkFirstUse(b *testing.B) {
	admin := pgtest.AdminURL(b)
	b.Run("template", func(b *testing.B) {
		for i := range b.N {
			fsys := benchSchema()
			fsys["999_unique.sql"] = &fstest.MapFile{Data: []byte(fmt.Sprintf("-- %d %d", time.Now().UnixNano(), i))}
			o := &options{migrations: fsys}
			name, _, err := templateName(o)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := templateFor(context.Background(), admin, o); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			a, _ := adminFor(context.Background(), admin)
			for _, sql := range []string{"ALTER DATABASE " + ident(name) + " WITH IS_TEMPLATE false", "DROP DATABASE " + ident(name)} {
				if err := a.exec(context.Background(), sql); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
	})
	b.Run("cluster", func(b *testing.B) {
		for range b.N {
			c, err := pgtest.Start(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
