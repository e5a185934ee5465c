-- The trap's evidence: hits, incidents, events (the outbox alerts consume), unknown-key
-- counters, and orders remembered per canary.

CREATE TABLE hits (
    id                 BLOB PRIMARY KEY,
    tenant_id          BLOB NOT NULL,
    canary_id          BLOB NOT NULL REFERENCES canaries (id),
    store_id           BLOB NOT NULL REFERENCES stores (id),
    incident_id        BLOB,
    exchange           TEXT NOT NULL,
    method             TEXT NOT NULL,
    path               TEXT NOT NULL,
    query              TEXT,
    body_excerpt       TEXT,
    source_ip          TEXT NOT NULL,
    forwarded_for      TEXT,
    user_agent         TEXT,
    client_fingerprint TEXT,
    signature_state    TEXT NOT NULL,
    action_class       TEXT NOT NULL,
    action_params      TEXT NOT NULL DEFAULT '{}',
    severity           TEXT NOT NULL,
    received_at        INTEGER NOT NULL
) STRICT;

CREATE INDEX hits_tenant ON hits (tenant_id, id);
CREATE INDEX hits_canary ON hits (canary_id, id);
CREATE INDEX hits_store ON hits (store_id, id);

CREATE TABLE incidents (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('canary', 'store')),
    canary_id       BLOB,
    store_id        BLOB NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    severity        TEXT NOT NULL,
    hit_count       INTEGER NOT NULL,
    canary_count    INTEGER NOT NULL,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    last_hit_id     BLOB,
    acknowledged_at INTEGER,
    resolved_at     INTEGER
) STRICT;

CREATE INDEX incidents_tenant ON incidents (tenant_id, id);
-- One unresolved incident per canary, and one per store.
CREATE UNIQUE INDEX incidents_open_canary ON incidents (canary_id) WHERE kind = 'canary' AND status <> 'resolved';
CREATE UNIQUE INDEX incidents_open_store ON incidents (store_id) WHERE kind = 'store' AND status <> 'resolved';

CREATE TABLE events (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL,
    event_type  TEXT NOT NULL,
    incident_id BLOB,
    hit_id      BLOB,
    payload     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX events_tenant ON events (tenant_id, id);

-- Unknown keys are counted per (exchange, source), never stored one row per request.
CREATE TABLE unknown_sources (
    exchange      TEXT NOT NULL,
    source        TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    distinct_keys INTEGER NOT NULL DEFAULT 0,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    PRIMARY KEY (exchange, source)
) STRICT;

-- The first sighting of each unknown key per source, at most a bounded number per source.
CREATE TABLE unknown_keys (
    exchange         TEXT NOT NULL,
    source           TEXT NOT NULL,
    key_hash         BLOB NOT NULL,
    key_hint         TEXT NOT NULL,
    malformed        INTEGER NOT NULL,
    first_path       TEXT NOT NULL,
    first_user_agent TEXT,
    first_seen       INTEGER NOT NULL,
    PRIMARY KEY (exchange, source, key_hash)
) STRICT;

CREATE TABLE trap_orders (
    canary_id       BLOB NOT NULL REFERENCES canaries (id),
    order_id        TEXT NOT NULL,
    client_order_id TEXT,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    order_type      TEXT NOT NULL,
    price           TEXT,
    amount          TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (canary_id, order_id)
) STRICT;
