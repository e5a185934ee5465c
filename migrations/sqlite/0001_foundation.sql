-- keytrap foundation schema (SQLite). Times are Unix milliseconds (INTEGER): SQLite's
-- text timestamps do not compare correctly across fraction widths. Ids are 16-byte
-- UUIDs (v7, so they sort by creation time).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE tenants (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    is_root    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) STRICT;

-- Only one root tenant.
CREATE UNIQUE INDEX tenants_one_root ON tenants (is_root) WHERE is_root = 1;

CREATE TABLE api_tokens (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    digest      BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, id);

CREATE TABLE stores (
    id         BLOB PRIMARY KEY,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    location   TEXT,
    labels     TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;

CREATE INDEX stores_tenant ON stores (tenant_id, id);

CREATE TABLE canaries (
    id            BLOB PRIMARY KEY,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    store_id      BLOB NOT NULL REFERENCES stores (id),
    exchange      TEXT NOT NULL,
    -- keyed HMAC of the API key: the key itself is never stored
    lookup_digest BLOB NOT NULL UNIQUE,
    key_version   INTEGER NOT NULL,
    memo          TEXT,
    labels        TEXT NOT NULL DEFAULT '{}',
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    disabled_at   INTEGER
) STRICT;

CREATE INDEX canaries_tenant ON canaries (tenant_id, id);
CREATE INDEX canaries_store ON canaries (store_id, id);

CREATE TABLE audit_log (
    id             BLOB PRIMARY KEY,
    tenant_id      BLOB NOT NULL,
    actor_token_id BLOB,
    action         TEXT NOT NULL,
    target_type    TEXT NOT NULL,
    target_id      TEXT,
    details        TEXT NOT NULL DEFAULT '{}',
    at             INTEGER NOT NULL
) STRICT;

CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
