-- Alerts: webhook endpoints, the delivery queue fed from the events outbox, attempts.

-- An event is dispatched once its messages exist (fan-out marks it in the same
-- transaction).
ALTER TABLE events ADD COLUMN dispatched_at INTEGER;
CREATE INDEX events_undispatched ON events (id) WHERE dispatched_at IS NULL;

CREATE TABLE webhook_endpoints (
    id                     BLOB PRIMARY KEY,
    tenant_id              BLOB NOT NULL,
    url                    TEXT NOT NULL,
    format                 TEXT NOT NULL,
    events                 TEXT NOT NULL DEFAULT '[]',
    min_severity           TEXT,
    store_ids              TEXT NOT NULL DEFAULT '[]',
    exchanges              TEXT NOT NULL DEFAULT '[]',
    headers                TEXT NOT NULL DEFAULT '{}',
    routing_key            TEXT,
    secret_sealed          TEXT NOT NULL,
    secret_version         INTEGER NOT NULL DEFAULT 1,
    previous_secret_sealed TEXT,
    previous_expires_at    INTEGER,
    enabled                INTEGER NOT NULL DEFAULT 1,
    disabled_reason        TEXT,
    failing_since          INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE webhook_messages (
    id               BLOB PRIMARY KEY,
    tenant_id        BLOB NOT NULL,
    endpoint_id      BLOB NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         BLOB,
    event_type       TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    incident_id      BLOB,
    hit_id           BLOB,
    payload          TEXT NOT NULL DEFAULT '{}',
    body             TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    occurred_at      INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

-- Fan-out is idempotent: one message per endpoint per event.
CREATE UNIQUE INDEX webhook_messages_event ON webhook_messages (endpoint_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id                 BLOB PRIMARY KEY,
    message_id         BLOB NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    attempt            INTEGER NOT NULL,
    outcome            TEXT NOT NULL,
    status_code        INTEGER,
    duration_ms        INTEGER NOT NULL,
    response_excerpt   TEXT,
    response_truncated INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    error_kind         TEXT,
    at                 INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, attempt);
