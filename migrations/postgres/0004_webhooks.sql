-- Alerts: webhook endpoints, the delivery queue fed from the events outbox, attempts.

-- An event is dispatched once its messages exist (fan-out marks it in the same
-- transaction).
ALTER TABLE events ADD COLUMN dispatched_at TIMESTAMPTZ;
CREATE INDEX events_undispatched ON events (id) WHERE dispatched_at IS NULL;

CREATE TABLE webhook_endpoints (
    id                     UUID PRIMARY KEY,
    tenant_id              UUID NOT NULL,
    url                    TEXT NOT NULL,
    format                 TEXT NOT NULL,
    events                 JSONB NOT NULL DEFAULT '[]',
    min_severity           TEXT,
    store_ids              JSONB NOT NULL DEFAULT '[]',
    exchanges              JSONB NOT NULL DEFAULT '[]',
    headers                JSONB NOT NULL DEFAULT '{}',
    routing_key            TEXT,
    secret_sealed          TEXT NOT NULL,
    secret_version         INTEGER NOT NULL DEFAULT 1,
    previous_secret_sealed TEXT,
    previous_expires_at    TIMESTAMPTZ,
    enabled                BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason        TEXT,
    failing_since          TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE webhook_messages (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL,
    endpoint_id      UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         UUID,
    event_type       TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    incident_id      UUID,
    hit_id           UUID,
    payload          JSONB NOT NULL DEFAULT '{}',
    body             TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    occurred_at      TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- Fan-out is idempotent: one message per endpoint per event.
CREATE UNIQUE INDEX webhook_messages_event ON webhook_messages (endpoint_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id                 UUID PRIMARY KEY,
    message_id         UUID NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    attempt            INTEGER NOT NULL,
    outcome            TEXT NOT NULL,
    status_code        INTEGER,
    duration_ms        BIGINT NOT NULL,
    response_excerpt   TEXT,
    response_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    error              TEXT,
    error_kind         TEXT,
    at                 TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, attempt);
