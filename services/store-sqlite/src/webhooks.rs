//! Webhook endpoints, the delivery queue and attempts on SQLite. Every write goes through
//! the single writer connection, so a claim's SELECT and UPDATE never race another
//! claimer: SQLite's one writer is the lock.

use chrono::{DateTime, Utc};
use keytrap_store::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::{backend, from_ms, insert_audit, ms, now, opt_from_ms, SqliteDatabase};

fn endpoint_row(r: &SqliteRow) -> Result<WebhookEndpoint> {
    let sev: Option<String> = r.try_get("min_severity").map_err(backend)?;
    Ok(WebhookEndpoint {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        url: r.try_get("url").map_err(backend)?,
        format: r.try_get("format").map_err(backend)?,
        events: json_list(r.try_get("events").map_err(backend)?)?,
        min_severity: sev.as_deref().map(parse_text).transpose()?,
        store_ids: json_list(r.try_get("store_ids").map_err(backend)?)?,
        exchanges: json_list(r.try_get("exchanges").map_err(backend)?)?,
        headers: json_list(r.try_get("headers").map_err(backend)?)?,
        routing_key: r.try_get("routing_key").map_err(backend)?,
        secret_sealed: r.try_get("secret_sealed").map_err(backend)?,
        secret_version: r.try_get("secret_version").map_err(backend)?,
        previous_secret_sealed: r.try_get("previous_secret_sealed").map_err(backend)?,
        previous_expires_at: opt_from_ms(r.try_get("previous_expires_at").map_err(backend)?)?,
        enabled: r.try_get::<i64, _>("enabled").map_err(backend)? != 0,
        disabled_reason: r.try_get("disabled_reason").map_err(backend)?,
        failing_since: opt_from_ms(r.try_get("failing_since").map_err(backend)?)?,
        created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
        updated_at: from_ms(r.try_get("updated_at").map_err(backend)?)?,
    })
}

fn message_row(r: &SqliteRow) -> Result<WebhookMessage> {
    let status: &str = r.try_get("status").map_err(backend)?;
    Ok(WebhookMessage {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        endpoint_id: r.try_get("endpoint_id").map_err(backend)?,
        event_id: r.try_get("event_id").map_err(backend)?,
        event_type: r.try_get("event_type").map_err(backend)?,
        webhook_id: r.try_get("webhook_id").map_err(backend)?,
        incident_id: r.try_get("incident_id").map_err(backend)?,
        hit_id: r.try_get("hit_id").map_err(backend)?,
        payload: json_list(r.try_get("payload").map_err(backend)?)?,
        body: r.try_get("body").map_err(backend)?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        attempts: r.try_get("attempts").map_err(backend)?,
        next_attempt_at: from_ms(r.try_get("next_attempt_at").map_err(backend)?)?,
        lease_owner: r.try_get("lease_owner").map_err(backend)?,
        lease_expires_at: opt_from_ms(r.try_get("lease_expires_at").map_err(backend)?)?,
        occurred_at: from_ms(r.try_get("occurred_at").map_err(backend)?)?,
        created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
        updated_at: from_ms(r.try_get("updated_at").map_err(backend)?)?,
    })
}

fn attempt_row(r: &SqliteRow) -> Result<WebhookAttempt> {
    Ok(WebhookAttempt {
        id: r.try_get("id").map_err(backend)?,
        message_id: r.try_get("message_id").map_err(backend)?,
        attempt: r.try_get("attempt").map_err(backend)?,
        outcome: r.try_get("outcome").map_err(backend)?,
        status_code: r.try_get("status_code").map_err(backend)?,
        duration_ms: r.try_get("duration_ms").map_err(backend)?,
        response_excerpt: r.try_get("response_excerpt").map_err(backend)?,
        response_truncated: r.try_get::<i64, _>("response_truncated").map_err(backend)? != 0,
        error: r.try_get("error").map_err(backend)?,
        error_kind: r.try_get("error_kind").map_err(backend)?,
        at: from_ms(r.try_get("at").map_err(backend)?)?,
    })
}

fn to_json<T: ToJsonText + ?Sized>(v: &T) -> String {
    v.to_json_text()
}

/// The tenants with an enabled endpoint subscribed to `hit.recorded`.
pub(crate) const HIT_SUBSCRIBERS: &str = "SELECT DISTINCT tenant_id FROM webhook_endpoints
                     WHERE enabled = 1 AND EXISTS
                       (SELECT 1 FROM json_each(webhook_endpoints.events) WHERE value = 'hit.recorded')";

impl SqliteDatabase {
    pub(crate) async fn wh_create(
        &self,
        e: NewWebhookEndpoint,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        let at = now();
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, format, events, min_severity, store_ids,
               exchanges, headers, routing_key, secret_sealed, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(e.id)
        .bind(e.tenant_id)
        .bind(&e.url)
        .bind(&e.format)
        .bind(to_json(&e.events))
        .bind(e.min_severity.map(|s| s.as_str()))
        .bind(to_json(&e.store_ids))
        .bind(to_json(&e.exchanges))
        .bind(to_json(&e.headers))
        .bind(&e.routing_key)
        .bind(&e.secret_sealed)
        .bind(ms(at))
        .bind(ms(at))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        self.hit_subscribers.invalidate();
        endpoint_row(&row)
    }

    pub(crate) async fn wh_get(&self, tenant: Uuid, id: Uuid) -> Result<Option<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE tenant_id = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.reader())
            .await
            .map_err(backend)?
            .as_ref()
            .map(endpoint_row)
            .transpose()
    }

    pub(crate) async fn wh_list(&self, tenant: Uuid) -> Result<Vec<WebhookEndpoint>> {
        sqlx::query("SELECT * FROM webhook_endpoints WHERE tenant_id = ? ORDER BY id")
            .bind(tenant)
            .fetch_all(self.reader())
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
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET url = ?, format = ?, events = ?, min_severity = ?,
               store_ids = ?, exchanges = ?, headers = ?, routing_key = ?, updated_at = ?
             WHERE tenant_id = ? AND id = ? RETURNING *",
        )
        .bind(&e.url)
        .bind(&e.format)
        .bind(to_json(&e.events))
        .bind(e.min_severity.map(|s| s.as_str()))
        .bind(to_json(&e.store_ids))
        .bind(to_json(&e.exchanges))
        .bind(to_json(&e.headers))
        .bind(&e.routing_key)
        .bind(ms(at))
        .bind(e.tenant_id)
        .bind(e.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        // Undelivered messages are rendered again with the new format and settings (a
        // kept body would go out with the new format's content type).
        sqlx::query("UPDATE webhook_messages SET body = NULL WHERE endpoint_id = ? AND status <> 'delivered'")
            .bind(e.id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
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
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET enabled = ?, disabled_reason = ?,
               failing_since = CASE WHEN ? THEN NULL ELSE failing_since END, updated_at = ?
             WHERE tenant_id = ? AND id = ? RETURNING *",
        )
        .bind(enabled)
        .bind(if enabled { None } else { reason })
        .bind(enabled)
        .bind(ms(at))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
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
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed,
               previous_expires_at = ?, secret_sealed = ?, secret_version = secret_version + 1,
               updated_at = ?
             WHERE tenant_id = ? AND id = ? RETURNING *",
        )
        .bind(ms(previous_expires_at))
        .bind(sealed)
        .bind(ms(at))
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
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = ? AND id = ?")
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
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_type, webhook_id,
               payload, status, next_attempt_at, occurred_at, created_at, updated_at)
             SELECT ?, tenant_id, id, ?, ?, ?, 'pending', ?, ?, ?, ?
             FROM webhook_endpoints WHERE tenant_id = ? AND id = ? RETURNING *",
        )
        .bind(m.id)
        .bind(&m.event_type)
        .bind(webhook_id(m.id))
        .bind(m.payload.to_string())
        .bind(ms(m.at))
        .bind(ms(m.at))
        .bind(ms(at))
        .bind(ms(at))
        .bind(m.tenant_id)
        .bind(m.endpoint_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        message_row(&row)
    }

    pub(crate) async fn wh_get_message(
        &self,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<Option<WebhookMessage>> {
        sqlx::query("SELECT * FROM webhook_messages WHERE tenant_id = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.reader())
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
            "SELECT * FROM webhook_messages WHERE tenant_id = ? AND endpoint_id = ?
             AND (? IS NULL OR id > ?) ORDER BY id LIMIT ?",
        )
        .bind(tenant)
        .bind(endpoint)
        .bind(page.after)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.reader())
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
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT a.* FROM webhook_attempts a JOIN webhook_messages m ON m.id = a.message_id
             WHERE m.tenant_id = ",
        );
        q.push_bind(tenant).push(" AND a.message_id IN (");
        let mut sep = q.separated(", ");
        for m in messages {
            sep.push_bind(*m);
        }
        q.push(") ORDER BY a.message_id, a.attempt");
        q.build()
            .fetch_all(self.reader())
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
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM webhook_messages WHERE tenant_id = ? AND id = ?",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        match status.as_deref() {
            None => return Err(StoreError::NotFound),
            Some("dead") => {}
            Some(_) => return Err(StoreError::Conflict("undelivered dead letter".into())),
        }
        let row = sqlx::query(
            "UPDATE webhook_messages SET status = 'pending', attempts = 0, next_attempt_at = ?,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
             WHERE id = ? RETURNING *",
        )
        .bind(ms(at))
        .bind(ms(at))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        message_row(&row)
    }

    pub(crate) async fn wh_dispatch(&self, limit: u32) -> Result<u32> {
        // Checked on a reader first: the worker is woken after every trap commit, and
        // most have no event; the single writer stays free for the trap.
        let pending: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM events WHERE dispatched_at IS NULL LIMIT 1")
                .fetch_optional(self.reader())
                .await
                .map_err(backend)?;
        if pending.is_none() {
            return Ok(0);
        }
        let at = now();
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let rows =
            sqlx::query("SELECT * FROM events WHERE dispatched_at IS NULL ORDER BY id LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            events.push(Event {
                id: r.try_get("id").map_err(backend)?,
                tenant_id: r.try_get("tenant_id").map_err(backend)?,
                event_type: r.try_get("event_type").map_err(backend)?,
                incident_id: r.try_get("incident_id").map_err(backend)?,
                hit_id: r.try_get("hit_id").map_err(backend)?,
                payload: json_list(r.try_get("payload").map_err(backend)?)?,
                created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
            });
        }
        let endpoints: Vec<WebhookEndpoint> =
            sqlx::query("SELECT * FROM webhook_endpoints WHERE enabled = 1")
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?
                .iter()
                .map(endpoint_row)
                .collect::<Result<_>>()?;
        for ev in &events {
            for ep in endpoints.iter().filter(|ep| ep.matches(ev)) {
                let id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id, event_type,
                       webhook_id, incident_id, hit_id, payload, status, next_attempt_at,
                       occurred_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(ev.tenant_id)
                .bind(ep.id)
                .bind(ev.id)
                .bind(&ev.event_type)
                .bind(webhook_id(id))
                .bind(ev.incident_id)
                .bind(ev.hit_id)
                .bind(ev.payload.to_string())
                .bind(ms(at))
                .bind(ms(ev.created_at))
                .bind(ms(at))
                .bind(ms(at))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            sqlx::query("UPDATE events SET dispatched_at = ? WHERE id = ?")
                .bind(ms(at))
                .bind(ev.id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(events.len() as u32)
    }

    pub(crate) async fn wh_claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedMessage>> {
        let now_ms = ms(req.now);
        // As in fan-out: nothing due (the common case) costs a read, not the writer.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM webhook_messages WHERE status = 'pending' AND next_attempt_at <= ? LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(self.reader())
        .await
        .map_err(backend)?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let until = ms(req.now + lease_duration(req.lease));
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE webhook_messages SET lease_owner = ");
        q.push_bind(&req.owner)
            .push(", lease_expires_at = ")
            .push_bind(until)
            .push(
                " WHERE id IN (SELECT id FROM (
                   SELECT m.id, row_number() OVER (PARTITION BY m.endpoint_id ORDER BY m.next_attempt_at, m.id) AS rn,
                          m.next_attempt_at AS due
                   FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id
                   WHERE m.status = 'pending' AND e.enabled = 1 AND m.next_attempt_at <= ",
            )
            .push_bind(now_ms)
            .push(" AND (m.lease_expires_at IS NULL OR m.lease_expires_at <= ")
            .push_bind(now_ms)
            .push(")");
        if !req.exclude_endpoints.is_empty() {
            q.push(" AND m.endpoint_id NOT IN (");
            let mut sep = q.separated(", ");
            for e in &req.exclude_endpoints {
                sep.push_bind(*e);
            }
            q.push(")");
        }
        q.push(") WHERE rn <= ")
            .push_bind(i64::from(req.per_endpoint.max(1)))
            .push(" ORDER BY due LIMIT ")
            .push_bind(i64::from(req.limit))
            .push(") RETURNING *");
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let messages: Vec<WebhookMessage> = q
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
            .iter()
            .map(message_row)
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(messages.len());
        let mut cache: std::collections::HashMap<Uuid, WebhookEndpoint> = Default::default();
        for m in messages {
            let ep = match cache.entry(m.endpoint_id) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE id = ?")
                        .bind(m.endpoint_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(backend)?;
                    v.insert(endpoint_row(&row)?)
                }
            };
            out.push(ClaimedMessage {
                endpoint: ep.clone(),
                message: m,
            });
        }
        tx.commit().await.map_err(backend)?;
        out.sort_by_key(|c| c.message.next_attempt_at);
        Ok(out)
    }

    pub(crate) async fn wh_complete(&self, results: &[AttemptResult]) -> Result<Vec<bool>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.writer().begin().await.map_err(backend)?;
        let mut out = Vec::with_capacity(results.len());
        let mut clocks = EndpointClocks::default();
        for r in results {
            let endpoint = complete_one(&mut tx, r).await?;
            if let Some(ep) = endpoint {
                clocks.apply(ep, r);
            }
            out.push(endpoint.is_some());
        }
        // One update per endpoint, folded in batch order (the same result as one per
        // attempt).
        for (ep, c) in clocks.iter() {
            sqlx::query(
                "UPDATE webhook_endpoints SET
                   failing_since = CASE WHEN ? THEN ? ELSE COALESCE(failing_since, ?) END,
                   enabled = CASE WHEN ? IS NULL THEN enabled ELSE 0 END,
                   disabled_reason = COALESCE(?, disabled_reason)
                 WHERE id = ?",
            )
            .bind(c.reset)
            .bind(c.fail_at.map(ms))
            .bind(c.fail_at.map(ms))
            .bind(&c.disable)
            .bind(&c.disable)
            .bind(ep)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    pub(crate) async fn wh_release(&self, owner: &str, ids: &[Uuid]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let at = ms(now());
        let mut n = 0;
        let mut tx = self.writer().begin().await.map_err(backend)?;
        for chunk in ids.chunks(500) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE webhook_messages SET lease_owner = NULL, lease_expires_at = NULL, updated_at = ",
            );
            q.push_bind(at)
                .push(" WHERE lease_owner = ")
                .push_bind(owner)
                .push(" AND status = 'pending' AND id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            q.push(")");
            n += q
                .build()
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }

    pub(crate) async fn wh_get_hit(&self, tenant: Uuid, id: Uuid) -> Result<Option<Hit>> {
        sqlx::query("SELECT * FROM hits WHERE tenant_id = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.reader())
            .await
            .map_err(backend)?
            .as_ref()
            .map(crate::trap::hit_row)
            .transpose()
    }
}

/// One attempt of a group commit: the message update (only with the lease) and the
/// attempt row. Returns the message's endpoint if it was stored.
async fn complete_one(c: &mut sqlx::SqliteConnection, r: &AttemptResult) -> Result<Option<Uuid>> {
    let at = now();
    let (status, next_at) = match r.next {
        MessageNext::Delivered => ("delivered", at),
        MessageNext::RetryAt(t) => ("pending", t),
        MessageNext::Dead => ("dead", at),
    };
    let updated = sqlx::query(
        "UPDATE webhook_messages SET status = ?, attempts = ?, next_attempt_at = ?,
           body = COALESCE(body, ?), lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
         WHERE id = ? AND lease_owner = ? AND status = 'pending' RETURNING endpoint_id",
    )
    .bind(status)
    .bind(r.attempt.attempt)
    .bind(ms(next_at))
    .bind(&r.body)
    .bind(ms(at))
    .bind(r.message_id)
    .bind(&r.lease_owner)
    .fetch_optional(&mut *c)
    .await
    .map_err(backend)?;
    let Some(row) = updated else {
        return Ok(None);
    };
    let endpoint: Uuid = row.try_get("endpoint_id").map_err(backend)?;
    let a = &r.attempt;
    sqlx::query(
        "INSERT INTO webhook_attempts (id, message_id, attempt, outcome, status_code, duration_ms,
           response_excerpt, response_truncated, error, error_kind, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.id)
    .bind(r.message_id)
    .bind(a.attempt)
    .bind(&a.outcome)
    .bind(a.status_code)
    .bind(a.duration_ms)
    .bind(&a.response_excerpt)
    .bind(a.response_truncated)
    .bind(&a.error)
    .bind(&a.error_kind)
    .bind(ms(a.at))
    .execute(&mut *c)
    .await
    .map_err(backend)?;
    Ok(Some(endpoint))
}
