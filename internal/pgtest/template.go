package pgtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5"
)

// modulePath is the module whose testdata/schema.sql the template applies.
const modulePath = "github.com/pgkit-dev/pgkit"

// templateLockKey is the pg_advisory_lock key that serialises template
// creation among test binaries sharing one server ("pgkittpl" in ASCII).
const templateLockKey int64 = 0x70676b697474706c

// SchemaPath returns the absolute path of testdata/schema.sql at the module
// root. It is found from this source file's location (embed cannot reach
// ../..), or, in a binary built with -trimpath, by walking up from the
// working directory to the module's go.mod.
func SchemaPath() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "schema.sql")
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			if isModuleRoot(dir) {
				return filepath.Join(dir, "testdata", "schema.sql")
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return filepath.Join("testdata", "schema.sql")
}

// isModuleRoot reports whether dir holds this module's go.mod.
func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == modulePath
		}
	}
	return false
}

// CreateTemplate makes sure the server at adminURL (a superuser
// connection) has a template database with testdata/schema.sql applied,
// and returns its name: pgkit_tpl_<first 12 hex digits of the schema's
// SHA-256>, so a changed schema gets a new template. It is safe when
// several processes call it at once on one server: creation is serialised
// with pg_advisory_lock, and a template is only used once it is complete
// (marked IS_TEMPLATE); a half-made one left by a crash is made again.
func CreateTemplate(ctx context.Context, adminURL string) (name string, err error) {
	schema, err := os.ReadFile(SchemaPath())
	if err != nil {
		return "", fmt.Errorf("pgtest: read schema: %w", err)
	}
	sum := sha256.Sum256(schema)
	name = "pgkit_tpl_" + hex.EncodeToString(sum[:])[:12]

	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("pgtest: connect to admin database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", templateLockKey); err != nil {
		return "", fmt.Errorf("pgtest: lock template creation: %w", err)
	}
	// Closing the connection releases the lock too; unlock early anyway.
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", templateLockKey) }()

	var isTemplate bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&isTemplate)
	switch {
	case err == nil && isTemplate:
		return name, nil
	case err == nil: // half made
		if _, err := conn.Exec(ctx, "DROP DATABASE "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
			return "", fmt.Errorf("pgtest: drop incomplete template %s: %w", name, err)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("pgtest: look for template %s: %w", name, err)
	}

	if _, err := conn.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)); err != nil {
		return "", fmt.Errorf("pgtest: create template %s: %w", name, err)
	}
	if err := applySchema(ctx, adminURL, name, string(schema)); err != nil {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)")
		return "", err
	}
	// No connections from now on: CREATE DATABASE ... TEMPLATE fails while
	// anyone is connected to the template.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+quoteIdent(name)+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return "", fmt.Errorf("pgtest: mark %s as a template: %w", name, err)
	}
	return name, nil
}

func applySchema(ctx context.Context, adminURL, database, schema string) error {
	u, err := withDatabase(adminURL, database)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return fmt.Errorf("pgtest: connect to template %s: %w", database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Without arguments Exec uses the simple protocol, which runs a script.
	if _, err := conn.Exec(ctx, schema); err != nil {
		return fmt.Errorf("pgtest: apply %s to template %s: %w", SchemaPath(), database, err)
	}
	return nil
}

// CreateDatabase creates a database pgkit_t_<random> from template (see
// CreateTemplate) on the server at adminURL and returns its URL and a
// function that drops it, ending any session still connected.
func CreateDatabase(ctx context.Context, adminURL, template string) (dbURL string, drop func(context.Context) error, err error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "pgkit_t_" + hex.EncodeToString(b[:])
	dbURL, err = withDatabase(adminURL, name)
	if err != nil {
		return "", nil, err
	}
	if err := adminExec(ctx, adminURL, "CREATE DATABASE "+quoteIdent(name)+" TEMPLATE "+quoteIdent(template)); err != nil {
		return "", nil, fmt.Errorf("pgtest: create database from template %s: %w", template, err)
	}
	drop = func(ctx context.Context) error {
		if err := adminExec(ctx, adminURL, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("pgtest: drop database %s: %w", name, err)
		}
		return nil
	}
	return dbURL, drop, nil
}

// adminExec runs one statement on a connection of its own to adminURL.
func adminExec(ctx context.Context, adminURL, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string {
	return pgx.Identifier{s}.Sanitize()
}
