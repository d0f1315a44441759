-- CREATE INDEX CONCURRENTLY cannot run in a transaction; on a large table it
-- also runs long, which is why main.go gives the migrations a
-- StatementTimeout of their own.

-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_tenant_created ON notes (tenant_id, created_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS notes_tenant_created;
