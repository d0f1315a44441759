package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgkit-dev/pgkit/internal/pgtest"
)

// roles are the two login roles the service runs as. Neither is a superuser
// nor owns a table, so row-level security applies to both:
//
//   - App runs every request, always inside pgkit.InTx(..., WithTenant(id)):
//     the policies show it only the current tenant's rows.
//   - Writer is the background Writer's: it may only INSERT into messages,
//     and a policy for it alone lets it do so without a tenant setting (a
//     batch mixes tenants). The composite foreign key (conversation_id,
//     tenant_id) still ties each row to a conversation of the same tenant,
//     and the WebSocket handler checked that conversation under RLS first.
type roles struct {
	App, Writer       string
	AppURL, WriterURL string
}

// setupLockKey serialises concurrent setups of one database ("chatsetp").
const setupLockKey int64 = 0x6368617473657470

// setup prepares the database at ownerURL (a superuser, or the owner of the
// tables, who may create roles): the schema if missing, the tenant
// consistency keys, row-level security on every tenant table, the token
// functions and the two roles, with fresh passwords. It is idempotent. The
// role names default to <database>_app and <database>_writer.
func setup(ctx context.Context, ownerURL, password string) (roles, error) {
	conn, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		return roles{}, fmt.Errorf("setup: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	tx, err := conn.Begin(ctx)
	if err != nil {
		return roles{}, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, setupLockKey); err != nil {
		return roles{}, err
	}
	var hasSchema bool
	var database, schema string
	if err := tx.QueryRow(ctx, `SELECT to_regclass('tenants') IS NOT NULL, current_database(), current_schema()`).
		Scan(&hasSchema, &database, &schema); err != nil {
		return roles{}, err
	}
	if !hasSchema {
		sql, err := os.ReadFile(pgtest.SchemaPath())
		if err != nil {
			return roles{}, fmt.Errorf("setup: read schema: %w", err)
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			return roles{}, fmt.Errorf("setup: apply schema: %w", err)
		}
	}
	r := roles{App: database + "_app", Writer: database + "_writer"}
	if password == "" {
		password = randomHex(16)
	}
	// Role passwords cannot be bound parameters; a hex string needs no quoting care.
	if strings.ContainsAny(password, `'\`) {
		return roles{}, errors.New("setup: the role password may not contain quotes or backslashes")
	}
	for _, role := range []string{r.App, r.Writer} {
		if _, err := tx.Exec(ctx, `DO $$ BEGIN
			IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = `+quoteLiteral(role)+`) THEN
				CREATE ROLE `+ident(role)+` LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
			END IF; END $$;
			ALTER ROLE `+ident(role)+` PASSWORD '`+password+`'`); err != nil {
			return roles{}, fmt.Errorf("setup: role %s: %w", role, err)
		}
	}
	sql := strings.NewReplacer("{app}", ident(r.App), "{writer}", ident(r.Writer), "{schema}", ident(schema)).Replace(setupSQL)
	if _, err := tx.Exec(ctx, sql); err != nil {
		return roles{}, fmt.Errorf("setup: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return roles{}, err
	}
	if r.AppURL, err = withUser(ownerURL, r.App, password); err != nil {
		return roles{}, err
	}
	if r.WriterURL, err = withUser(ownerURL, r.Writer, password); err != nil {
		return roles{}, err
	}
	return r, nil
}

// dropRoles removes the roles setup created in the database at ownerURL
// (tests call it before dropping their database).
func dropRoles(ctx context.Context, ownerURL string, r roles) error {
	conn, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, role := range []string{r.App, r.Writer} {
		if _, err := conn.Exec(ctx, `DROP OWNED BY `+ident(role)+`; DROP ROLE `+ident(role)); err != nil {
			return err
		}
	}
	return nil
}

// setupSQL runs as the owner, after the schema, in one transaction.
//
// Token lookup happens before the tenant is known, so it cannot go through
// the tenant policies. It goes through chat_authenticate, a SECURITY DEFINER
// function: the app role has no privilege at all on tenants, and the function
// answers one question only (which tenant has exactly this token hash),
// so a bug in the service cannot list tenants or read hashes. A separate
// non-RLS connection would have needed a role that can read every tenant's
// row; the function keeps that power inside the database.
const setupSQL = `
DO $$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'users_id_tenant_key' AND conrelid = 'users'::regclass) THEN
		ALTER TABLE users ADD CONSTRAINT users_id_tenant_key UNIQUE (id, tenant_id);
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'conversations_id_tenant_key' AND conrelid = 'conversations'::regclass) THEN
		ALTER TABLE conversations ADD CONSTRAINT conversations_id_tenant_key UNIQUE (id, tenant_id);
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'conversations_user_tenant_fk' AND conrelid = 'conversations'::regclass) THEN
		ALTER TABLE conversations ADD CONSTRAINT conversations_user_tenant_fk
			FOREIGN KEY (user_id, tenant_id) REFERENCES users (id, tenant_id);
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'messages_conversation_tenant_fk' AND conrelid = 'messages'::regclass) THEN
		ALTER TABLE messages ADD CONSTRAINT messages_conversation_tenant_fk
			FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id);
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'usage_records_conversation_tenant_fk' AND conrelid = 'usage_records'::regclass) THEN
		ALTER TABLE usage_records ADD CONSTRAINT usage_records_conversation_tenant_fk
			FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id);
	END IF;
END $$;
CREATE UNIQUE INDEX IF NOT EXISTS tenants_token_hash_key ON tenants (token_hash);
CREATE INDEX IF NOT EXISTS usage_records_conversation_idx ON usage_records (conversation_id);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON users;
CREATE POLICY tenant_isolation ON users
	USING (tenant_id = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS tenant_isolation ON conversations;
CREATE POLICY tenant_isolation ON conversations
	USING (tenant_id = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS tenant_isolation ON messages;
CREATE POLICY tenant_isolation ON messages
	USING (tenant_id = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS tenant_isolation ON usage_records;
CREATE POLICY tenant_isolation ON usage_records
	USING (tenant_id = current_setting('app.tenant_id', true))
	WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
DROP POLICY IF EXISTS writer_insert ON messages;
CREATE POLICY writer_insert ON messages FOR INSERT TO {writer} WITH CHECK (true);
-- INSERT ... ON CONFLICT checks the new row against SELECT policies too;
-- the writer can read one column (client_id) and nothing else.
DROP POLICY IF EXISTS writer_dedupe ON messages;
CREATE POLICY writer_dedupe ON messages FOR SELECT TO {writer} USING (true);

CREATE OR REPLACE FUNCTION chat_authenticate(p_token_hash bytea) RETURNS text
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, {schema}
	AS $f$ SELECT id FROM tenants WHERE token_hash = p_token_hash $f$;

-- chat_create_tenant creates a tenant with its first user and returns the
-- user's id; the admin endpoint calls it (behind the admin token).
CREATE OR REPLACE FUNCTION chat_create_tenant(p_id text, p_name text, p_token_hash bytea) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}
	AS $f$
DECLARE uid bigint;
BEGIN
	INSERT INTO tenants (id, name, token_hash) VALUES (p_id, p_name, p_token_hash);
	PERFORM set_config('app.tenant_id', p_id, true);
	INSERT INTO users (tenant_id, email, name) VALUES (p_id, 'owner@' || p_id, p_name) RETURNING id INTO uid;
	RETURN uid;
END $f$;

REVOKE ALL ON FUNCTION chat_authenticate(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION chat_create_tenant(text, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chat_authenticate(bytea) TO {app};
GRANT EXECUTE ON FUNCTION chat_create_tenant(text, text, bytea) TO {app};

GRANT USAGE ON SCHEMA {schema} TO {app}, {writer};
REVOKE ALL ON tenants FROM {app}, {writer};
GRANT SELECT, INSERT, UPDATE, DELETE ON users, conversations, messages, usage_records TO {app};
GRANT INSERT ON messages TO {writer};
-- ON CONFLICT (client_id) needs to read the key column.
GRANT SELECT (client_id) ON messages TO {writer};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {app}, {writer};
`

// withUser returns u with its user and password replaced.
func withUser(u, user, password string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "postgres" && parsed.Scheme != "postgresql") {
		return "", errors.New("setup: the database URL must be a postgres:// URL")
	}
	parsed.User = url.UserPassword(user, password)
	return parsed.String(), nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
