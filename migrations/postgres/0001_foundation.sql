-- keytrap foundation schema (PostgreSQL). Ids are UUIDv7 (time-ordered).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    is_root    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX tenants_one_root ON tenants (is_root) WHERE is_root;

CREATE TABLE api_tokens (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    digest      BYTEA NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, id);

CREATE TABLE stores (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    location   TEXT,
    labels     JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE INDEX stores_tenant ON stores (tenant_id, id);

CREATE TABLE canaries (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id),
    store_id      UUID NOT NULL REFERENCES stores (id),
    exchange      TEXT NOT NULL,
    -- keyed HMAC of the API key: the key itself is never stored
    lookup_digest BYTEA NOT NULL UNIQUE,
    key_version   INTEGER NOT NULL,
    memo          TEXT,
    labels        JSONB NOT NULL DEFAULT '{}',
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    disabled_at   TIMESTAMPTZ
);

CREATE INDEX canaries_tenant ON canaries (tenant_id, id);
CREATE INDEX canaries_store ON canaries (store_id, id);

CREATE TABLE audit_log (
    id             UUID PRIMARY KEY,
    tenant_id      UUID NOT NULL,
    actor_token_id UUID,
    action         TEXT NOT NULL,
    target_type    TEXT NOT NULL,
    target_id      TEXT,
    details        JSONB NOT NULL DEFAULT '{}',
    at             TIMESTAMPTZ NOT NULL
);

CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
