//! Webhook endpoints, the delivery queue and attempts on PostgreSQL. Fan-out and claims
//! lock rows with `FOR UPDATE SKIP LOCKED`, so several workers share the queue without
//! ever holding the same event or message at once. Queueing a message (test, retry)
//! sends a `NOTIFY` on [`WAKE_CHANNEL`]; hits do too (see `trap.rs`).

use chrono::{DateTime, Utc};
use keytrap_store::*;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::{backend, insert_audit, PgDatabase};

// The bulk statements of fan-out, claims and group commits are sent unprepared
// (`persistent(false)`): planned with their actual arrays every time. A cached generic
// plan is frozen at the table sizes of its sixth run: on a young database (a few hundred
// messages) it joined the attempts' arrays to the queue with a nested loop over every
// pending row, 1 s for 256 rows once the queue held 20,000, and stayed so until
// autovacuum's next ANALYZE. Planning costs well under a millisecond per batch.

/// The channel workers `LISTEN` on: notified in the transaction of every hit batch that
/// may have written events, and of every directly queued message.
pub const WAKE_CHANNEL: &str = "keytrap_alerts";

fn endpoint_row(r: &PgRow) -> Result<WebhookEndpoint> {
    let sev: Option<String> = r.try_get("min_severity").map_err(backend)?;
    let events: Json<Vec<String>> = r.try_get("events").map_err(backend)?;
    let store_ids: Json<Vec<Uuid>> = r.try_get("store_ids").map_err(backend)?;
    let exchanges: Json<Vec<String>> = r.try_get("exchanges").map_err(backend)?;
    let headers: Json<std::collections::BTreeMap<String, String>> =
        r.try_get("headers").map_err(backend)?;
    Ok(WebhookEndpoint {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        url: r.try_get("url").map_err(backend)?,
        format: r.try_get("format").map_err(backend)?,
        events: events.0,
        min_severity: sev.as_deref().map(parse_text).transpose()?,
        store_ids: store_ids.0,
        exchanges: exchanges.0,
        headers: headers.0,
        routing_key: r.try_get("routing_key").map_err(backend)?,
        secret_sealed: r.try_get("secret_sealed").map_err(backend)?,
        secret_version: r.try_get("secret_version").map_err(backend)?,
        previous_secret_sealed: r.try_get("previous_secret_sealed").map_err(backend)?,
        previous_expires_at: r.try_get("previous_expires_at").map_err(backend)?,
        enabled: r.try_get("enabled").map_err(backend)?,
        disabled_reason: r.try_get("disabled_reason").map_err(backend)?,
        failing_since: r.try_get("failing_since").map_err(backend)?,
        created_at: r.try_get("created_at").map_err(backend)?,
        updated_at: r.try_get("updated_at").map_err(backend)?,
    })
}

fn message_row(r: &PgRow) -> Result<WebhookMessage> {
    let status: &str = r.try_get("status").map_err(backend)?;
    let payload: Json<serde_json::Value> = r.try_get("payload").map_err(backend)?;
    Ok(WebhookMessage {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        endpoint_id: r.try_get("endpoint_id").map_err(backend)?,
        event_id: r.try_get("event_id").map_err(backend)?,
        event_type: r.try_get("event_type").map_err(backend)?,
        webhook_id: r.try_get("webhook_id").map_err(backend)?,
        incident_id: r.try_get("incident_id").map_err(backend)?,
        hit_id: r.try_get("hit_id").map_err(backend)?,
        payload: payload.0,
        body: r.try_get("body").map_err(backend)?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        attempts: r.try_get("attempts").map_err(backend)?,
        next_attempt_at: r.try_get("next_attempt_at").map_err(backend)?,
        lease_owner: r.try_get("lease_owner").map_err(backend)?,
        lease_expires_at: r.try_get("lease_expires_at").map_err(backend)?,
        occurred_at: r.try_get("occurred_at").map_err(backend)?,
        created_at: r.try_get("created_at").map_err(backend)?,
        updated_at: r.try_get("updated_at").map_err(backend)?,
    })
}

fn attempt_row(r: &PgRow) -> Result<WebhookAttempt> {
    Ok(WebhookAttempt {
        id: r.try_get("id").map_err(backend)?,
        message_id: r.try_get("message_id").map_err(backend)?,
        attempt: r.try_get("attempt").map_err(backend)?,
        outcome: r.try_get("outcome").map_err(backend)?,
        status_code: r.try_get("status_code").map_err(backend)?,
        duration_ms: r.try_get("duration_ms").map_err(backend)?,
        response_excerpt: r.try_get("response_excerpt").map_err(backend)?,
        response_truncated: r.try_get("response_truncated").map_err(backend)?,
        error: r.try_get("error").map_err(backend)?,
        error_kind: r.try_get("error_kind").map_err(backend)?,
        at: r.try_get("at").map_err(backend)?,
    })
}

/// Now at the microsecond precision PostgreSQL stores, so returned rows equal stored ones.
fn now() -> DateTime<Utc> {
    let n = Utc::now();
    DateTime::from_timestamp_micros(n.timestamp_micros()).unwrap_or(n)
}

async fn notify<'c, E: sqlx::Executor<'c, Database = Postgres>>(exec: E) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(exec)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The tenants with an enabled endpoint subscribed to `hit.recorded`.
const HIT_SUBSCRIBERS: &str = "SELECT DISTINCT tenant_id FROM webhook_endpoints
                     WHERE enabled AND events @> '[\"hit.recorded\"]'::jsonb";

impl PgDatabase {
    /// A connection listening on [`WAKE_CHANNEL`]; each notification means "there may be
    /// alert work". The worker still polls in case the connection drops.
    pub async fn alert_listener(&self) -> Result<PgListener> {
        let mut l = PgListener::connect_with(self.pool())
            .await
            .map_err(backend)?;
        l.listen(WAKE_CHANNEL).await.map_err(backend)?;
        Ok(l)
    }

    /// Wakes `notify` on every notification on [`WAKE_CHANNEL`], reconnecting after a
    /// lost connection (and waking once then, since notifications may have been missed).
    pub fn spawn_alert_wakeups(
        &self,
        notify: std::sync::Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<()> {
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                match db.alert_listener().await {
                    Ok(mut l) => {
                        notify.notify_one();
                        loop {
                            match l.try_recv().await {
                                Ok(Some(_)) => notify.notify_one(),
                                Ok(None) => {
                                    // Reconnected inside sqlx: anything may have been missed.
                                    notify.notify_one();
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "alert LISTEN connection failed; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN for alert wake-ups; polling meanwhile")
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    }

    /// The tenants with an enabled `hit.recorded` subscription (cached; see
    /// [`HitSubscribers`]). Read on `c` when nothing is cached yet.
    pub(crate) async fn hit_event_tenants(
        &self,
        c: &mut sqlx::PgConnection,
    ) -> Result<std::sync::Arc<Vec<Uuid>>> {
        self.hit_subscribers
            .tenants(
                |generation| {
                    // Never in the hit's transaction: a background read replaces it, on
                    // the pool's runtime (not the trap writer's, which runs only while it
                    // commits).
                    let db = self.clone();
                    self.runtime.spawn(async move {
                        let read = sqlx::query_scalar(HIT_SUBSCRIBERS)
                            .fetch_all(db.pool())
                            .await;
                        if let Err(e) = db.hit_subscribers.refreshed(generation, read) {
                            tracing::warn!(error = %e, "reading hit.recorded subscribers failed");
                        }
                    });
                },
                || async {
                    sqlx::query_scalar(HIT_SUBSCRIBERS)
                        .fetch_all(&mut *c)
                        .await
                        .map_err(backend)
                },
            )
            .await
    }

    /// `hit.recorded` outbox rows, in the hits' transaction, for the hits of tenants with
    /// a subscribed enabled endpoint. With none (the usual case) this is a cached check
    /// ([`HitSubscribers`], refreshed in the background): the trap's transaction does
    /// no more than before.
    pub(crate) async fn insert_hit_events(
        &self,
        c: &mut sqlx::PgConnection,
        rows: &[(&Hit, Uuid)],
    ) -> Result<()> {
        let tenants = self.hit_event_tenants(c).await?;
        if tenants.is_empty() {
            return Ok(());
        }
        let wanted: Vec<&(&Hit, Uuid)> = rows
            .iter()
            .filter(|(h, _)| tenants.binary_search(&h.tenant_id).is_ok())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = wanted.iter().map(|_| Uuid::now_v7()).collect();
        let tenant: Vec<Uuid> = wanted.iter().map(|(h, _)| h.tenant_id).collect();
        let incident: Vec<Uuid> = wanted.iter().map(|(_, i)| *i).collect();
        let hit: Vec<Uuid> = wanted.iter().map(|(h, _)| h.id).collect();
        let payload: Vec<String> = wanted
            .iter()
            .map(|(h, i)| hit_event_payload(h, *i).to_string())
            .collect();
        let at: Vec<DateTime<Utc>> = wanted.iter().map(|(h, _)| h.received_at).collect();
        sqlx::query(
            "INSERT INTO events (id, tenant_id, event_type, incident_id, hit_id, payload, created_at)
             SELECT id, tenant_id, $7, incident_id, hit_id, payload::jsonb, created_at
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[])
               AS t (id, tenant_id, incident_id, hit_id, payload, created_at)",
        )
        .bind(&ids)
        .bind(&tenant)
        .bind(&incident)
        .bind(&hit)
        .bind(&payload)
        .bind(&at)
        .bind(HIT_RECORDED)
        .execute(&mut *c)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn wh_create(
        &self,
        e: NewWebhookEndpoint,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        let at = now();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, format, events, min_severity, store_ids,
               exchanges, headers, routing_key, secret_sealed, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING *",
        )
        .bind(e.id)
        .bind(e.tenant_id)
        .bind(&e.url)
        .bind(&e.format)
        .bind(Json(&e.events))
        .bind(e.min_severity.map(|s| s.as_str()))
        .bind(Json(&e.store_ids))
        .bind(Json(&e.exchanges))
        .bind(Json(&e.headers))
        .bind(&e.routing_key)
        .bind(&e.secret_sealed)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        self.hit_subscribers.invalidate();
        endpoint_row(&row)
    }

    pub(crate) async fn wh_get(&self, tenant: Uuid, id: Uuid) -> Result<Option<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?
            .as_ref()
            .map(endpoint_row)
            .transpose()
    }

    pub(crate) async fn wh_list(&self, tenant: Uuid) -> Result<Vec<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(self.pool())
            .await
            .map_err(backend)?
            .iter()
            .map(endpoint_row)
            .collect()
    }

    pub(crate) async fn wh_update(
        &self,
        e: &WebhookEndpoint,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        let at = now();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        // Undelivered messages are rendered again with the new format and settings (a
        // kept body would go out with the new format's content type). Messages before
        // their endpoint: the lock order of a group commit (see `wh_delete`).
        sqlx::query(
            "UPDATE webhook_messages SET body = NULL
             WHERE endpoint_id = $1 AND tenant_id = $2 AND status <> 'delivered'",
        )
        .bind(e.id)
        .bind(e.tenant_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, format = $2, events = $3, min_severity = $4,
               store_ids = $5, exchanges = $6, headers = $7, routing_key = $8, updated_at = $9
             WHERE tenant_id = $10 AND id = $11 RETURNING *",
        )
        .bind(&e.url)
        .bind(&e.format)
        .bind(Json(&e.events))
        .bind(e.min_severity.map(|s| s.as_str()))
        .bind(Json(&e.store_ids))
        .bind(Json(&e.exchanges))
        .bind(Json(&e.headers))
        .bind(&e.routing_key)
        .bind(at)
        .bind(e.tenant_id)
        .bind(e.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        self.hit_subscribers.invalidate();
        endpoint_row(&row)
    }

    pub(crate) async fn wh_set_enabled(
        &self,
        tenant: Uuid,
        id: Uuid,
        enabled: bool,
        reason: Option<&str>,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        let at = now();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET enabled = $1, disabled_reason = $2,
               failing_since = CASE WHEN $1 THEN NULL ELSE failing_since END, updated_at = $3
             WHERE tenant_id = $4 AND id = $5 RETURNING *",
        )
        .bind(enabled)
        .bind(if enabled { None } else { reason })
        .bind(at)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
        if enabled {
            notify(&mut *tx).await?;
        }
        tx.commit().await.map_err(backend)?;
        self.hit_subscribers.invalidate();
        endpoint_row(&row)
    }

    pub(crate) async fn wh_rotate(
        &self,
        tenant: Uuid,
        id: Uuid,
        sealed: &str,
        previous_expires_at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        let at = now();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed,
               previous_expires_at = $1, secret_sealed = $2, secret_version = secret_version + 1,
               updated_at = $3
             WHERE tenant_id = $4 AND id = $5 RETURNING *",
        )
        .bind(previous_expires_at)
        .bind(sealed)
        .bind(at)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        endpoint_row(&row)
    }

    pub(crate) async fn wh_delete(&self, tenant: Uuid, id: Uuid, audit: NewAudit) -> Result<()> {
        let at = now();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        // Lock order: a group commit (`wh_complete`) locks messages, then their endpoint.
        // The cascade of a bare DELETE would take them the other way round (the endpoint,
        // then its messages) and deadlock with a commit in flight, which PostgreSQL
        // resolves by aborting one side: a 500 here or a lost attempt record there.
        // Taking the messages first, in the commit's order, makes the delete wait instead.
        sqlx::query(
            "SELECT 1 FROM webhook_messages WHERE endpoint_id = $1 AND tenant_id = $2
             ORDER BY id FOR UPDATE",
        )
        .bind(id)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut *tx, audit, at).await?;
        let done = tx.commit().await.map_err(backend);
        self.hit_subscribers.invalidate();
        done
    }

    pub(crate) async fn wh_enqueue(
        &self,
        m: NewWebhookMessage,
        audit: NewAudit,
    ) -> Result<WebhookMessage> {
        let at = now();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_type, webhook_id,
               payload, status, next_attempt_at, occurred_at, created_at, updated_at)
             SELECT $1, tenant_id, id, $2, $3, $4, 'pending', $5, $5, $6, $6
             FROM webhook_endpoints WHERE tenant_id = $7 AND id = $8 RETURNING *",
        )
        .bind(m.id)
        .bind(&m.event_type)
        .bind(webhook_id(m.id))
        .bind(Json(&m.payload))
        .bind(m.at)
        .bind(at)
        .bind(m.tenant_id)
        .bind(m.endpoint_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
        notify(&mut *tx).await?;
        tx.commit().await.map_err(backend)?;
        message_row(&row)
    }

    pub(crate) async fn wh_get_message(
        &self,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<Option<WebhookMessage>> {
        sqlx::query("SELECT * FROM webhook_messages WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?
            .as_ref()
            .map(message_row)
            .transpose()
    }

    pub(crate) async fn wh_list_messages(
        &self,
        tenant: Uuid,
        endpoint: Uuid,
        page: Page,
    ) -> Result<Vec<WebhookMessage>> {
        sqlx::query(
            "SELECT * FROM webhook_messages WHERE tenant_id = $1 AND endpoint_id = $2
             AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
        )
        .bind(tenant)
        .bind(endpoint)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await
        .map_err(backend)?
        .iter()
        .map(message_row)
        .collect()
    }

    pub(crate) async fn wh_list_attempts(
        &self,
        tenant: Uuid,
        messages: &[Uuid],
    ) -> Result<Vec<WebhookAttempt>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "SELECT a.* FROM webhook_attempts a JOIN webhook_messages m ON m.id = a.message_id
             WHERE m.tenant_id = $1 AND a.message_id = ANY($2) ORDER BY a.message_id, a.attempt",
        )
        .bind(tenant)
        .bind(messages)
        .fetch_all(self.pool())
        .await
        .map_err(backend)?
        .iter()
        .map(attempt_row)
        .collect()
    }

    pub(crate) async fn wh_retry(
        &self,
        tenant: Uuid,
        id: Uuid,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<WebhookMessage> {
        let mut tx = self.pool().begin().await.map_err(backend)?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM webhook_messages WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let refused = match status.as_deref() {
            None => Some(StoreError::NotFound),
            Some("dead") => None,
            Some(_) => Some(StoreError::Conflict("undelivered dead letter".into())),
        };
        if let Some(e) = refused {
            // Release the row lock now: a dropped transaction only rolls back when its
            // pooled connection is next used, and claims would skip the row until then.
            tx.rollback().await.map_err(backend)?;
            return Err(e);
        }
        let row = sqlx::query(
            "UPDATE webhook_messages SET status = 'pending', attempts = 0, next_attempt_at = $1,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
             WHERE id = $2 RETURNING *",
        )
        .bind(at)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, audit, at).await?;
        notify(&mut *tx).await?;
        tx.commit().await.map_err(backend)?;
        message_row(&row)
    }

    pub(crate) async fn wh_dispatch(&self, limit: u32) -> Result<u32> {
        // The worker calls this every round and usually finds nothing: one indexed read
        // then, instead of a transaction.
        let pending: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE dispatched_at IS NULL)")
                .fetch_one(self.pool())
                .await
                .map_err(backend)?;
        if !pending {
            return Ok(0);
        }
        let at = now();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        // SKIP LOCKED: two workers fanning out at once take disjoint events.
        let rows = sqlx::query(
            "SELECT * FROM events WHERE dispatched_at IS NULL ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .persistent(false)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        if rows.is_empty() {
            tx.rollback().await.map_err(backend)?;
            return Ok(0);
        }
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let payload: Json<serde_json::Value> = r.try_get("payload").map_err(backend)?;
            events.push(Event {
                id: r.try_get("id").map_err(backend)?,
                tenant_id: r.try_get("tenant_id").map_err(backend)?,
                event_type: r.try_get("event_type").map_err(backend)?,
                incident_id: r.try_get("incident_id").map_err(backend)?,
                hit_id: r.try_get("hit_id").map_err(backend)?,
                payload: payload.0,
                created_at: r.try_get("created_at").map_err(backend)?,
            });
        }
        let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
        let endpoints: Vec<WebhookEndpoint> =
            sqlx::query("SELECT * FROM webhook_endpoints WHERE enabled AND tenant_id = ANY($1)")
                .bind(&tenants)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?
                .iter()
                .map(endpoint_row)
                .collect::<Result<_>>()?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        // One bulk insert for the whole fan-out (a row per event per matching endpoint).
        let mut m_id = Vec::new();
        let mut m_tenant = Vec::new();
        let mut m_endpoint = Vec::new();
        let mut m_event = Vec::new();
        let mut m_type = Vec::new();
        let mut m_webhook = Vec::new();
        let mut m_incident: Vec<Option<Uuid>> = Vec::new();
        let mut m_hit: Vec<Option<Uuid>> = Vec::new();
        let mut m_payload = Vec::new();
        let mut m_occurred = Vec::new();
        for ev in &events {
            for ep in endpoints.iter().filter(|ep| ep.matches(ev)) {
                let id = Uuid::now_v7();
                m_id.push(id);
                m_tenant.push(ev.tenant_id);
                m_endpoint.push(ep.id);
                m_event.push(ev.id);
                m_type.push(ev.event_type.clone());
                m_webhook.push(webhook_id(id));
                m_incident.push(ev.incident_id);
                m_hit.push(ev.hit_id);
                m_payload.push(ev.payload.to_string());
                m_occurred.push(ev.created_at);
            }
        }
        if !m_id.is_empty() {
            sqlx::query(
                "INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id, event_type,
                   webhook_id, incident_id, hit_id, payload, status, next_attempt_at,
                   occurred_at, created_at, updated_at)
                 SELECT id, tenant_id, endpoint_id, event_id, event_type, webhook_id, incident_id,
                   hit_id, payload::jsonb, 'pending', $11, occurred_at, $11, $11
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                   $7::uuid[], $8::uuid[], $9::text[], $10::timestamptz[])
                   AS t (id, tenant_id, endpoint_id, event_id, event_type, webhook_id, incident_id,
                   hit_id, payload, occurred_at)
                 ON CONFLICT DO NOTHING",
            )
            .persistent(false)
            .bind(&m_id)
            .bind(&m_tenant)
            .bind(&m_endpoint)
            .bind(&m_event)
            .bind(&m_type)
            .bind(&m_webhook)
            .bind(&m_incident)
            .bind(&m_hit)
            .bind(&m_payload)
            .bind(&m_occurred)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        sqlx::query("UPDATE events SET dispatched_at = $1 WHERE id = ANY($2)")
            .persistent(false)
            .bind(at)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(events.len() as u32)
    }

    pub(crate) async fn wh_claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedMessage>> {
        let until = req.now + lease_duration(req.lease);
        // The candidates are locked with SKIP LOCKED (a concurrent claimer skips them);
        // the per-endpoint cap is applied on the locked set, since a window function
        // cannot sit in a FOR UPDATE query itself.
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "WITH cand AS (
               SELECT m.id, m.endpoint_id, m.next_attempt_at FROM webhook_messages m
               WHERE m.status = 'pending' AND m.next_attempt_at <= ",
        );
        q.push_bind(req.now)
            .push(" AND (m.lease_expires_at IS NULL OR m.lease_expires_at <= ")
            .push_bind(req.now)
            .push(") AND m.endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled)");
        if !req.exclude_endpoints.is_empty() {
            q.push(" AND NOT (m.endpoint_id = ANY(")
                .push_bind(req.exclude_endpoints.clone())
                .push("))");
        }
        q.push(" ORDER BY m.next_attempt_at LIMIT ")
            .push_bind(i64::from(req.limit) * 4)
            .push(
                " FOR UPDATE OF m SKIP LOCKED),
             ranked AS (SELECT id, next_attempt_at,
               row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS rn
               FROM cand),
             chosen AS (SELECT id FROM ranked WHERE rn <= ",
            )
            .push_bind(i64::from(req.per_endpoint.max(1)))
            .push(" ORDER BY next_attempt_at LIMIT ")
            .push_bind(i64::from(req.limit))
            .push(") UPDATE webhook_messages SET lease_owner = ")
            .push_bind(&req.owner)
            .push(", lease_expires_at = ")
            .push_bind(until)
            .push(" WHERE id IN (SELECT id FROM chosen) RETURNING *");
        // One statement is atomic on its own: no explicit transaction (two round trips
        // fewer per claim). The endpoints are read after it; a change committed in between
        // is at worst as fresh as the claim.
        let mut messages: Vec<WebhookMessage> = q
            .build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(backend)?
            .iter()
            .map(message_row)
            .collect::<Result<_>>()?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut ep_ids: Vec<Uuid> = messages.iter().map(|m| m.endpoint_id).collect();
        ep_ids.sort();
        ep_ids.dedup();
        let endpoints: std::collections::HashMap<Uuid, WebhookEndpoint> =
            sqlx::query("SELECT * FROM webhook_endpoints WHERE id = ANY($1)")
                .bind(&ep_ids)
                .fetch_all(self.pool())
                .await
                .map_err(backend)?
                .iter()
                .map(|r| endpoint_row(r).map(|e| (e.id, e)))
                .collect::<Result<_>>()?;
        messages.sort_by_key(|m| m.next_attempt_at);
        Ok(messages
            .into_iter()
            .filter_map(|m| {
                endpoints.get(&m.endpoint_id).map(|ep| ClaimedMessage {
                    endpoint: ep.clone(),
                    message: m,
                })
            })
            .collect())
    }

    /// A group commit in three statements whatever its size (`UNNEST` arrays): the
    /// messages still leased by their owner, the attempt rows of those, and each touched
    /// endpoint's failure clock folded in batch order. The outcome is the one applying
    /// the results one by one would give: a message listed twice is applied once (its
    /// first result releases the lease, so a later one finds it gone).
    pub(crate) async fn wh_complete(&self, results: &[AttemptResult]) -> Result<Vec<bool>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let at = now();
        let mut seen = std::collections::HashSet::with_capacity(results.len());
        let first: Vec<bool> = results.iter().map(|r| seen.insert(r.message_id)).collect();
        let mut ids = Vec::with_capacity(results.len());
        let mut owners = Vec::with_capacity(results.len());
        let mut statuses = Vec::with_capacity(results.len());
        let mut attempts = Vec::with_capacity(results.len());
        let mut next_ats = Vec::with_capacity(results.len());
        let mut bodies: Vec<Option<&str>> = Vec::with_capacity(results.len());
        for (r, _) in results.iter().zip(&first).filter(|(_, f)| **f) {
            let (status, next_at) = next_state(r.next, at);
            ids.push(r.message_id);
            owners.push(r.lease_owner.as_str());
            statuses.push(status);
            attempts.push(r.attempt.attempt);
            next_ats.push(next_at);
            bodies.push(r.body.as_deref());
        }
        let mut tx = self.pool().begin().await.map_err(backend)?;
        let updated: std::collections::HashMap<Uuid, Uuid> = sqlx::query(
            "UPDATE webhook_messages m SET status = t.status, attempts = t.attempts,
               next_attempt_at = t.next_at, body = COALESCE(m.body, t.body), lease_owner = NULL,
               lease_expires_at = NULL, updated_at = $7
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::timestamptz[], $6::text[])
               AS t (id, owner, status, attempts, next_at, body)
             WHERE m.id = t.id AND m.lease_owner = t.owner AND m.status = 'pending'
             RETURNING m.id, m.endpoint_id",
        )
        .persistent(false)
        .bind(&ids)
        .bind(&owners)
        .bind(&statuses)
        .bind(&attempts)
        .bind(&next_ats)
        .bind(&bodies)
        .bind(at)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| -> Result<(Uuid, Uuid)> {
            Ok((
                r.try_get("id").map_err(backend)?,
                r.try_get("endpoint_id").map_err(backend)?,
            ))
        })
        .collect::<Result<_>>()?;
        let applied: Vec<Option<Uuid>> = results
            .iter()
            .zip(&first)
            .map(|(r, f)| {
                if *f {
                    updated.get(&r.message_id).copied()
                } else {
                    None
                }
            })
            .collect();
        if !updated.is_empty() {
            let mut a_id = Vec::with_capacity(updated.len());
            let mut a_msg = Vec::with_capacity(updated.len());
            let mut a_no = Vec::with_capacity(updated.len());
            let mut a_outcome = Vec::with_capacity(updated.len());
            let mut a_status: Vec<Option<i32>> = Vec::with_capacity(updated.len());
            let mut a_ms = Vec::with_capacity(updated.len());
            let mut a_excerpt: Vec<Option<&str>> = Vec::with_capacity(updated.len());
            let mut a_trunc = Vec::with_capacity(updated.len());
            let mut a_error: Vec<Option<&str>> = Vec::with_capacity(updated.len());
            let mut a_kind: Vec<Option<&str>> = Vec::with_capacity(updated.len());
            let mut a_at = Vec::with_capacity(updated.len());
            let mut clocks = EndpointClocks::default();
            for (r, ep) in results.iter().zip(&applied) {
                let Some(ep) = ep else { continue };
                let a = &r.attempt;
                a_id.push(a.id);
                a_msg.push(r.message_id);
                a_no.push(a.attempt);
                a_outcome.push(a.outcome.as_str());
                a_status.push(a.status_code);
                a_ms.push(a.duration_ms);
                a_excerpt.push(a.response_excerpt.as_deref());
                a_trunc.push(a.response_truncated);
                a_error.push(a.error.as_deref());
                a_kind.push(a.error_kind.as_deref());
                a_at.push(a.at);
                clocks.apply(*ep, r);
            }
            sqlx::query(
                "INSERT INTO webhook_attempts (id, message_id, attempt, outcome, status_code,
                   duration_ms, response_excerpt, response_truncated, error, error_kind, at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int4[], $4::text[], $5::int4[],
                   $6::int8[], $7::text[], $8::bool[], $9::text[], $10::text[], $11::timestamptz[])",
            )
            .persistent(false)
            .bind(&a_id)
            .bind(&a_msg)
            .bind(&a_no)
            .bind(&a_outcome)
            .bind(&a_status)
            .bind(&a_ms)
            .bind(&a_excerpt)
            .bind(&a_trunc)
            .bind(&a_error)
            .bind(&a_kind)
            .bind(&a_at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let (e_id, e_reset, e_fail, e_reason) = clocks.columns();
            sqlx::query(
                "UPDATE webhook_endpoints e SET
                   failing_since = CASE WHEN t.reset THEN t.fail_at
                                        ELSE COALESCE(e.failing_since, t.fail_at) END,
                   enabled = CASE WHEN t.reason IS NULL THEN e.enabled ELSE FALSE END,
                   disabled_reason = COALESCE(t.reason, e.disabled_reason)
                 FROM UNNEST($1::uuid[], $2::bool[], $3::timestamptz[], $4::text[])
                   AS t (id, reset, fail_at, reason)
                 WHERE e.id = t.id",
            )
            .persistent(false)
            .bind(&e_id)
            .bind(&e_reset)
            .bind(&e_fail)
            .bind(&e_reason)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(applied.iter().map(Option::is_some).collect())
    }

    pub(crate) async fn wh_release(&self, owner: &str, ids: &[Uuid]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let n = sqlx::query(
            "UPDATE webhook_messages SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
             WHERE id = ANY($2) AND lease_owner = $3 AND status = 'pending'",
        )
        .persistent(false)
        .bind(now())
        .bind(ids)
        .bind(owner)
        .execute(self.pool())
        .await
        .map_err(backend)?
        .rows_affected();
        if n > 0 {
            // Another worker may take them now.
            notify(self.pool()).await?;
        }
        Ok(n)
    }

    pub(crate) async fn wh_get_hit(&self, tenant: Uuid, id: Uuid) -> Result<Option<Hit>> {
        sqlx::query("SELECT * FROM hits WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?
            .as_ref()
            .map(crate::trap::hit_row)
            .transpose()
    }
}

/// A message's status and next attempt time after an attempt.
fn next_state(next: MessageNext, at: DateTime<Utc>) -> (&'static str, DateTime<Utc>) {
    match next {
        MessageNext::Delivered => ("delivered", at),
        MessageNext::RetryAt(t) => ("pending", t),
        MessageNext::Dead => ("dead", at),
    }
}
