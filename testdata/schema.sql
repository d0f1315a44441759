-- The test and demo schema: a multi-tenant chat backend.
-- Every tenant-owned table carries tenant_id so row-level security policies can
-- isolate tenants (see README, "Tenants and row-level security").

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    token_hash  bytea,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    email       text NOT NULL,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);

CREATE TABLE conversations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    user_id     bigint NOT NULL REFERENCES users (id),
    title       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant_user_idx ON conversations (tenant_id, user_id, updated_at DESC);

CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (id),
    conversation_id bigint NOT NULL REFERENCES conversations (id),
    role            text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content         text NOT NULL,
    client_id       text UNIQUE,
    tokens          integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);
CREATE INDEX messages_tenant_created_idx ON messages (tenant_id, created_at);

CREATE TABLE usage_records (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (id),
    user_id         bigint NOT NULL REFERENCES users (id),
    conversation_id bigint REFERENCES conversations (id),
    tokens_used     integer NOT NULL DEFAULT 0,
    cost_cents      numeric(12, 4) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_tenant_created_idx ON usage_records (tenant_id, created_at);
CREATE INDEX usage_records_user_idx ON usage_records (user_id);
