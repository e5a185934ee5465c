-- Where each canary was planted (issue 5): a table row, a file, a snapshot. One
-- placement per canary, so an incident names exactly one place.
CREATE TABLE placements (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants (id),
    canary_id  UUID NOT NULL UNIQUE REFERENCES canaries (id),
    store_id   UUID NOT NULL REFERENCES stores (id),
    -- 'database' or 'file'
    kind       TEXT NOT NULL,
    -- the database URL without credentials, or the file path
    target     TEXT NOT NULL,
    -- the table, or the file format
    location   TEXT NOT NULL,
    -- how to find the row again: `id=42`, or NULL (found by its API key)
    row_key    TEXT,
    snapshot   TEXT,
    details    JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX placements_tenant_store ON placements (tenant_id, store_id, id);
